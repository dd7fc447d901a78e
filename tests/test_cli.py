"""Bad input everywhere gets exit code 2, one clear line, and nothing written."""

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
    (["run", "--method", "nope", "--preset", "smoke"], "unknown method 'nope'"),
    (["run", "--method", "source_only", "--preset", "huge"], "unknown preset 'huge'"),
    (["run", "--method", "source_only", "--store", "no/such/dir/s.db"], "does not exist"),
    (["run", "--method", "source_only", "--device", "tpu"], "--device tpu"),
    (["run", "--method", "source_only", "--backbone", "vit"], "--backbone vit: choose from"),
    (["data", "generate", "--card", "medium", "--n", "10"], "unknown card 'medium'"),
    (["data", "generate", "--card", "easy", "--n", "0"], "must be > 0"),
    (["data", "show", "no_such_dir", "--out", "x.png"], "no_such_dir"),
    (["report", "--store", "no_such.db"], "no such results store"),
    (["run", "--method", "dann", "--preset", "smoke", "--hp", "dann.nope=1"], "unknown hyper-parameter"),
    (["run", "--method", "dann", "--preset", "smoke", "--hp", "mcc.lr=1"], "not part of this run"),
    (["run", "--method", "dann", "--preset", "smoke", "--seeds", "a,b"], "--seeds takes"),
    (["run", "--method", "dann", "--preset", "smoke", "--hp", "dann.lr=abc"], "expected a finite float"),
    (["run", "--method", "dann", "--preset", "smoke", "--hp", "dann.lr=nan"], "expected a finite float"),
    (["run", "--method", "dann", "--preset", "smoke", "--jobs", "0"], "positive number of jobs"),
    (["run", "--method", "dann", "--preset", "smoke", "--jobs", "many"], "positive number of jobs"),
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
