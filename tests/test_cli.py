"""The command line as a process: exit code 2 and one line from `python -m harness` itself (the
catalogue of bad inputs runs in-process in `test_bad_inputs.py`; two cases here prove the process
boundary), malformed cards, and the method list."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.parametrize("args,needle", [
    (["run", "--method", "nope", "--preset", "smoke"], "unknown method 'nope'"),      # raised in the harness
    (["run", "--method", "dann", "--preset", "smoke", "--jobs", "0"], "positive number of jobs"),  # argparse
])
def test_bad_input_exit_2_one_line_nothing_written(tmp_path: Path, args: list[str], needle: str) -> None:
    r = _run(args, tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert needle in r.stderr
    assert len(lines) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_malformed_card_and_unwritable_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    card = tmp_path / "bad.yaml"
    card.write_text("instrument: [unclosed\n")
    assert main(["data", "generate", "--card", str(card), "--n", "4"]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["data", "generate", "--card", "easy", "--n", "4", "--out", str(blocker / "sub"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "file"]


def test_methods_lists_every_method_with_label_use(capsys: pytest.CaptureFixture) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("source_only", "target_labelled", "oracle"):
        assert name in out
    assert "ORACLE" in out


def test_quiet_keeps_warnings_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`--quiet` drops progress and stage lines, not warnings: a quiet import that dropped files says so."""
    from tests.data.fixtures_real import make_hst

    src = make_hst(tmp_path / "hst")
    assert main(["data", "import", "--format", "hst-npy", str(src), "--name", "h", "--quiet",
                 "--datasets-dir", str(tmp_path / "ds")]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("warning: ") and "imported" not in err
    assert main(["data", "import", "--format", "hst-npy", str(src), "--name", "h2",
                 "--datasets-dir", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert out.count("imported hst-npy") == 1 and "warning: " in out   # said once, not twice
