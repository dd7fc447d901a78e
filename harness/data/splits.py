"""Split index files: easy train/val, hard pool/labelled/test (stratified, disjoint)."""

from __future__ import annotations

import numpy as np

from harness.errors import BadInput


def _stratified_take(idx: np.ndarray, labels: np.ndarray, frac: float,
                     rng: np.random.Generator) -> np.ndarray:
    """A stratified random subset of `idx` holding `frac` of it (per class, rounded)."""
    take = []
    for c in np.unique(labels[idx]):
        members = idx[labels[idx] == c]
        k = round(frac * members.size)
        take.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(take)) if take else np.array([], dtype=np.int64)


def train_val(labels: np.ndarray, val_frac: float, seed: int) -> dict[str, np.ndarray]:
    """Source-domain splits: stratified `val` of `val_frac`, the rest `train`."""
    rng = np.random.default_rng(seed)
    n = labels.size
    val = _stratified_take(np.arange(n), labels, val_frac, rng)
    train = np.setdiff1d(np.arange(n), val)
    return {"train": train.astype(np.int64), "val": val.astype(np.int64)}


def hard_splits(labels: np.ndarray, labelled_frac: float, test_frac: float,
                seed: int) -> dict[str, np.ndarray]:
    """Target-domain splits: `labelled` (e.g. 20% of all), `test` (held out), rest `pool`.

    Both labelled and test are stratified on the true labels so their class balance matches
    the domain; the pool is everything else and is handed to methods without labels.
    """
    if not (0 < labelled_frac < 1 and 0 < test_frac < 1 and labelled_frac + test_frac < 1):
        raise BadInput(f"split fractions labelled={labelled_frac}, test={test_frac} "
                       "must be in (0,1), sum < 1")
    rng = np.random.default_rng(seed)
    n = labels.size
    allidx = np.arange(n)
    labelled = _stratified_take(allidx, labels, labelled_frac, rng)
    rest = np.setdiff1d(allidx, labelled)
    test = _stratified_take(rest, labels, test_frac / (1 - labelled_frac), rng)
    pool = np.setdiff1d(rest, test)
    return {"pool": pool.astype(np.int64), "labelled": labelled.astype(np.int64),
            "test": test.astype(np.int64)}


LABELLED_SHARE = 0.2   # the protocol's labelled share of a fully labelled target (DeepLense Test II's 20%)


def target_splits(labels: np.ndarray, labelled_frac: float, test: np.ndarray | None, test_frac: float,
                  seed: int) -> dict[str, np.ndarray]:
    """Target splits of a fully labelled real set: its own `test` (e.g. a test/ folder) when given, else
    a stratified `test_frac`; then a stratified `labelled` share of all images from the rest; `pool` is
    what remains (handed to methods without labels)."""
    if test is None:
        return hard_splits(labels, labelled_frac, test_frac, seed)
    rng = np.random.default_rng(seed)
    rest = np.setdiff1d(np.arange(labels.size), test)
    labelled = _stratified_take(rest, labels, min(0.99, labelled_frac * labels.size / max(rest.size, 1)), rng)
    return {"pool": np.setdiff1d(rest, labelled).astype(np.int64), "labelled": labelled.astype(np.int64),
            "test": np.asarray(test, dtype=np.int64)}


def require_nonempty(splits: dict[str, np.ndarray], labels: np.ndarray, where: object
                     ) -> dict[str, np.ndarray]:
    """Refuse a real set too small to split honestly: every split it needs must hold an image."""
    empty = [k for k in ("train", "val", "labelled", "test") if k in splits and len(splits[k]) == 0]
    if empty:
        counts = ", ".join(f"class {c}: {int((labels == c).sum())}" for c in np.unique(labels[labels >= 0]))
        raise BadInput(f"{where}: too few labelled images per class to split ({counts}); the {empty[0]} "
                       "split would be empty")
    return splits


def labelled_test_from_known(labels: np.ndarray, test_share: float, seed: int) -> dict[str, np.ndarray]:
    """Real data: labelled rows are divided stratified into `labelled`/`test`; unlabelled are `pool`."""
    known = np.flatnonzero(labels >= 0)
    if known.size == 0:
        raise BadInput("no labelled rows: cannot form the labelled and test splits")
    rng = np.random.default_rng(seed)
    test = _stratified_take(known, labels, test_share, rng)
    labelled = np.setdiff1d(known, test)
    pool = np.flatnonzero(labels < 0)
    return {"pool": pool.astype(np.int64), "labelled": labelled.astype(np.int64),
            "test": test.astype(np.int64)}
