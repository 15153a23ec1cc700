"""The report's pictures: feature histograms, note lengths, pitch-class transitions and the
mood confusion matrix, drawn with matplotlib (no pyplot, so no global state) and written
atomically as PNGs.

Example: ``plot_confusion(result["mood_control"], Path("eval/mood_confusion.png"))``
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import write_bytes
from ..music.harmony import PITCH_NAMES
from .metrics import FEATURES, NOTE_LENGTH_NAMES, NOTE_LENGTHS, SCALAR_FEATURES
from .stats import finite_values

__all__ = ["plot_confusion", "plot_note_lengths", "plot_scalar_features", "plot_transitions"]


def _figure(width: float, height: float, layout: str | None = "constrained") -> Any:
    # heavy: matplotlib is loaded on first use; no pyplot, so no global state
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_bytes(path, buf.getvalue())
    return path.name


def plot_scalar_features(real: Sequence[Mapping[str, Any]], gen: Sequence[Mapping[str, Any]],
                         comparison: Mapping[str, Any], path: Path) -> str:
    """Histograms of each scalar feature, real against generated, with the value OA; writes
    ``path`` and returns its name. Example: ``plot_scalar_features(real, gen, cmp, out / "features.png")``."""
    fig = _figure(16, 7.5, layout=None)  # a fixed grid: constrained layout costs seconds here
    axes = fig.subplots(2, 4, gridspec_kw={"left": 0.04, "right": 0.99, "bottom": 0.08,
                                           "top": 0.9, "wspace": 0.25, "hspace": 0.4})
    for ax, name in zip(axes.ravel(), SCALAR_FEATURES):
        r = finite_values([f[name] for f in real])
        g = finite_values([f[name] for f in gen])
        both = np.concatenate([r, g])
        if both.size == 0:
            ax.set_title(f"{FEATURES[name][1]}: no values")
            continue
        lo, hi = float(both.min()), float(both.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 21)
        ax.hist(r, bins=bins, density=True, alpha=0.5, color="tab:blue", label=f"real (n={r.size})")
        ax.hist(g, bins=bins, density=True, alpha=0.5, color="tab:orange",
                label=f"generated (n={g.size})")
        c = comparison.get(name, {})
        oa = c.get("value_overlap")
        ax.set_title(f"{FEATURES[name][1]}" + (f"  (value OA {oa:.2f})" if oa is not None else ""),
                     fontsize=10)
        ax.set_xlabel(FEATURES[name][2], fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("Per-piece features: held-out real excerpts vs unconditional generations")
    return _save_png(fig, path)


def plot_note_lengths(comparison: Mapping[str, Any], path: Path) -> str:
    """Bars of the mean note-length histogram, real against generated; writes ``path``, returns
    its name. Example: ``plot_note_lengths(cmp, out / "note_lengths.png")``."""
    c = comparison["note_length_histogram"]
    fig = _figure(10, 4)
    ax = fig.add_subplot()
    x = np.arange(len(NOTE_LENGTHS))
    for off, key, colour, label in ((-0.2, "real_mean", "tab:blue", "real"),
                                    (0.2, "generated_mean", "tab:orange", "generated")):
        if c.get(key) is not None:
            ax.bar(x + off, c[key], width=0.4, color=colour, label=label)
    ax.set_xticks(x, NOTE_LENGTH_NAMES)
    ax.set_xlabel("nearest standard length (t = triplet, . = dotted)")
    ax.set_ylabel("mean share of notes")
    ax.set_title("Note-length histogram, mean over pieces")
    ax.legend()
    return _save_png(fig, path)


def plot_transitions(comparison: Mapping[str, Any], path: Path) -> str:
    """The mean pitch-class transition matrices, real beside generated; writes ``path``, returns
    its name. Example: ``plot_transitions(cmp, out / "pc_transitions.png")``."""
    c = comparison["pitch_class_transition_matrix"]
    fig = _figure(12, 5.5)
    axes = fig.subplots(1, 2)
    mats = [np.asarray(c[k]).reshape(12, 12) if c.get(k) is not None else np.zeros((12, 12))
            for k in ("real_mean", "generated_mean")]
    vmax = max(float(m.max()) for m in mats) or 1.0
    for ax, m, title in zip(axes, mats, ("real", "generated")):
        im = ax.imshow(m, cmap="viridis", vmin=0, vmax=vmax)
        ax.set_xticks(range(12), PITCH_NAMES, fontsize=8)
        ax.set_yticks(range(12), PITCH_NAMES, fontsize=8)
        ax.set_xlabel("to")
        ax.set_ylabel("from")
        ax.set_title(f"pitch-class transitions, {title} (mean)")
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="share of moves")
    return _save_png(fig, path)


def plot_confusion(mood: Mapping[str, Any], path: Path) -> str:
    """The mood confusion matrix (counts and row shares) of :func:`melodia.evaluate.checks.mood_control_summary`'s
    result; writes ``path``, returns its name. Example: ``plot_confusion(mc, out / "mood_confusion.png")``."""
    m = np.asarray(mood["confusion"], dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    fig = _figure(7, 5.5)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{int(m[i, j])}\n{share[i, j]:.0%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=9)
    ax.set_xticks(range(m.shape[1]), mood["columns"])
    ax.set_yticks(range(m.shape[0]), mood["labels"])
    ax.set_xlabel("estimated mood (MoodEstimator)")
    ax.set_ylabel("requested mood")
    acc = mood.get("quadrant_accuracy")
    ax.set_title("Mood control" + (f": quadrant accuracy {acc:.0%}" if acc is not None else ""))
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the row")
    return _save_png(fig, path)
