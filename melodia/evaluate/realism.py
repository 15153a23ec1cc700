"""Can a classifier tell generated pieces from real ones? A two-sample test on per-piece features.

Each piece (a generation, or a bar-aligned excerpt of a held-out real song) becomes one row of
:data:`REALISM_FEATURES`: rhythm, bar-to-bar repetition, melody and phrasing, harmony, bass,
texture and dynamics, all measured on the piece's own bar lines and from its notes alone (chords
are recognised from the notes on both sides, never read from markers or chord tokens; nothing
depends on the tempo). Two classifiers (an L2-regularised logistic regression on standardised
features, and gradient-boosted trees) are cross-validated with folds grouped by song, so no song
has excerpts on both sides of a split; the ROC-AUC on the held-out folds says how well the sets
are told apart: 0.5 = not at all, 1.0 = every piece given away. :func:`univariate_aucs` names
the features that give the generations away most (each feature alone, as a score).

The real side is one style's held-out pieces (:func:`heldout_rows`: pop by default), less those
that are near-duplicates of a train piece (:func:`near_duplicates`: POP909 has the same song
under two numbers, in different splits). Controls (:func:`real_vs_real`, :func:`corpus_control`):
held-out songs split in two halves by song must come out near 0.5, and the corpus's stored
pieces against the raw source files they were made from (POP909's) show what the corpus
preparation changes. The method and the figures are in ``docs/evaluation.md``, "Realism".

Example: ``two_sample_auc(feature_matrix(generated, 16), feature_matrix(real, 16), gen_groups, real_groups)``
"""
from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..corpus import load_manifest
from ..errors import BadInputError, BadMidiError
from ..midifile import load_score
from ..music.harmony import (
    SIXTEENTH,
    bar_lines,
    bass_on_downbeat,
    beats_in_bar,
    chord_at,
    chord_beat_share,
    chord_tone_share,
    grid_share,
    recognise_chords,
    rhythm_repetition,
)
from ..music.moods import normalise_word
from ..music.notes import NoteArrays, TickNotes, tick_score
from ..tokenizer import DEFAULT_STYLE
from .copycheck import WINDOW_BARS, CopyIndex, copy_check
from .metrics import piece_features
from .parts import ONSET_STEPS, bar_figures, beat_bass, melody_line, part_roles
from .real import excerpt, load_piece, note_bars

if TYPE_CHECKING:
    import symusic

    from ..tokenizer import MelodiaTokenizer

__all__ = [
    "FEATURE_GROUPS", "NEAR_DUPLICATE_SHARE", "RAW_SOURCES", "REALISM_FEATURES", "corpus_control", "feature_matrix",
    "heldout_excerpts", "heldout_rows", "near_duplicates", "piece_bars", "raw_source", "real_vs_real",
    "realism_features", "realism_report", "require_sklearn", "tokenizer_control", "two_sample_auc", "univariate_aucs",
]

#: a held-out piece with more than this share of its counted 4-bar windows (copycheck's hashing:
#: every note, transposition-normalised) found in one train piece is a near-duplicate of it, and
#: is left out of the real side (:func:`near_duplicates`)
NEAR_DUPLICATE_SHARE = 0.5
#: the sources whose raw files :func:`corpus_control` reads (POP909's MIDI files; music21's
#: pieces are scores parsed in memory, with no raw MIDI file to compare with)
RAW_SOURCES = ("pop909",)

#: feature name -> group; the groups are what the report sums the give-aways by
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "rhythm": ("grid16", "triplet_share", "on_beat", "offbeat_eighth", "syncopation_melody", "groove_consistency",
               "duration_melody", "duration_accompaniment", "short_notes", "long_notes", "legato_melody",
               "legato_accompaniment", "onsets_per_bar_melody", "onsets_per_bar_accompaniment"),
    "repetition": ("bar_exact_repeat", "bar_near_repeat", "bar_best_match", "accompaniment_rhythm_repeat",
                   "accompaniment_figure_repeat", "accompaniment_rhythm_consecutive", "melody_rhythm_repeat",
                   "melody_rhythm_lag2", "melody_rhythm_lag4", "section_lag4", "section_lag8"),
    "melody": ("melody_steps", "melody_unisons", "melody_leaps", "melody_direction_changes", "melody_range",
               "melody_pitch", "melody_bar_coverage", "melody_rest", "melody_overlap", "phrase_end_2",
               "phrase_end_4", "odd_bar_end"),
    "harmony": ("chord_tones", "chord_tones_melody", "chord_tones_melody_beats", "triad_beats", "open_fifth_beats",
                "chord_changes_per_bar", "pitch_class_entropy", "scale_consistency"),
    "bass": ("bass_root", "bass_downbeat", "bass_pitch", "bass_range", "bass_changes_per_bar", "bass_fifth_moves",
             "bass_step_moves"),
    "texture": ("polyphony", "parts", "pitch_range", "melody_bass_gap", "accompaniment_share",
                "accompaniment_chord_size", "empty_beat_rate", "notes_per_bar"),
    "dynamics": ("velocity_mean", "velocity_spread", "velocity_bar_spread", "velocity_bar_motion",
                 "velocity_melody_lead"),
}
#: every feature, in the order of a :func:`feature_matrix` column
REALISM_FEATURES: tuple[str, ...] = tuple(f for names in FEATURE_GROUPS.values() for f in names)

_NAN = float("nan")
_TOL = 0.025  # beats: harmony.GRID_TOLERANCE, a tenth of a sixteenth


# ----------------------------------------------------------------------------- helpers
def piece_bars(score: "symusic.Score", bars: int | None = None) -> np.ndarray:
    """Bar lines of a piece in beats (the one bar rule, :func:`melodia.music.harmony.bar_lines`):
    with ``bars``, exactly ``bars + 1`` lines (cut, or extended by the last bar's length when the
    notes end early, so trailing silence counts as bars).

    Example: ``piece_bars(score, 16)[-1]  # 64.0 in 4/4``
    """
    lines = bar_lines(score)
    if bars is None:
        return lines
    if len(lines) < 2:
        lines = np.array([0.0, 4.0])
    if len(lines) - 1 >= bars:
        return lines[:bars + 1]
    step = lines[-1] - lines[-2]
    return np.concatenate([lines, lines[-1] + step * np.arange(1, bars - len(lines) + 2)])


def _share(mask: np.ndarray) -> float:
    return float(np.mean(mask)) if np.size(mask) else _NAN


def _near(x: np.ndarray, step: float) -> np.ndarray:
    r = np.mod(x, step)
    return np.minimum(r, step - r) <= _TOL + 1e-9


def _slots(x: np.ndarray, per_beat: int = 4) -> np.ndarray:
    return np.rint(np.asarray(x) * per_beat).astype(np.int64)


def _bar_sets(bar: np.ndarray, keys: list[tuple], n_bars: int) -> list[frozenset]:
    sets: list[set] = [set() for _ in range(n_bars)]
    for b, k in zip(bar.tolist(), keys):
        if 0 <= b < n_bars:
            sets[b].add(k)
    return [frozenset(s) for s in sets]


def _jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else _NAN


def _repeat_share(sets: list[frozenset]) -> float:
    """Share of non-empty bars equal to some earlier bar (the first non-empty bar cannot be)."""
    seen: set[frozenset] = set()
    hits = total = 0
    for s in sets:
        if not s:
            continue
        if seen:
            total += 1
            hits += s in seen
        seen.add(s)
    return hits / total if total else _NAN


def _lag_jaccard(sets: list[frozenset], lag: int) -> float:
    vals = [_jaccard(sets[b], sets[b - lag]) for b in range(lag, len(sets))]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else _NAN


def _nanmean(x: Sequence[float]) -> float:
    a = np.asarray(x, np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else _NAN


def _legato(notes: NoteArrays, mask: np.ndarray) -> float:
    """Median of (note length / time to the part's next onset), capped at 2: 1 = legato,
    below 0.5 = detached."""
    on, dur = notes.onset[mask], (notes.end - notes.onset)[mask]
    times = np.unique(np.rint(on * ONSET_STEPS)) / ONSET_STEPS
    if times.size < 2:
        return _NAN
    nxt_i = np.searchsorted(times, on + 0.5 / ONSET_STEPS, side="left")
    ok = nxt_i < times.size
    if not ok.any():
        return _NAN
    gap = times[nxt_i[ok]] - on[ok]
    return float(np.median(np.minimum(dur[ok] / np.maximum(gap, 1e-6), 2.0)))


def _median_log_duration(notes: NoteArrays, mask: np.ndarray) -> float:
    d = (notes.end - notes.onset)[mask]
    return float(np.median(np.log2(np.maximum(d, 1 / 32)))) if d.size else _NAN


def _sounding_share(notes: NoteArrays, mask: np.ndarray, start: float, end: float) -> tuple[float, float]:
    """(share of [start, end) with no note of ``mask`` sounding, share of the sounding time
    with two or more sounding)."""
    on, off = np.clip(notes.onset[mask], start, end), np.clip(notes.end[mask], start, end)
    keep = off > on
    if end <= start:
        return _NAN, _NAN
    if not keep.any():
        return 1.0, _NAN
    times = np.concatenate([on[keep], off[keep]])
    delta = np.concatenate([np.ones(keep.sum()), -np.ones(keep.sum())])
    order = np.lexsort((delta, times))  # ends before starts at the same time
    active = np.cumsum(delta[order])[:-1]
    length = np.diff(times[order])
    sounding = length[active > 0].sum()
    rest = 1.0 - sounding / (end - start)
    overlap = length[active > 1].sum() / sounding if sounding > 0 else _NAN
    return float(rest), float(overlap)


def _phrase_ends(line_on: np.ndarray, bars: np.ndarray, ends: Sequence[int]) -> float:
    """Share of the bar lines ``bars[e]`` (e in ``ends``, phrases ending there) where the
    melody's last onset before the line is followed by 2 beats or more without a new melody
    onset (a long note or a breath). The piece's closing line is never used (an excerpt is cut
    there; a generation ends there)."""
    hits = total = 0
    for e in ends:
        if not 0 < e < len(bars) - 1:
            continue
        line = bars[e]
        before = line_on[(line_on < line - 1e-9) & (line_on >= bars[max(e - 2, 0)] - 1e-9)]
        if before.size == 0:
            continue
        after = line_on[line_on > before[-1] + 1e-9]
        gap = (after[0] if after.size else bars[-1]) - before[-1]
        total += 1
        hits += gap >= 2.0 - 1e-9
    return hits / total if total else _NAN


def _open_fifth_beats(notes: NoteArrays, bars: np.ndarray) -> float:
    """Share of sounding beats whose pitch classes hold a perfect fifth with no third over
    its lower tone (an open fifth, a power chord) and no complete triad."""
    beats = np.arange(0.0, bars[-1], 1.0)
    hits = total = 0
    for b in beats:
        cover = np.minimum(notes.end, b + 1) - np.maximum(notes.onset, b)
        pcs = {int(p) for p in notes.pitch[cover >= SIXTEENTH - 1e-9] % 12}
        if not pcs:
            continue
        total += 1
        roots = [r for r in pcs if (r + 7) % 12 in pcs]
        triad = any((r + 3) % 12 in pcs or (r + 4) % 12 in pcs for r in roots)
        hits += bool(roots) and not triad
    return hits / total if total else _NAN


# ----------------------------------------------------------------------------- features
def realism_features(score: "symusic.Score", bars: int | None = None) -> dict[str, float]:
    """The :data:`REALISM_FEATURES` of one piece, on its own bar lines (:func:`piece_bars`;
    ``bars`` fixes how many), from its pitched notes (drums left out) and their velocities;
    NaN where a feature has nothing to measure (no melody, one bar, …). Beats are quarter notes.
    Deterministic: the same score gives the same numbers.

    Rhythm: onsets on a sixteenth / on an eighth-triplet (not a sixteenth) / on a beat / on the
    off-beat eighth; melody notes starting off the beat and held over the next one
    (syncopation); groove consistency (:mod:`.metrics`); median log2 length of melody and
    accompaniment notes; notes of a sixteenth or less, of two beats or more; legato (median
    length / time to the part's next onset); onsets per bar of melody and accompaniment.
    Repetition: bars (pitch, onset on 1/48 beat, length in sixteenths) equal to an earlier bar;
    bars whose (pitch, sixteenth) set has Jaccard ≥ 0.75 with an earlier bar, and the mean best
    Jaccard; accompaniment bars whose rhythm, or whose figure (sixteenth, rank of the pitch among
    the bar's accompaniment pitches), equals an earlier bar's, and its consecutive-bar rhythm
    Jaccard; melody bars whose rhythm equals an earlier bar's, melody rhythm Jaccard 2 and 4 bars
    apart; the whole texture's Jaccard 4 and 8 bars apart. Melody (its highest note per onset):
    steps (1-2 semitones), repeated notes, leaps (5+), direction changes, range, mean pitch, bars
    with a melody onset, time without melody, time with two melody notes sounding, phrase ends
    (:func:`_phrase_ends`) after bars 2, 6, 10, 14 / 4, 8, 12 / odd bars. Harmony (chords
    recognised per half bar from the notes): note time on chord tones (all, melody), melody notes
    on a beat that are chord tones, beats holding a triad, beats holding an open fifth, chord
    changes per bar, pitch-class entropy, scale consistency. Bass (the lowest accompaniment note
    sounding at each beat): bars whose bass at the bar line is the root of the chord recognised
    from the notes above the bass, bass on the downbeat
    (:func:`~melodia.music.harmony.bass_on_downbeat`), mean pitch, range, changes per bar, moves
    by a fourth/fifth and by a step. Texture: polyphony,
    parts, pitch range, melody minus bass mean pitch, accompaniment share of notes, notes per
    accompaniment onset, empty-beat rate, notes per bar. Dynamics: mean velocity, its spread,
    spread and mean change of the bar means, melody minus accompaniment mean velocity.

    Example: ``realism_features(score, 16)["bar_exact_repeat"]  # 0.13``
    """
    score = tick_score(score)
    notes = NoteArrays.of_score(score)
    tick = TickNotes.of_score(score)
    velocity = tick.velocity[tick.pitched].astype(np.float64)
    bl = piece_bars(score, bars)
    n_bars = len(bl) - 1
    out = dict.fromkeys(REALISM_FEATURES, _NAN)
    if notes.pitch.size == 0:
        return out
    roles = part_roles(notes)
    mel, acc = roles.melody, roles.accompaniment
    on, end, pitch = notes.onset, notes.end, notes.pitch
    dur = end - on
    k, pos = beats_in_bar(on, bl)
    inside = on < bl[-1] - 1e-9

    # rhythm
    metrics = piece_features(score)
    out["grid16"] = grid_share(on, bl)
    out["triplet_share"] = _share(_near(pos, 1 / 3) & ~_near(pos, SIXTEENTH))
    out["on_beat"] = grid_share(on, bl, step=1.0)
    out["offbeat_eighth"] = _share(_near(pos, 0.5) & ~_near(pos, 1.0))
    off_beat = ~_near(pos, 1.0)
    m_idx = np.flatnonzero(mel)
    if m_idx.size:
        held_over = end[m_idx] > np.floor(pos[m_idx] + 1e-9) + 1 + bl[k[m_idx]] + SIXTEENTH - 1e-9
        out["syncopation_melody"] = _share(off_beat[m_idx] & held_over)
    out["groove_consistency"] = metrics["groove_consistency"]
    out["duration_melody"] = _median_log_duration(notes, mel)
    out["duration_accompaniment"] = _median_log_duration(notes, acc)
    out["short_notes"] = _share(dur <= SIXTEENTH + 1e-9)
    out["long_notes"] = _share(dur >= 2.0 - 1e-9)
    out["legato_melody"] = _legato(notes, mel)
    out["legato_accompaniment"] = _legato(notes, acc)
    for name, mask in (("melody", mel), ("accompaniment", acc)):
        out[f"onsets_per_bar_{name}"] = np.unique(_slots(on[mask & inside], ONSET_STEPS)).size / n_bars

    # repetition
    s16 = _slots(pos)
    full = _bar_sets(k, list(zip(_slots(pos, ONSET_STEPS).tolist(), pitch.tolist(),
                                 np.minimum(_slots(dur), 16).tolist())), n_bars)
    loose = _bar_sets(k, list(zip(s16.tolist(), pitch.tolist())), n_bars)
    out["bar_exact_repeat"] = _repeat_share(full)
    best = [max((_jaccard(loose[b], loose[a]) for a in range(b)), default=_NAN)
            for b in range(1, n_bars) if loose[b]]
    best = [x for x in best if not math.isnan(x)]
    out["bar_near_repeat"] = _share(np.array(best) >= 0.75) if best else _NAN
    out["bar_best_match"] = float(np.mean(best)) if best else _NAN
    a_idx = np.flatnonzero(acc)
    if a_idx.size:
        acc_rhythm, acc_figure = bar_figures(notes, acc, bl)
        out["accompaniment_rhythm_repeat"] = _repeat_share(acc_rhythm)
        out["accompaniment_figure_repeat"] = _repeat_share(acc_figure)
        out["accompaniment_rhythm_consecutive"] = rhythm_repetition(on[a_idx], bl)
    if m_idx.size:
        mel_rhythm = _bar_sets(k[m_idx], [(s,) for s in s16[m_idx].tolist()], n_bars)
        out["melody_rhythm_repeat"] = _repeat_share(mel_rhythm)
        out["melody_rhythm_lag2"] = _lag_jaccard(mel_rhythm, 2)
        out["melody_rhythm_lag4"] = _lag_jaccard(mel_rhythm, 4)
    out["section_lag4"] = _lag_jaccard(loose, 4)
    out["section_lag8"] = _lag_jaccard(loose, 8)

    # melody
    line = melody_line(notes, roles)
    if line.size:
        lp = pitch[line]
        iv = np.diff(lp)
        if iv.size:
            a = np.abs(iv)
            out["melody_steps"] = _share((a >= 1) & (a <= 2))
            out["melody_unisons"] = _share(a == 0)
            out["melody_leaps"] = _share(a >= 5)
            sign = np.sign(iv[iv != 0])
            out["melody_direction_changes"] = _share(sign[1:] != sign[:-1]) if sign.size > 1 else _NAN
        out["melody_range"] = float(lp.max() - lp.min())
        out["melody_pitch"] = float(lp.mean())
        out["melody_bar_coverage"] = np.unique(k[line][inside[line]]).size / n_bars
        out["melody_rest"], out["melody_overlap"] = _sounding_share(notes, mel, float(bl[0]), float(bl[-1]))
        line_on = on[line]
        out["phrase_end_2"] = _phrase_ends(line_on, bl, range(2, n_bars, 4))
        out["phrase_end_4"] = _phrase_ends(line_on, bl, range(4, n_bars, 4))
        out["odd_bar_end"] = _phrase_ends(line_on, bl, range(1, n_bars, 2))

    # harmony: chords recognised from the notes, the same way for every piece
    chords = recognise_chords(notes, bl)
    out["chord_tones"] = chord_tone_share(notes, chords, float(bl[-1]))
    if m_idx.size:
        out["chord_tones_melody"] = chord_tone_share(notes, chords, float(bl[-1]), mel)
        on_beat = m_idx[_near(pos[m_idx], 1.0)]
        if on_beat.size:
            in_force = chord_at(chords, on[on_beat])
            tones = [c is not None and int(p) % 12 in c.pitch_classes for c, p in zip(in_force, pitch[on_beat])]
            known = [c is not None for c in in_force]
            out["chord_tones_melody_beats"] = (sum(tones) / sum(known)) if any(known) else _NAN
    out["triad_beats"] = chord_beat_share(notes, bl)
    out["open_fifth_beats"] = _open_fifth_beats(notes, bl)
    out["chord_changes_per_bar"] = max(sum(c is not None for _, c in chords) - 1, 0) / n_bars
    out["pitch_class_entropy"] = metrics["pitch_class_entropy"]
    out["scale_consistency"] = metrics["scale_consistency"]

    # bass: the lowest accompaniment note sounding at each beat's start or starting in the beat
    low = acc if acc.any() else np.ones(pitch.size, bool)
    bass_of_beat = beat_bass(notes, low, np.arange(0.0, bl[-1], 1.0)).tolist()
    bass = np.array([i for i in bass_of_beat if i >= 0], np.int64)
    if bass.size:
        # chords of the notes above the bass, so that the bass's own notes cannot make it the root
        upper = np.ones(pitch.size, bool)
        upper[bass] = False
        upper_chords = recognise_chords(NoteArrays(on[upper], end[upper], pitch[upper]), bl) if upper.any() else []
        down = [(b, bass_of_beat[i]) for i, b in enumerate(np.arange(0.0, bl[-1], 1.0)) if bass_of_beat[i] >= 0
                and np.any(np.abs(bl - b) < 1e-9)]
        in_force = chord_at(upper_chords, np.array([b for b, _ in down])) if upper_chords and down else []
        roots = [int(pitch[i]) % 12 == c.root for (_, i), c in zip(down, in_force) if c is not None]
        out["bass_root"] = _share(np.array(roots)) if roots else _NAN
        bp = pitch[bass]
        out["bass_pitch"] = float(bp.mean())
        out["bass_range"] = float(bp.max() - bp.min())
        moves = np.diff(bp)
        moves = np.abs(moves[moves != 0])
        out["bass_changes_per_bar"] = moves.size / n_bars
        if moves.size:
            out["bass_fifth_moves"] = _share(np.isin(moves % 12, (5, 7)))
            out["bass_step_moves"] = _share(moves <= 2)
    out["bass_downbeat"] = bass_on_downbeat(notes, bl)

    # texture
    out["polyphony"] = metrics["polyphony"]
    out["parts"] = float(len(set(notes.program.tolist()))) if roles.by == "program" else \
        float(len({int(t.program) * 1000 + i for i, t in enumerate(score.tracks) if not t.is_drum and len(t.notes)}))
    out["pitch_range"] = metrics["pitch_range"]
    if line.size and bass.size:
        out["melody_bass_gap"] = float(pitch[line].mean() - pitch[bass].mean())
    out["accompaniment_share"] = _share(acc)
    if a_idx.size:
        out["accompaniment_chord_size"] = a_idx.size / np.unique(_slots(on[a_idx], ONSET_STEPS)).size
    out["empty_beat_rate"] = metrics["empty_beat_rate"]
    out["notes_per_bar"] = int(inside.sum()) / n_bars

    # dynamics
    if velocity.size == pitch.size:
        out["velocity_mean"] = float(velocity.mean())
        out["velocity_spread"] = float(velocity.std())
        bar_means = np.array([velocity[k == b].mean() for b in range(n_bars) if (k == b).any()])
        if bar_means.size >= 2:
            out["velocity_bar_spread"] = float(bar_means.std())
            out["velocity_bar_motion"] = float(np.abs(np.diff(bar_means)).mean())
        if mel.any() and acc.any():
            out["velocity_melody_lead"] = float(velocity[mel].mean() - velocity[acc].mean())
    return {name: float(v) for name, v in out.items()}


def feature_matrix(scores: Sequence["symusic.Score"], bars: int | None = None) -> np.ndarray:
    """One row of :data:`REALISM_FEATURES` per score (NaN where a feature has nothing to measure).

    Example: ``feature_matrix(real_scores, 16).shape  # (n, len(REALISM_FEATURES))``
    """
    rows = [realism_features(s, bars) for s in scores]
    return np.array([[r[f] for f in REALISM_FEATURES] for r in rows], np.float64).reshape(len(rows),
                                                                                      len(REALISM_FEATURES))


# ----------------------------------------------------------------------------- the test
#: the classifiers: name -> what the report calls it
CLASSIFIERS = {"logistic": "L2 logistic regression (C = 0.3) on standardised, median-imputed features",
               "boosting": "gradient-boosted trees (scikit-learn HistGradientBoosting, depth 3, 100 rounds)"}


def require_sklearn() -> None:
    """:class:`BadInputError` naming the fix when scikit-learn, which the classifiers need, is missing.

    Example: ``require_sklearn()  # before minutes of generation``
    """
    try:
        import sklearn  # noqa: F401  heavy: loaded on first use
    except ImportError:
        raise BadInputError("the realism check needs scikit-learn: pip install 'melodia[eval]' "
                            "(or pip install scikit-learn)") from None


def _classifier(name: str, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier  # heavy: loaded on first use
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "logistic":
        return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(),
                             LogisticRegression(C=0.3, max_iter=2000))
    return HistGradientBoostingClassifier(max_depth=3, max_iter=100, learning_rate=0.08, min_samples_leaf=8,
                                          early_stopping=False, random_state=seed)


def two_sample_auc(a: np.ndarray, b: np.ndarray, groups_a: Sequence[Any], groups_b: Sequence[Any],
                   seed: int = 0, folds: int = 5, repeats: int = 3,
                   classifiers: Sequence[str] = tuple(CLASSIFIERS)) -> dict[str, Any]:
    """How well each classifier of :data:`CLASSIFIERS` tells rows ``b`` (label 1: e.g. the
    generations) from rows ``a`` (label 0: the real pieces): ROC-AUC on held-out folds of
    :class:`sklearn.model_selection.StratifiedGroupKFold` (``folds`` folds, fewer when a side
    has fewer groups; ``repeats`` shuffles), grouped so that rows of one group (a song) never
    sit on both sides of a split (a group named on both sides, a song in :func:`corpus_control`,
    keeps all its rows in one fold; give the sides distinct names otherwise). Per classifier: the mean and standard deviation of the fold
    AUCs and the number of folds; ``auc`` is the highest mean (the stricter verdict).

    Example: ``two_sample_auc(real_x, gen_x, songs, range(len(gen_x)))["auc"]  # 0.97``
    """
    from sklearn.metrics import roc_auc_score  # heavy: loaded on first use
    from sklearn.model_selection import StratifiedGroupKFold
    from threadpoolctl import threadpool_limits  # comes with scikit-learn

    x = np.vstack([a, b])
    y = np.concatenate([np.zeros(len(a), np.int64), np.ones(len(b), np.int64)])
    groups = np.unique([str(g) for g in [*groups_a, *groups_b]], return_inverse=True)[1]
    k = min(folds, len(set(groups_a)), len(set(groups_b)))
    if k < 2:
        raise BadInputError(f"realism: need at least 2 groups on each side, got {len(set(groups_a))} "
                            f"and {len(set(groups_b))}")
    out: dict[str, Any] = {"n_a": len(a), "n_b": len(b), "groups_a": len(set(groups_a)),
                           "groups_b": len(set(groups_b)), "folds": k, "repeats": repeats}
    for name in classifiers:
        aucs = []
        for r in range(repeats):
            cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed + r)
            for train, test in cv.split(x, y, groups):
                if len(set(y[test])) < 2 or len(set(y[train])) < 2:
                    continue
                cols = np.isfinite(x[train]).any(axis=0)  # a feature never measured here says nothing
                with threadpool_limits(1):  # small fits: threads only fight over the cores
                    clf = _classifier(name, seed + r).fit(x[train][:, cols], y[train])
                aucs.append(float(roc_auc_score(y[test], clf.predict_proba(x[test][:, cols])[:, 1])))
        out[name] = {"mean": float(np.mean(aucs)) if aucs else _NAN,
                     "sd": float(np.std(aucs)) if aucs else _NAN, "n_folds": len(aucs)}
    out["auc"] = max(out[name]["mean"] for name in classifiers)
    return out


def univariate_aucs(a: np.ndarray, b: np.ndarray, top: int | None = None) -> list[dict[str, Any]]:
    """Each feature alone as a score for "is a row of ``b``": its ROC-AUC over the rows where it is
    finite (above 0.5: ``b`` runs higher), with both sides' means and medians, sorted by how far the AUC is
    from 0.5 (the features that give ``b`` away most first); ``top`` keeps the first ones.

    Example: ``univariate_aucs(real_x, gen_x, 5)[0]["feature"]  # "bar_exact_repeat"``
    """
    out = []
    for j, name in enumerate(REALISM_FEATURES):
        xa, xb = a[:, j][np.isfinite(a[:, j])], b[:, j][np.isfinite(b[:, j])]
        if xa.size == 0 or xb.size == 0:
            continue
        # Mann-Whitney: P(b > a) + P(b == a) / 2
        auc = float(((xb[:, None] > xa[None, :]).sum() + 0.5 * (xb[:, None] == xa[None, :]).sum())
                    / (xa.size * xb.size))
        group = next(g for g, names in FEATURE_GROUPS.items() if name in names)
        out.append({"feature": name, "group": group, "auc": auc, "mean_a": float(xa.mean()),
                    "mean_b": float(xb.mean()), "median_a": float(np.median(xa)),
                    "median_b": float(np.median(xb)), "n_a": int(xa.size), "n_b": int(xb.size)})
    out.sort(key=lambda r: -abs(r["auc"] - 0.5))
    return out[:top] if top else out


# ----------------------------------------------------------------------------- real sides
def heldout_excerpts(corpus: Path, rows: Sequence[Mapping[str, Any]], bars: int, per_song: int,
                     rng: np.random.Generator) -> tuple[list["symusic.Score"], list[str], list[dict]]:
    """Up to ``per_song`` non-overlapping ``bars``-bar excerpts (:func:`melodia.evaluate.real.excerpt`,
    cut at the song's bar lines) of each piece of ``rows``, each with a pitched note: the
    excerpts, their songs (manifest ``song``, the group of the test) and where each came from
    (``{"song", "start_bar"}``). Unreadable pieces are skipped.

    Example: ``heldout_excerpts(Path("C"), held, 16, 2, np.random.default_rng(0))``
    """
    scores: list["symusic.Score"] = []
    songs: list[str] = []
    origin: list[dict] = []
    for row in rows:
        try:
            score = load_piece(corpus, row)
        except BadMidiError:
            continue
        n_bars = len(note_bars(score)) - 1
        slots = max(n_bars // bars, 1)
        shift = int(rng.integers(0, max(n_bars - slots * bars, 0) + 1))
        for slot in sorted(rng.permutation(slots)[:per_song].tolist()):
            start = min(slot * bars + shift, max(n_bars - 1, 0))
            piece = excerpt(score, start, bars)
            if not any(not t.is_drum and len(t.notes) for t in piece.tracks):
                continue
            scores.append(piece)
            songs.append(str(row.get("song", row.get("id"))))
            origin.append({"song": songs[-1], "start_bar": start})
    return scores, songs, origin


def real_vs_real(features: np.ndarray, songs: Sequence[str], seed: int = 0, repeats: int = 3) -> dict[str, Any]:
    """The null control: the real excerpts' songs split at random into two halves, one half's
    rows against the other's (:func:`two_sample_auc`). Near 0.5 when the test is sound.

    Example: ``real_vs_real(real_x, songs)["auc"]  # 0.52``
    """
    names = sorted(set(songs))
    order = np.random.default_rng(seed).permutation(len(names))
    half = {names[i] for i in order[: len(names) // 2]}
    side = np.array([s in half for s in songs])
    res = two_sample_auc(features[~side], features[side], [s for s in songs if s not in half],
                         [s for s in songs if s in half], seed=seed, repeats=repeats)
    res["top_features"] = univariate_aucs(features[~side], features[side], 5)
    return res


def tokenizer_control(real: Sequence["symusic.Score"], features: np.ndarray, songs: Sequence[str], bars: int,
                      tokenizer: "MelodiaTokenizer", seed: int = 0, repeats: int = 3) -> dict[str, Any]:
    """What the token representation alone gives away: the real excerpts against themselves
    encoded and decoded by ``tokenizer`` (each copy in its song's group, so a song and its copy
    are never on both sides of a split). Near 0.5 when the tokens keep what the features read;
    whatever a model's pieces lack beyond that, the model did not learn.

    Example: ``tokenizer_control(real, feature_matrix(real, 16), songs, 16, tok)["auc"]  # 0.50``
    """
    back = [tokenizer.decode(tokenizer.encode_score(s)) for s in real]
    xb = feature_matrix(back, bars)
    res = two_sample_auc(features, xb, songs, songs, seed=seed, repeats=repeats)
    res["top_features"] = univariate_aucs(features, xb, 5)
    return res


def raw_source(corpus: Path, row: Mapping[str, Any], sources: Sequence[str | Path]) -> Path | None:
    """The source file a manifest row was made from: its ``path`` (``pop909/001/001.mid``) under
    the source folder of that name in ``sources`` (the corpus report's ``sources``, relative to
    the working directory, or given); None when no such file exists.

    Example: ``raw_source(Path("C"), row, ["data/pop909"])  # Path("data/pop909/001/001.mid")``
    """
    parts = Path(str(row.get("path", ""))).parts
    if len(parts) < 2:
        return None
    for s in sources:
        root = Path(s)
        if root.name == parts[0] and (root / Path(*parts[1:])).is_file():
            return root / Path(*parts[1:])
    return None


def _raw_read(path: Path) -> "symusic.Score":
    """A source MIDI file as it is, with two labels the corpus would also set so that the
    features can read it: its pitched tracks get programs 0, 1, 2 … in file order (POP909's
    MELODY, BRIDGE, PIANO are all program 0 in the file), and a 4/4 time signature from tick 0
    replaces its own (POP909 files say 2/4): bar lines every 4 beats of the file's own grid."""
    import symusic  # heavy: loaded on first use

    score = tick_score(load_score(path))
    k = 0
    for t in score.tracks:
        if not t.is_drum:
            t.program = min(k, 127)
            k += 1
    score.time_signatures.clear()
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    return score


def corpus_control(corpus: Path, rows: Sequence[Mapping[str, Any]], sources: Sequence[str | Path], bars: int,
                   seed: int = 0, repeats: int = 3) -> dict[str, Any]:
    """What the corpus preparation changes: an excerpt of each stored piece (``C/pieces/*.mid``)
    against the excerpt at the same bar index of the source file it was made from, read raw
    (:func:`_raw_read`), through :func:`two_sample_auc` grouped by song (both excerpts of a song
    in the same fold). Only rows of :data:`RAW_SOURCES` (POP909) are read, and of them those
    whose source file is found; ``{"auc": None, "reason": ...}`` when fewer than 4 songs are
    left, with ``"skipped": True`` when no row is of :data:`RAW_SOURCES` (a folk or chorale
    comparison: music21's pieces have no raw file).

    Example: ``corpus_control(Path("C"), held, ["data/pop909"], 16)["auc"]``
    """
    readable = [r for r in rows if r.get("source") in RAW_SOURCES]
    if not readable:
        found = sorted({str(r.get("source")) for r in rows})
        return {"auc": None, "skipped": True,
                "reason": f"skipped: its pieces come from {', '.join(found) or 'no source'}, not "
                          f"{' or '.join(RAW_SOURCES)} (the control compares stored pieces with raw "
                          f"{' or '.join(RAW_SOURCES)} MIDI files)"}
    rng = np.random.default_rng(seed)
    stored, raw, songs = [], [], []
    for row in readable:
        path = raw_source(corpus, row, sources)
        if path is None:
            continue
        try:
            a, b = load_piece(corpus, row), _raw_read(path)
        except BadMidiError:
            continue
        n_a, n_b = len(note_bars(a)) - 1, len(note_bars(b)) - 1
        start = int(rng.integers(0, max(min(n_a, n_b) - bars, 0) + 1))
        if start >= min(n_a, n_b):
            continue
        stored.append(excerpt(a, start, bars))
        raw.append(excerpt(b, start, bars))
        songs.append(str(row.get("song", row.get("id"))))
    if len(set(songs)) < 4:
        return {"auc": None, "reason": f"{len(set(songs))} source files found (need 4)"}
    xs, xr = feature_matrix(stored, bars), feature_matrix(raw, bars)
    res = two_sample_auc(xs, xr, songs, songs, seed=seed, repeats=repeats)
    res["top_features"] = univariate_aucs(xs, xr, 8)
    return res


# ----------------------------------------------------------------------------- the whole check
def _group_aucs(real: np.ndarray, gen: np.ndarray, real_groups: Sequence[str], gen_groups: Sequence[str],
                seed: int, repeats: int) -> dict[str, float]:
    """The logistic regression's AUC on each feature group alone: which aspect gives it away."""
    out = {}
    for group, names in FEATURE_GROUPS.items():
        cols = [REALISM_FEATURES.index(n) for n in names]
        res = two_sample_auc(real[:, cols], gen[:, cols], real_groups, gen_groups, seed=seed, repeats=repeats,
                             classifiers=("logistic",))
        out[group] = res["logistic"]["mean"]
    return out


def heldout_rows(rows: Sequence[Mapping[str, Any]], style: str | None = None) -> tuple[list[dict], str]:
    """The held-out pieces of a manifest (the *valid* and *test* splits: songs training never
    read) of ``style`` (manifest ``"style"``: pop, folk, chorale, classical, a folder's own;
    ``"Folk"`` reads as ``"folk"``), and a label saying which. ``style`` None: pop
    (:data:`melodia.tokenizer.DEFAULT_STYLE`, what a model with styles plays by default) when
    the corpus has held-out pop, else every held-out piece. A style with no held-out piece is a
    :class:`BadInputError` naming those the corpus has.

    Example: ``heldout_rows(load_manifest("C"), "folk")  # ([...1252 rows], "folk valid+test")``
    """
    held = [dict(r) for r in rows if r.get("split") in ("valid", "test")]
    styles = sorted({str(r["style"]) for r in held if r.get("style")})
    if style is None:
        if DEFAULT_STYLE not in styles:
            return held, "valid+test"
        style = DEFAULT_STYLE
    name = normalise_word(style) if isinstance(style, str) else ""
    if name not in styles:
        raise BadInputError(f"realism: the corpus has no held-out pieces of style {style!r}; its held-out "
                            f"styles: {', '.join(styles) or 'none (its manifest names no style)'}")
    return [r for r in held if r.get("style") == name], f"{name} valid+test"


def near_duplicates(corpus: Path, rows: Sequence[Mapping[str, Any]], index: CopyIndex,
                    share: float = NEAR_DUPLICATE_SHARE) -> tuple[list[dict], list[dict]]:
    """Split held-out ``rows`` into those kept and the near-duplicates of a train piece: a
    stored piece with more than ``share`` of its counted :data:`~melodia.evaluate.copycheck.WINDOW_BARS`-bar
    windows (every note, transposition-normalised) found in one piece of ``index``
    (:meth:`CopyIndex.closest`). Each near-duplicate is named as ``{"song", "id", "like"
    (the train piece's song), "share", "windows"}``. Unreadable pieces are kept (the excerpts
    skip them).

    Example: ``near_duplicates(Path("C"), held, CopyIndex.of_corpus(Path("C")))[1]  # [{"song": "pop909:018", "like": "pop909:017", ...}]``
    """
    kept: list[dict] = []
    dropped: list[dict] = []
    for row in rows:
        try:
            near = index.closest(load_piece(corpus, row))
        except BadMidiError:
            kept.append(dict(row))
            continue
        if near["share"] is not None and near["share"] > share:
            dropped.append({"song": str(row.get("song", row.get("id"))), "id": row.get("id"), "like": near["name"],
                            "share": near["share"], "windows": near["windows"]})
        else:
            kept.append(dict(row))
    return kept, dropped


def realism_report(generated: Sequence["symusic.Score"], corpus: Path, bars: int, seed: int = 0,
                   per_song: int = 2, style: str | None = None, sources: Sequence[str | Path] | None = None,
                   copy: bool = True, repeats: int = 3, say: Any = None,
                   index: CopyIndex | None = None, tokenizer: "MelodiaTokenizer | None" = None) -> dict[str, Any]:
    """The realism check of a set of generated ``bars``-bar pieces against a corpus: the
    classifier test (:func:`two_sample_auc`) against up to ``per_song`` excerpts of each held-out
    song of ``style`` (:func:`heldout_rows`: None = pop where the corpus has it;
    :func:`heldout_excerpts`), less the near-duplicates of train pieces (:func:`near_duplicates`,
    named in ``result["real"]["near_duplicates"]``), the features that give the
    generations away (:func:`univariate_aucs`), the AUC of each feature group alone, the two
    controls (:func:`real_vs_real`, :func:`corpus_control`, raw files looked up under ``sources``,
    default the corpus report's; skipped, with the reason, for a style not from POP909) and, with ``copy``, the copy check of the generations and, for
    reference, of the real excerpts against the corpus's train split
    (:mod:`melodia.evaluate.copycheck`). ``say(text)`` hears progress. ``index``: the corpus's
    train index (``CopyIndex.of_corpus(corpus)``) when the caller already has it (several reports
    in one run; building it reads every train piece). With the model's ``tokenizer``, a third
    control: the real excerpts against their own token round trip (:func:`tokenizer_control`).

    Example: ``realism_report(scores, Path("C"), 16, style="folk")["test"]["auc"]  # 0.98``
    """
    require_sklearn()
    say = say or (lambda text: None)
    generated = [s for s in generated if s is not None and s.note_num()]
    if len(generated) < 4:
        raise BadInputError(f"realism: need at least 4 generated pieces with notes, got {len(generated)}")
    rows = load_manifest(corpus)
    held, label = heldout_rows(rows, style)
    if index is None:
        say("realism: the train split's 4-bar windows (near-duplicates, copy check)")
        index = CopyIndex.of_corpus(corpus, rows=rows)
    checked = len(held)
    held, dropped = near_duplicates(corpus, held, index)
    say(f"realism: {len(dropped)} of {checked} held-out pieces ({label}) left out as near-duplicates of train pieces"
        + "".join(f"; {d['song']} like {d['like']} ({d['share']:.0%})" for d in dropped[:8]))
    say(f"realism: {bars}-bar excerpts of {len(held)} held-out songs ({label})")
    real, songs, origin = heldout_excerpts(corpus, held, bars, per_song, np.random.default_rng(seed))
    if len(set(songs)) < 4:
        raise BadInputError(f"{corpus}: realism needs held-out songs with notes; found {len(set(songs))}")
    say(f"realism: features of {len(real)} real and {len(generated)} generated pieces")
    xr, xg = feature_matrix(real, bars), feature_matrix(generated, bars)
    gen_groups = [f"generated:{i}" for i in range(len(generated))]
    say("realism: classifiers (generated vs real, per feature group, real vs real)")
    test = two_sample_auc(xr, xg, songs, gen_groups, seed=seed, repeats=repeats)
    test["top_features"] = univariate_aucs(xr, xg, 12)
    if sources is None:
        try:
            sources = json.loads((corpus / "report.json").read_text(encoding="utf-8")).get("sources") or []
        except (OSError, ValueError):
            sources = []
    out: dict[str, Any] = {
        "bars": bars, "features": len(REALISM_FEATURES), "classifiers": dict(CLASSIFIERS),
        "real": {"label": label, "songs": len(set(songs)), "excerpts": len(real), "per_song": per_song,
                 "near_duplicates": {"share": NEAR_DUPLICATE_SHARE, "window_bars": WINDOW_BARS, "checked": checked,
                                     "dropped": dropped}},
        "generated": {"n": len(generated)},
        "test": test,
        "by_group": _group_aucs(xr, xg, songs, gen_groups, seed, repeats),
        "means": {name: {"real": _nanmean(xr[:, j]), "generated": _nanmean(xg[:, j])}
                  for j, name in enumerate(REALISM_FEATURES)},
        "controls": {"real_vs_real": real_vs_real(xr, songs, seed, repeats)},
    }
    if tokenizer is not None:
        say("realism: tokenizer control (real excerpts against their own encode/decode)")
        out["controls"]["tokenizer"] = tokenizer_control(real, xr, songs, bars, tokenizer, seed, repeats)
    say("realism: corpus control (stored pieces against their source files)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the raw files' own tempo-map notes, not ours to report here
        out["controls"]["corpus"] = corpus_control(corpus, held, [str(s) for s in sources], bars, seed, repeats)
    if copy:
        say("realism: copy check against the train split")
        out["copy"] = copy_check(generated, index)
        ref = copy_check(real, index)
        out["copy"]["real_reference"] = {p: {**ref[p], "copied_pieces": [origin[i] for i in ref[p]["copied_pieces"]]}
                                         for p in ("all", "melody")}
    return out
