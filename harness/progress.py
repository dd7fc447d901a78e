"""One progress bar of runs for a whole sweep: done / running / failed, across every target.

A sweep is targets (cards, image-only variants, backbones) x methods x seeds; each target runs on
its own backend call, so the bar is owned by the command and handed to each call. A backend given
no bar makes its own over its runs. The bar appears when the first run starts, so input refused
while the data are checked prints its one error line and no bar.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


class RunBar:
    """A tqdm bar over runs with done / running / failed counts in its postfix."""

    def __init__(self, total: int, desc: str = "runs", disable: bool = False) -> None:
        self.total, self.desc, self.disable = total, desc, disable
        self.bar: tqdm | None = None
        self.done, self.failed = 0, 0

    def _tqdm(self) -> tqdm:
        if self.bar is None:
            self.bar = tqdm(total=self.total, initial=self.done, desc=self.desc, unit="run",
                            disable=self.disable, dynamic_ncols=True)
        return self.bar

    def finished(self, failed: bool = False, running: int = 0) -> None:
        """One more run is over (finished, skipped as done, or failed); `running` are still going."""
        bar = self._tqdm()
        self.done += 1
        self.failed += bool(failed)
        bar.update()
        bar.set_postfix(done=self.done, running=running, failed=self.failed)

    def running(self, n: int) -> None:
        """Show `n` runs as under way."""
        self._tqdm().set_postfix(done=self.done, running=n, failed=self.failed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def quiet_log(line: str) -> None:
    """The log of a `--quiet` command: progress and stage lines are dropped, warnings still reach stderr
    (a quiet import that dropped images, or a quiet score, must still say so)."""
    if line.startswith("warning:"):
        print(line, file=sys.stderr)
