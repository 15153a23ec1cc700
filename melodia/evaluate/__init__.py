"""Evaluate a model: likelihood, real-vs-generated statistics, mood control, metre and validity.

``melodia evaluate --model DIR --corpus DIR [--n 64] [--seed 0] --out REPORT_DIR`` (or
:func:`evaluate`) writes ``report.md``, ``report.json`` and pictures. What each part measures,
and the definitions of the metrics, are in ``docs/evaluation.md``; an example report is in
``docs/example-report/``.

* :mod:`.metrics` — per-piece metrics of a score (:func:`piece_features`);
* :mod:`.stats` — Yang & Lerch's comparison of a real and a generated set (:func:`compare_sets`);
* :mod:`.metre` — metre and harmony figures on a piece's own bar lines;
* :mod:`.checks` — mood control and validity of generated sequences;
* :mod:`.likelihood` — nats per token and bits per note on held-out pieces;
* :mod:`.real` — held-out pieces and bar-aligned excerpts of them;
* :mod:`.realism` — a classifier's two-sample test of generated against real pieces, with its
  controls; :mod:`.copycheck` — verbatim 4-bar windows of the training pieces; :mod:`.parts` —
  which notes are the melody (``melodia evaluate --realism``; needs scikit-learn);
* :mod:`.figures`, :mod:`.report` — the pictures, report.md and report.json;
* :mod:`.run` — :func:`evaluate`, the whole run, and the ``melodia evaluate`` command.

Example:
    >>> result = evaluate("melodia/weights/default", "C", n=64, seed=0, out_dir="eval")
    >>> result["likelihood"]["nats_per_token"], result["mood_control"]["quadrant_accuracy"]
"""
from __future__ import annotations

from .checks import bar_count, check_sequence, cue_summary, mood_control_summary, validity_summary
from .likelihood import likelihood, likelihood_windows
from .metre import METRE_FIGURES, metre_harmony, metre_summary
from .metrics import (
    FEATURES,
    GROOVE_RESOLUTION,
    NOTE_LENGTH_NAMES,
    NOTE_LENGTHS,
    SCALAR_FEATURES,
    empty_beat_rate,
    groove_consistency,
    mean_ioi,
    note_length_histogram,
    onsets_per_second,
    piece_features,
    pitch_class_entropy,
    pitch_class_transition_matrix,
    pitch_range,
    polyphony,
    scale_consistency,
)
from .real import corpus_from_meta, excerpt, held_out, load_piece, note_bars, real_excerpts
from .report import jsonable, write_report, write_texts
from .run import GenerateFn, add_evaluate_arguments, cli_evaluate, evaluate, shown_path
from .stats import (
    compare_feature,
    compare_sets,
    finite_values,
    gaussian_kde,
    kde_bandwidth,
    kl_divergence,
    overlap_area,
    pairwise_distances,
)

__all__ = [
    "pitch_class_entropy", "scale_consistency", "groove_consistency", "empty_beat_rate",
    "polyphony", "pitch_range", "onsets_per_second", "mean_ioi", "note_length_histogram",
    "pitch_class_transition_matrix", "piece_features", "FEATURES", "SCALAR_FEATURES",
    "NOTE_LENGTHS", "NOTE_LENGTH_NAMES", "GROOVE_RESOLUTION", "excerpt", "note_bars",
    "kde_bandwidth", "gaussian_kde", "overlap_area", "kl_divergence", "pairwise_distances",
    "compare_feature", "compare_sets", "finite_values",
    "mood_control_summary", "cue_summary", "bar_count", "check_sequence", "validity_summary",
    "likelihood", "likelihood_windows",
    "write_report", "write_texts", "jsonable", "evaluate", "GenerateFn", "add_evaluate_arguments", "cli_evaluate",
    "shown_path", "corpus_from_meta", "held_out", "load_piece", "real_excerpts",
    "METRE_FIGURES", "metre_harmony", "metre_summary",
]
