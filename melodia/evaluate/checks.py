"""Checks of generated pieces: mood control (requested against estimated mood) and validity
(does a sequence decode, with how many bars).

Example: ``validity_summary([check_sequence(tok, ids, bars=8)[0] for ids in seqs])["valid_share"]``
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadInputError
from ..music.moods import CANONICAL_MOODS, mood_valence_arousal

if TYPE_CHECKING:
    import symusic

    from ..music.mood_estimator import MoodEstimate
    from ..tokenizer import MelodiaTokenizer

__all__ = ["bar_count", "check_sequence", "cue_summary", "mood_control_summary", "validity_summary"]


def mood_control_summary(requested: Sequence[str],
                         estimates: Sequence["MoodEstimate | None"]) -> dict[str, Any]:
    """Accuracy, confusion matrix and cue shifts of the estimated mood per requested mood.

    ``requested[i]`` is a canonical mood; ``estimates[i]`` the :class:`MoodEstimate` of the
    piece generated for it, or None when it had no pitched note (counted as "none", a miss).
    Valence accuracy: estimated valence has the requested sign (0 counts as positive), arousal
    likewise; quadrant accuracy: the estimated mood is the requested one. ``per_mood`` holds,
    per requested mood, the accuracy, ``major_share`` (share of pieces whose estimated key is
    major), mean ``onsets_per_second`` (pieces with a known tempo), mean ``pitch_mean``
    (register), mean ``tempo_qpm`` and mean ``velocity_mean``.

    Example: ``mood_control_summary(["sad"], [MoodEstimator().estimate(s)])["quadrant_accuracy"]``
    """
    if len(requested) != len(estimates):
        raise BadInputError("mood_control_summary: one estimate per requested mood")
    labels = list(CANONICAL_MOODS)
    cols = labels + ["none"]
    confusion = np.zeros((len(labels), len(cols)), dtype=np.int64)
    hits = {"quadrant": [], "valence": [], "arousal": []}
    per: dict[str, dict[str, list]] = {m: {"hit": [], "major": [], "ops": [], "pitch": [],
                                           "tempo": [], "velocity": []} for m in labels}
    for want, est in zip(requested, estimates):
        if want not in labels:
            raise BadInputError(f"mood_control_summary: {want!r} is not one of {labels}")
        v_want, a_want = mood_valence_arousal(want)
        got = est.mood if est is not None else "none"
        confusion[labels.index(want), cols.index(got if got in cols else "none")] += 1
        hit = got == want
        hits["quadrant"].append(hit)
        hits["valence"].append(est is not None and (est.valence >= 0) == (v_want > 0))
        hits["arousal"].append(est is not None and (est.arousal >= 0) == (a_want > 0))
        p = per[want]
        p["hit"].append(hit)
        if est is not None:
            f = est.features
            p["major"].append(f.key.mode == "major")
            p["pitch"].append(f.pitch_mean)
            p["velocity"].append(f.velocity_mean)
            if f.onsets_per_second is not None:
                p["ops"].append(f.onsets_per_second)
            if f.tempo_qpm is not None:
                p["tempo"].append(f.tempo_qpm)

    def mean(x: list) -> float | None:
        return float(np.mean(x)) if x else None

    return {
        "n": len(requested),
        "quadrant_accuracy": mean(hits["quadrant"]),
        "valence_accuracy": mean(hits["valence"]),
        "arousal_accuracy": mean(hits["arousal"]),
        "labels": labels, "columns": cols, "confusion": confusion.tolist(),
        "per_mood": {m: {"n": len(p["hit"]), "accuracy": mean(p["hit"]),
                         "major_share": mean(p["major"]), "onsets_per_second": mean(p["ops"]),
                         "pitch_mean": mean(p["pitch"]), "tempo_qpm": mean(p["tempo"]),
                         "velocity_mean": mean(p["velocity"])}
                     for m, p in per.items() if p["hit"]},
    }


def cue_summary(estimates: Sequence["MoodEstimate | None"]) -> dict[str, Any]:
    """The same cue means as ``per_mood`` of :func:`mood_control_summary`, for a set with no
    requested mood (real excerpts, unconditional generations); None estimates count in ``n`` only.

    Example: ``cue_summary([MoodEstimator().estimate(s) for s in real])["major_share"]  # 0.61``
    """
    ok = [e for e in estimates if e is not None]

    def mean(x: list) -> float | None:
        return float(np.mean(x)) if x else None

    moods: dict[str, int] = {}
    for e in ok:
        moods[e.mood] = moods.get(e.mood, 0) + 1
    return {"n": len(estimates), "estimated_moods": moods,
            "major_share": mean([e.features.key.mode == "major" for e in ok]),
            "onsets_per_second": mean([e.features.onsets_per_second for e in ok
                                       if e.features.onsets_per_second is not None]),
            "pitch_mean": mean([e.features.pitch_mean for e in ok]),
            "tempo_qpm": mean([e.features.tempo_qpm for e in ok if e.features.tempo_qpm is not None]),
            "velocity_mean": mean([e.features.velocity_mean for e in ok])}


def bar_count(tok: "MelodiaTokenizer", ids: Sequence[int], _cache: dict | None = None) -> int:
    """Number of ``Bar_None`` tokens in a sequence (inside BPE ids too); control ids skipped.

    Example: ``bar_count(tok, tok.encode_piece(two_bar_score))  # 2``
    """
    cache = {} if _cache is None else _cache
    count = 0
    for i in tok.strip_controls(ids):
        if i not in cache:
            cache[i] = sum(t == "Bar_None" for t in tok.base_tokens(i))
        count += cache[i]
    return count


def check_sequence(tok: "MelodiaTokenizer", ids: Sequence[int], bars: int | None,
                   _cache: dict | None = None) -> tuple[dict[str, Any], "symusic.Score | None"]:
    """Validity of one generated sequence and its decoded score (None if it does not decode).

    The record: ``decoded`` (MidiTok decodes it), ``errors`` (MidiTok's token-type error
    rate, None if it could not be measured), ``valid`` (decoded and no errors), ``bars``
    (Bar tokens), ``exact_bars`` (equal to ``bars`` asked for), ``notes``, ``tokens``.

    Example: ``check_sequence(tok, ids, bars=8)[0]["valid"]  # True``
    """
    rec: dict[str, Any] = {"tokens": len(ids), "decoded": False, "errors": None, "notes": 0}
    try:
        rec["errors"] = float(tok.count_errors(ids))
    except Exception:  # MidiTok raises many kinds on a garbled sequence
        pass
    score = None
    try:
        score = tok.decode(ids)
        rec["decoded"] = True
        rec["notes"] = int(score.note_num())
    except Exception:
        score = None
    rec["valid"] = bool(rec["decoded"] and rec["errors"] == 0.0)
    try:
        rec["bars"] = bar_count(tok, ids, _cache)
    except Exception:
        rec["bars"] = None
    rec["exact_bars"] = bool(bars is not None and rec["bars"] == bars)
    return rec, score


def validity_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Shares of sequences that decode without token errors and that have the exact bar count.

    Example: ``validity_summary([{"valid": True, "exact_bars": False}])  # valid_share 1.0, exact_bars_share 0.0``
    """
    n = len(records)
    if n == 0:
        return {"n": 0, "valid_share": None, "exact_bars_share": None, "decoded_share": None,
                "mean_error_rate": None}
    errors = [r["errors"] for r in records if r.get("errors") is not None]
    return {"n": n,
            "valid_share": sum(bool(r.get("valid")) for r in records) / n,
            "exact_bars_share": sum(bool(r.get("exact_bars")) for r in records) / n,
            "decoded_share": sum(bool(r.get("decoded", r.get("valid"))) for r in records) / n,
            "mean_error_rate": float(np.mean(errors)) if errors else None}
