"""`run --suite`: every card of a suite runs, the easy-only stages are trained once, and the report
has the method x card heatmap, one verdict line per card and one section per card."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import BadInput
from harness.store import Store


def test_suite_runs_each_card_shares_source_stages_and_reports(smoke_root: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    shutil.copytree(smoke_root / "ds", tmp_path / "ds")
    db = tmp_path / "s.db"
    args = ["run", "--method", "source_only,source_finetune", "--suite", "hard,hard-clean",
            "--preset", "smoke", "--store", str(db), "--datasets-dir", str(tmp_path / "ds"),
            "--device", "cpu"]
    assert main(args) == 0
    log = capsys.readouterr().out
    assert log.count("ssl: trained encoder") == 1          # shared by both target cards
    assert log.count("source: trained lens finder") == 1
    runs = Store(db).runs()
    assert len(runs) == 4 and set(runs.status) == {"ok"}
    cards = {Path(__import__("json").loads(c)["data"]["hard"]).stem for c in runs.config}
    assert cards == {"hard", "hard-clean"}
    assert main(["report", "--store", str(db), "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "Shift suite · lens-finding · smoke" in page and "lens-finding-smoke-suite.png" in page
    assert (tmp_path / "rep" / "lens-finding-smoke-suite.png").stat().st_size > 1000
    for card in ("hard", "hard-clean"):
        assert f"<h2>lens-finding · smoke · {card}</h2>" in page
        assert f"<li>{card}: 0 of 0" in page or f"<li>{card}: no unsupervised method" in page


def test_suite_and_hard_together_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["run", "--method", "source_only", "--suite", "shifts", "--hard", "hard", "--preset", "smoke",
               "--store", str(tmp_path / "s.db"), "--datasets-dir", str(tmp_path / "ds")])
    assert rc == 2 and "give --suite or --hard, not both" in capsys.readouterr().err
    assert not (tmp_path / "s.db").exists()


def test_sweep_axes_cross_cards_image_only_variants_and_backbones(tmp_path: Path) -> None:
    """`--suite` x `--backbone A,B`: every card (and image-only variant) once per backbone."""
    from harness.cli import build_parser
    from harness.cli_run import _options, _targets

    a = build_parser().parse_args(["sweep", "--suite", "hard,hard-clean", "--backbone", "tiny,small",
                                   "--preset", "smoke", "--store", str(tmp_path / "s.db"), "--no-catalog"])
    targets = _targets(a, _options(a))
    got = sorted((t.preset.data.hard, t.preset.source.backbone, t.preset.source.use_catalog)
                 for _, t in targets)
    assert got == sorted((c, b, False) for c in ("hard", "hard-clean") for b in ("tiny", "small"))
    assert all("backbone" in label for label, _ in targets)
    a.backbone = "tiny,nope"
    with pytest.raises(BadInput, match="--backbone nope: choose from"):
        _targets(a, _options(a))
