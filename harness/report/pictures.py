"""Figures of what a model sees: a 2-D view of its embeddings, and its most and least lens-like test images
(drawn by the shared `harness.render` contact sheet)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.decomposition import PCA

from harness import render
from harness.render import Tile
from harness.report.style import CLASS_MARKERS, DOMAIN_COLOURS, DOMAIN_NAMES, style

MAX_POINTS = 2000


def _class_names(labels: np.ndarray) -> dict[int, str]:
    ks = sorted(int(k) for k in np.unique(labels))
    if set(ks) <= {0, 1}:
        return {0: "non-lens", 1: "lens"}
    return {k: f"class {k}" for k in ks}


def _subsample(n: int, domain: np.ndarray, seed: int = 0) -> np.ndarray:
    """At most MAX_POINTS indices, the same share from each domain, reproducibly."""
    if n <= MAX_POINTS:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(domain == d), size=max(1, int(MAX_POINTS * np.mean(domain == d))),
                       replace=False) for d in np.unique(domain)]
    return np.sort(np.concatenate(keep))


def embedding(panels: list[tuple[str, dict[str, np.ndarray]]]) -> Figure:
    """PCA of each model's features side by side, coloured by domain and marked by class.

    PCA rather than t-SNE: it is deterministic and its distances mean something, so a shrinking
    gap between the two domain clouds is visible evidence of alignment.
    """
    with style():
        fig = Figure(figsize=(5.4 * len(panels), 5.4))
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        names: dict[int, str] = {}
        for ax, (title, z) in zip(axes, panels):
            feats = np.asarray(z["features"], dtype=np.float64).reshape(len(z["features"]), -1)
            dom, lab = np.asarray(z["domain"]).astype(int), np.asarray(z["label"]).astype(int)
            idx = _subsample(len(feats), dom)
            feats, dom, lab = feats[idx], dom[idx], lab[idx]
            pca = PCA(n_components=2, random_state=0)
            xy = pca.fit_transform(feats)
            names.update(_class_names(lab))
            for k in sorted(np.unique(lab)):
                for d in sorted(np.unique(dom)):
                    s = (lab == k) & (dom == d)
                    ax.scatter(xy[s, 0], xy[s, 1], s=14, alpha=0.55, lw=0.3, edgecolor="white",
                               c=[DOMAIN_COLOURS.get(d, "0.4")],
                               marker=CLASS_MARKERS[int(k) % len(CLASS_MARKERS)])
            ev = pca.explained_variance_ratio_ * 100
            ax.set(xlabel=f"PC1 ({ev[0]:.0f}% of variance)", ylabel=f"PC2 ({ev[1]:.0f}% of variance)")
            ax.set_title(f"{title}  ({len(idx)} points)", loc="left")
        handles = [Line2D([], [], ls="", marker="o", color=c, label=DOMAIN_NAMES.get(d, f"domain {d}"))
                   for d, c in DOMAIN_COLOURS.items()]
        handles += [Line2D([], [], ls="", marker=CLASS_MARKERS[k % len(CLASS_MARKERS)], color="0.35", label=n)
                    for k, n in sorted(names.items())]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
                   bbox_to_anchor=(0.5, -0.04))
    return fig


def contact_sheet(z: dict[str, np.ndarray], title: str, per_row: int = 8) -> Figure:
    """The hard-test images a model ranks highest and lowest; red titles are its mistakes."""
    images, score, lab = z["images"], np.asarray(z["score"], dtype=float), np.asarray(z["label"]).astype(int)
    n = len(images)
    if "rank" in z and len(z["rank"]) == n:
        top = np.array([str(r) in ("top", "1", "True") for r in z["rank"]])
    else:
        top = np.arange(n) < n // 2
    names = _class_names(lab)
    binary = set(names) <= {0, 1}

    def tiles(idx: np.ndarray, is_top: bool) -> list[Tile]:
        wrong = (lab[idx] != 1) if is_top else (lab[idx] == 1)
        return [Tile(images[i], f"{score[i]:.2f} · {names.get(lab[i], lab[i])}",
                     "#c0392b" if w and binary else "0.15") for i, w in zip(idx, wrong)]

    sections = [("highest-ranked (most lens-like)", tiles(np.flatnonzero(top), True)),
                ("lowest-ranked (least lens-like)", tiles(np.flatnonzero(~top), False))]
    with style():
        return render.contact_sheet(sections, f"{title}: score · true label (red = ranked wrongly)",
                                    per_row=per_row)
