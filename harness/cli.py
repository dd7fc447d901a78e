"""`python -m harness ...`: data, methods, run, sweep, score, report.

Exit 0 on success, 2 on bad input (one clear line on stderr, nothing written), 1 when a run
failed during training (recorded as 'failed' in the store).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness import quiet_import_warnings
from harness.cli_run import DEFAULT_STORE, cmd_run
from harness.errors import BadInput, environment_fault
from harness.progress import quiet_log


def _jobs(text: str) -> str | int:
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"'{text}': give a positive number of jobs or 'auto'")
    return n


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{s}' is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def _finite_float(s: str, zero_ok: bool = False) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{s}' is not a number") from None
    if not ((v >= 0 if zero_ok else v > 0) and v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be {'zero or ' if zero_ok else ''}a positive number, got {s}")
    return v


def _positive_float(s: str) -> float:
    return _finite_float(s)


def _nonneg_float(s: str) -> float:
    return _finite_float(s, zero_ok=True)


def _names(s: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in s.split(",") if x.strip())
    if not names:
        raise argparse.ArgumentTypeError("give comma-separated column names")
    return names


def _seeds(s: str) -> list[int]:
    try:
        seeds = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers, got '{s}'") from None
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds is empty")
    if bad := [x for x in seeds if not 0 <= x < 2**32]:
        raise argparse.ArgumentTypeError(f"--seeds {bad[0]}: a seed must be in [0, 2**32)")
    if len(set(seeds)) < len(seeds):
        twice = next(x for x in seeds if seeds.count(x) > 1)
        raise argparse.ArgumentTypeError(f"--seeds gives seed {twice} twice")
    return seeds


STORE_HELP = f"results store (default {DEFAULT_STORE})"


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (exit 2) instead of a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m harness", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    data = sub.add_parser("data", help="generate, import or look at image sets").add_subparsers(
        dest="data_cmd", required=True, parser_class=_Parser)
    g = data.add_parser("generate", help="simulate an image set from a dataset card")
    g.add_argument("--card", required=True, help="a shipped card name (datasets/cards/) or a card .yaml")
    g.add_argument("--n", type=_positive_int, default=1000, help="number of images (default 1000)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=_positive_int, default=min(2, os.cpu_count() or 1))
    g.add_argument("--out", type=Path, help="output folder (default datasets/<card>-<seed>)")
    g.add_argument("--datasets-dir", type=Path, default=Path("datasets"))
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out holding a different set")
    g.add_argument("--quiet", action="store_true")

    i = data.add_parser("import", help="import a real data layout as an image set")
    # checked by the importers' format registry, which names the known formats (exit 2)
    i.add_argument("--format", required=True,
                   help="a registered format: bologna, deeplense-npy, hst-npy, cutouts-npy (unlabelled, for "
                        "score), or a new module's")
    i.add_argument("path", type=Path)
    i.add_argument("--name", required=True)
    i.add_argument("--datasets-dir", type=Path, default=Path("datasets"))
    i.add_argument("--seed", type=int, default=0, help="seed of the labelled/test division")
    i.add_argument("--pixel-scale", type=_positive_float, help="arcsec/pixel, for files without a header "
                   "(default: the format's nominal scale; cutouts-npy has none and needs it); tasks that "
                   "resample need it right")
    i.add_argument("--catalog-columns", type=_names, default=(), metavar="A,B",
                   help="catalog columns that are observables (model inputs); every other catalog column "
                        "is kept as truth_<name>, never a model input (default: none)")
    i.add_argument("--allow-column", action="append", default=[], metavar="COLUMN",
                   help="let a --catalog-columns column through the leak guard (AUROC > 0.99)")
    i.add_argument("--quiet", action="store_true")

    s = data.add_parser("show", help="draw a contact sheet of a set")
    s.add_argument("path", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--n", type=_positive_int, default=24)
    s.add_argument("--seed", type=int, default=0)

    sub.add_parser("methods", help="list the registered adaptation methods")

    def run_args(r: argparse.ArgumentParser) -> None:
        r.add_argument("--task", help="lens-finding | substructure | ssl-real: the task's default cards "
                                      "and sizes; data of another task are refused (default: the data's)")
        r.add_argument("--preset", default="demo", help="smoke | demo | full (default demo)")
        r.add_argument("--seeds", type=_seeds, default=[0], help="comma-separated training seeds (default 0)")
        r.add_argument("--device", default="auto", help="auto | cpu | cuda")
        r.add_argument("--precision", default="auto", help="auto | bf16 | fp32")
        r.add_argument("--store", type=Path, default=DEFAULT_STORE, help=STORE_HELP)
        r.add_argument("--datasets-dir", type=Path, default=Path("datasets"),
                       help="where generated sets are cached (default datasets)")
        r.add_argument("--easy",
                       help="source domain: card name/path or an image-set folder (default: preset's)")
        r.add_argument("--hard",
                       help="target domain: card name/path or an image-set folder (default: preset's)")
        r.add_argument("--backbone",
                       help="small | tiny | cnn4 | resnet18 | resnet50 | equivariant (default: preset's)")
        r.add_argument("--source-steps", type=_positive_int,
                       help="the source finder's training steps, which the oracle and ssl_joint's finder "
                            "share (default: the preset's, as the task sets it)")
        r.add_argument("--no-catalog", action="store_true", help="image branch only (no catalog features)")
        r.add_argument("--allow-column", action="append", default=[], metavar="COLUMN",
                       help="let a catalog column through the leak guard (single-feature AUROC > 0.99); "
                            "only for a genuine observable")
        r.add_argument("--suite", help="run every target card of a suite: a name in datasets/suites.yaml "
                                       "(e.g. shifts) or a comma list of cards and paths")
        r.add_argument("--hp", action="append", metavar="METHOD.KEY=VALUE",
                       help="override a method hyper-parameter")
        r.add_argument("--jobs", type=_jobs, default="1",
                       help="worker processes sharing the CPU cores: N or 'auto' (one per core on a CPU, "
                            "one on CUDA); default 1")
        r.add_argument("--deterministic", action="store_true",
                       help="deterministic kernels on CUDA (slower); CPU runs are bitwise repeatable anyway")
        r.add_argument("--quiet", action="store_true")

    r = sub.add_parser("run", help="run adaptation methods and record results")
    r.add_argument("--method", default="all",
                   help="a method name, a comma-separated list, or 'all' (default)")
    run_args(r)

    sw = sub.add_parser("sweep", help="run methods x seeds, skipping finished runs with --resume")
    sw.add_argument("--method", default="all",
                    help="a method name, a comma-separated list, or 'all' (default)")
    sw.add_argument("--backend", default="local", choices=["local", "ray"])
    sw.add_argument("--resume", action="store_true",
                    help="skip (method, seed) runs already finished in the store")
    sw.add_argument("--address", help="--backend ray: a cluster ('auto', 'ray://HOST:10001'); default: a "
                                      "local Ray instance")
    sw.add_argument("--cpus-per-job", type=_positive_float, default=1.0,
                    help="--backend ray: CPUs each run declares (default 1)")
    sw.add_argument("--gpus-per-job", type=_nonneg_float, default=None,
                    help="--backend ray: GPUs each run declares; fractions share one "
                         "(default 1 on CUDA, else 0)")
    sw.add_argument("--stage-dir", type=Path,
                    help="--backend ray: a folder every node reads, to ship the shared stages through "
                         "(default: Ray's object store)")
    run_args(sw)

    sc = sub.add_parser("score", help="apply a stored run's model to new cutouts")
    sc.add_argument("--run", required=True, help="run id (see the report's run list or the store)")
    sc.add_argument("--set", type=Path, help="an image-set folder (generated or imported)")
    sc.add_argument("--images", type=Path, help="a real-data folder in one of the `data import` layouts")
    sc.add_argument("--format", help="the layout of --images (as `data import --format`; unlabelled "
                                     "survey stamps: cutouts-npy)")
    sc.add_argument("--pixel-scale", type=_positive_float,
                    help="--images: arcsec/pixel for files without a header (cutouts-npy needs it)")
    sc.add_argument("--out", type=Path, required=True, help="scores file to write (.parquet)")
    sc.add_argument("--store", type=Path, default=DEFAULT_STORE, help=STORE_HELP)
    sc.add_argument("--chunk", type=_positive_int, default=4096, help="images read and prepared at a time")
    sc.add_argument("--device", default="auto", help="auto | cpu | cuda")
    sc.add_argument("--quiet", action="store_true")

    rp = sub.add_parser("report", help="write tables and plots from the store")
    rp.add_argument("--store", type=Path, default=DEFAULT_STORE, help=STORE_HELP)
    rp.add_argument("--out", type=Path, default=Path("reports/latest"),
                    help="report folder (default reports/latest); it replaces only an earlier report")
    rp.add_argument("--task", help="only this task's runs (default: all)")
    rp.add_argument("--preset", help="only this preset's runs (default: all)")
    return p


def _cmd_data(a: argparse.Namespace) -> int:
    if a.data_cmd == "generate":
        from harness.data.cards import load_card
        from harness.data.simulate import generate

        card = load_card(a.card)
        out = generate(card, n=a.n, seed=a.seed, workers=a.workers, out=a.out, progress=not a.quiet,
                       datasets_dir=a.datasets_dir, overwrite=a.overwrite)
        from harness.data import imageset

        s = imageset.load(out)
        lens = int((s.labels == 1).sum())
        print(f"wrote {out}: {len(s)} images {tuple(s.images.shape[1:])}, {lens} lenses; splits "
              + ", ".join(f"{k}={len(v)}" for k, v in sorted(s.splits.items())))
        return 0
    if a.data_cmd == "import":
        from harness.data.importers import import_dataset

        import_dataset(a.format, a.path, a.name, datasets_dir=a.datasets_dir, seed=a.seed,
                       progress=not a.quiet, pixel_scale=a.pixel_scale, log=quiet_log if a.quiet else print,
                       catalog_columns=a.catalog_columns, allow_columns=tuple(a.allow_column))
        return 0   # it says what it imported, where
    from harness.data.show import contact_sheet

    print(f"wrote {contact_sheet(a.path, a.out, n=a.n, seed=a.seed)}")
    return 0


def _cmd_methods() -> int:
    from harness.registry import all_methods

    rows = [(n, "yes" + (" (ORACLE)" if c.oracle else "") if c.uses_target_labels else "no", c.doc())
            for n, c in all_methods().items()]
    w = max(len(r[0]) for r in rows)
    print(f"{'method':<{w}}  {'target labels':<14}  description")
    for n, t, d in rows:
        print(f"{n:<{w}}  {t:<14}  {d}")
    return 0


def _cmd_score(a: argparse.Namespace) -> int:
    from harness.score import score
    from harness.training import Runtime, resolve_device, resolve_precision

    device = resolve_device(a.device)
    rt = Runtime(device, resolve_precision(device), a.quiet, quiet_log if a.quiet else print)
    score(a.store, a.run, a.out, rt, set_dir=a.set, images_dir=a.images, fmt=a.format, chunk=a.chunk,
          pixel_scale=a.pixel_scale)
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from harness.report import build_report

    build_report(a.store, a.out, task=a.task, preset=a.preset)   # it says where it wrote
    return 0


def main(argv: list[str] | None = None) -> int:
    quiet_import_warnings()
    a = build_parser().parse_args(argv)
    try:
        if a.cmd == "data":
            return _cmd_data(a)
        if a.cmd == "methods":
            return _cmd_methods()
        if a.cmd in ("run", "sweep"):
            from harness.training import keep_freed_memory

            keep_freed_memory()
            return cmd_run(a)
        if a.cmd == "score":
            return _cmd_score(a)
        return _cmd_report(a)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if (msg := environment_fault(e)) is None:
            raise
        print(f"error: {e.filename or 'a file'}: {msg}; nothing was recorded for this step", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
