"""One progress bar of runs for a whole sweep: done / running / failed, across every target.

A sweep is targets (cards, image-only variants, backbones) x methods x seeds; each target runs on
its own backend call, so the bar is owned by the command and handed to each call. A backend given
no bar makes its own over its runs.
"""

from __future__ import annotations

from tqdm.auto import tqdm


class RunBar:
    """A tqdm bar over runs with done / running / failed counts in its postfix."""

    def __init__(self, total: int, desc: str = "runs", disable: bool = False) -> None:
        self.bar = tqdm(total=total, desc=desc, unit="run", disable=disable, dynamic_ncols=True)
        self.done, self.failed = 0, 0

    def finished(self, failed: bool = False, running: int = 0) -> None:
        """One more run is over (finished, skipped as done, or failed); `running` are still going."""
        self.done += 1
        self.failed += bool(failed)
        self.bar.update()
        self.bar.set_postfix(done=self.done, running=running, failed=self.failed)

    def running(self, n: int) -> None:
        """Show `n` runs as under way (before the first of them finishes)."""
        self.bar.set_postfix(done=self.done, running=n, failed=self.failed)

    def close(self) -> None:
        self.bar.close()
