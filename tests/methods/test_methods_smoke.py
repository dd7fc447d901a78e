"""Every registered method runs through the real pipeline on the smoke preset; plug-ins work.

Parametrised over `registry.all_methods()`: a new file in `methods/` is run here with no edit.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import smoke_args

from harness import api, registry
from harness.cli import main
from harness.store import Store


@pytest.mark.parametrize("method", list(registry.all_methods()))
def test_method_runs_on_smoke_preset(smoke_root: Path, method: str) -> None:
    assert main(["run", "--method", method, *smoke_args(smoke_root, "--quiet")]) == 0
    runs = Store(smoke_root / "s.db").runs()
    row = runs[runs.method == method].iloc[-1]
    assert row.status == "ok"
    cls = registry.get_method(method)
    assert bool(row.uses_target_labels) == cls.uses_target_labels and row.start == cls.start


PLUGIN = '''
import torch.nn.functional as F
from harness.api import SGD_RECIPE, AdaptationMethod, AdaptContext, Batch


class Probe(AdaptationMethod):
    """Plug-in probe: source CE; records whether target batches ever carried labels."""

    name = "plugin_probe"
    hparams = {**SGD_RECIPE, "lr": 1e-4}
    seen_target_labels = []

    def setup(self, ctx: AdaptContext) -> None:
        super().setup(ctx)
        assert ctx.labelled is None

    def update(self, src: Batch, tgt: Batch, step: int) -> dict[str, float]:
        Probe.seen_target_labels.append(tgt.labels is not None)
        loss = F.cross_entropy(self.model(src.images, src.catalog), src.labels)
        self.step(loss)
        return {"loss": loss.item()}
'''


def test_entry_point_method_registers_and_runs(smoke_root: Path, tmp_path: Path, monkeypatch) -> None:
    """A third-party method found through the `harness.methods` entry-point group, no harness edit."""
    (tmp_path / "probe_pkg.py").write_text(textwrap.dedent(PLUGIN))
    dist = tmp_path / "probe_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: probe-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[harness.methods]\nplugin_probe = probe_pkg:Probe\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_discovered", False)
    try:
        assert "plugin_probe" in registry.all_methods()
        assert main(["run", "--method", "plugin_probe", *smoke_args(smoke_root, "--quiet")]) == 0
        probe = sys.modules["probe_pkg"].Probe
        assert probe.seen_target_labels and not any(probe.seen_target_labels)
    finally:
        api.REGISTERED.pop("plugin_probe", None)
        sys.modules.pop("probe_pkg", None)


COPIED = ("from methods.dann import DANN as _D\nfrom harness.api import register\n\n\n@register\n"
          "class DANN(_D):\n    pass\n")


@pytest.mark.parametrize("text, needle", [
    ("def broken(:\n", r"methods/zz_broken\.py, line 1 cannot be imported \(SyntaxError: "),
    ("raise RuntimeError('no GPU')\n", r"zz_broken\.py cannot be imported \(RuntimeError: no GPU\)"),
    # a copied method file keeps its class name but is another module: the name is taken
    (COPIED, r"method name 'dann' registered twice \(methods\.dann, methods\.zz_broken\)"),
])
def test_a_broken_method_file_is_one_line_of_bad_input(tmp_path: Path, monkeypatch, capsys, text: str,
                                                       needle: str) -> None:
    """A method file that cannot be imported, or that takes a name already taken, stops every command with
    one line naming the file (exit 2), not a traceback or a silent takeover of the name."""
    import methods

    registry.discover()
    (tmp_path / "zz_broken.py").write_text(text)
    monkeypatch.setattr(methods, "__path__", [str(tmp_path)])   # only the bad file is discovered anew
    monkeypatch.setattr(registry, "_discovered", False)
    try:
        assert main(["methods"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and re.search(needle, err), err
    finally:
        sys.modules.pop("methods.zz_broken", None)


def test_a_methods_package_that_is_not_the_harnesss_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    """A methods/ folder in the working directory shadows the harness's package: refused in one line
    (it used to list no methods and fail later with an unrelated error)."""
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "__init__.py").write_text("")
    saved = {k: v for k, v in sys.modules.items() if k == "methods" or k.startswith("methods.")}
    for k in saved:
        monkeypatch.delitem(sys.modules, k)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_discovered", False)
    try:
        assert main(["methods"]) == 2
        assert "is not the harness's: another methods/ folder shadows it" in capsys.readouterr().err
    finally:
        sys.modules.pop("methods", None)
        sys.modules.update(saved)
