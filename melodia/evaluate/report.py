"""The report: ``report.md`` (tables, linked pictures and samples) and ``report.json`` (strict
JSON) from :func:`melodia.evaluate.run.evaluate`'s result, written atomically.

Example: ``write_report(result, "eval", real_features, generated_features, samples)``
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..fileio import write_json, write_text
from ..render import render_png, write_midi
from ..values import count
from .figures import plot_confusion, plot_note_lengths, plot_scalar_features, plot_transitions
from .metrics import FEATURES, SCALAR_FEATURES

if TYPE_CHECKING:
    import symusic

__all__ = ["jsonable", "markdown", "percent", "realism_markdown", "write_report", "write_texts"]

#: the metre table's rows: figure -> label
_METRE_LABELS = {"grid16": "onsets on a sixteenth", "on_beat": "onsets on a beat",
                 "rhythm_repetition": "rhythm repetition, consecutive bars (Jaccard)",
                 "bass_downbeat": "bass on the downbeat (lowest note per beat, by duration)",
                 "chord_beats": "beats holding a triad or seventh", "chord_tones": "note time on chord tones",
                 "chord_tones_melody": "… melody (lowest program)",
                 "chord_tones_accompaniment": "… accompaniment (highest of 3+ programs)"}


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _plural(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def percent(x: Any) -> str:
    """A share as a percentage with one decimal, ``–`` for None. Example: ``percent(0.25) == "25.0%"``."""
    return "–" if x is None else f"{100 * x:.1f}%"


def markdown(result: Mapping[str, Any]) -> str:
    """report.md's text for a result that names its figures. Example: ``markdown(result)[:2] == "# "``."""
    lines = (_head(result) + _likelihood_section(result) + _validity_section(result)
             + _real_vs_generated_section(result) + _metre_section(result) + _realism_section(result)
             + _mood_section(result) + _samples_section(result))
    return "\n".join(lines) + "\n"


def _head(result: Mapping[str, Any]) -> list[str]:
    s = result["settings"]
    return [f"# melodia evaluation: `{s['model']}`", "",
            f"Corpus `{s['corpus']}` · n = {s['n']} · {count(s['bars'], 'bar')} · seed {s['seed']} · "
            f"guidance {s.get('guidance') or 'default'} · melodia {s['version']} · "
            f"{result.get('seconds', 0):.0f} s"
            + (" (" + ", ".join(f"{k} {v:.0f} s" for k, v in result["timings"].items()) + ")"
               if result.get("timings") else ""), ""]


def _likelihood_section(result: Mapping[str, Any]) -> list[str]:
    lk = result.get("likelihood") or {}
    lines = ["## Likelihood", ""]
    if lk.get("nats_per_token") is not None:
        lines += [f"On the **{lk['split']}** split ({_plural(lk['pieces'], 'piece')}, {lk['tokens']:,} predicted "
                  f"tokens, {lk['notes']:,} notes, windows of {lk['window']} tokens):", "",
                  "| nats/token | bits/token | perplexity | bits/note |", "|---|---|---|---|",
                  f"| {_fmt(lk['nats_per_token'])} | {_fmt(lk['bits_per_token'])} | "
                  f"{_fmt(lk['perplexity'], 2)} | {_fmt(lk['bits_per_note'], 2)} |", ""]
    else:
        lines += [f"Not measured: {lk.get('reason', 'no held-out tokens')}.", ""]
    return lines


def _validity_section(result: Mapping[str, Any]) -> list[str]:
    s, v = result["settings"], result["validity"]
    lines = ["## Validity", "",
             f"{v['n']} generated sequences: **{percent(v['valid_share'])}** decode without token "
             f"errors, **{percent(v['exact_bars_share'])}** have exactly {count(s['bars'], 'bar')} "
             f"(decoded at all: {percent(v['decoded_share'])}; mean token-error rate "
             f"{_fmt(v['mean_error_rate'], 4)}).", ""]
    by = result.get("validity_by_mood") or {}
    if by:
        lines += ["| requested | n | valid | exact bars |", "|---|---|---|---|"]
        lines += [f"| {m} | {x['n']} | {percent(x['valid_share'])} | {percent(x['exact_bars_share'])} |"
                  for m, x in by.items()]
        lines.append("")
    return lines


def _real_vs_generated_section(result: Mapping[str, Any]) -> list[str]:
    s, rg = result["settings"], result["real_vs_generated"]
    lines = ["## Real vs generated", "",
             f"{rg['n_real']} held-out real excerpts ({_plural(rg['real_pieces'], 'piece')} of the "
             f"{rg['real_split']} split, random {s['bars']}-bar windows) against "
             f"{rg['n_generated']} unconditional generations. Intra/inter: mean pairwise "
             "Euclidean distance within and between the sets; OA: overlapped area of the real "
             "intra-set and the inter-set distance distributions (Gaussian KDE), 1 = the "
             "generations sit among the real pieces as closely as those do among themselves; "
             "KL: their KL divergence; value OA: overlap of the feature values themselves.", "",
             "| feature | real mean ± sd | generated mean ± sd | intra real | intra gen | inter "
             "| OA | KL | value OA |", "|---|---|---|---|---|---|---|---|---|"]
    for name, c in rg["features"].items():
        label = FEATURES[name][1]
        if name in SCALAR_FEATURES:
            rv = f"{_fmt(c['real_mean'])} ± {_fmt(c.get('real_std'))}"
            gv = f"{_fmt(c['generated_mean'])} ± {_fmt(c.get('generated_std'))}"
        else:
            rv = gv = "(see figure)"
        lines.append(f"| {label} | {rv} | {gv} | {_fmt(c['intra_real_mean'])} | "
                     f"{_fmt(c['intra_generated_mean'])} | {_fmt(c['inter_mean'])} | "
                     f"{_fmt(c['overlap'])} | {_fmt(c['kl'])} | {_fmt(c.get('value_overlap'))} |")
    figs = result["figures"]
    lines += ["", f"![feature histograms]({figs['features']})", "",
              f"![note lengths]({figs['note_lengths']})", "",
              f"![pitch-class transitions]({figs['pc_transitions']})", ""]
    return lines


def _metre_section(result: Mapping[str, Any]) -> list[str]:
    me = result.get("metre")
    if not me:
        return []
    moods_ = list(me["by_mood"])
    lines = ["## Metre and harmony", "",
             "Each piece on its own bar lines (real excerpts are cut at bar lines). An onset is "
             "on a sixteenth within 0.025 beat (a tenth of a sixteenth). Chord tones: the real "
             "excerpts' chords are the corpus's (POP909's annotation, else recognised per half "
             f"bar); the generations' are {me['chords_from']}.", "",
             "| figure | real | generated (all) | " + " | ".join(moods_) + " |",
             "|---|---|---|" + "---|" * len(moods_)]
    for k, label in _METRE_LABELS.items():
        cells = [me["real"][k]["mean"], me["generated"][k]["mean"]] + [me["by_mood"][m][k]["mean"] for m in moods_]
        lines.append(f"| {label} | " + " | ".join(_fmt(c) for c in cells) + " |")
    lines.append("")
    return lines


def _auc_cell(res: Mapping[str, Any] | None, name: str) -> str:
    c = (res or {}).get(name) or {}
    return f"{_fmt(c.get('mean'), 2)} ± {_fmt(c.get('sd'), 2)}" if c else "–"


def realism_markdown(realism: Mapping[str, Any]) -> str:
    """The report's realism section (heading, AUC table, feature groups, give-aways, copy check)
    for :func:`melodia.evaluate.realism.realism_report`'s result; the model card prints it too.

    Example: ``print(realism_markdown(realism_report(scores, Path("C"), 16)))``
    """
    return "\n".join(_realism_section({"realism": realism}))


def _realism_section(result: Mapping[str, Any]) -> list[str]:
    r = result.get("realism")
    if not r:
        return []
    t, ctl = r["test"], r["controls"]
    rr, co = ctl.get("real_vs_real") or {}, ctl.get("corpus") or {}
    lines = ["## Realism", "",
             f"Can a classifier tell the generations from real music? {r['generated']['n']} generations "
             f"(the per-mood sets, finished with their mood's dynamics) against {r['real']['excerpts']} "
             f"{r['bars']}-bar excerpts of {_plural(r['real']['songs'], 'held-out song')} ({r['real']['label']}, "
             f"up to {r['real']['per_song']} per song, cut at bar lines), {r['features']} features per piece "
             "(rhythm, repetition, melody, harmony, bass, texture, dynamics; chords recognised from the notes "
             f"on both sides). ROC-AUC on held-out folds ({t['folds']} folds grouped by song × {t['repeats']} "
             "shuffles, mean ± sd over folds): 0.5 = indistinguishable, 1.0 = every generation given away. "
             "The verdict is the higher of the two classifiers.", ""]
    near = r["real"].get("near_duplicates")
    if near:
        dropped = near["dropped"]
        lines += [f"Near-duplicates left out: {len(dropped)} of the {near['checked']} held-out pieces share more "
                  f"than {percent(near['share'])} of their {near['window_bars']}-bar windows (every note, "
                  "transposition-normalised) with one train piece, the same music under two songs' names"
                  + (": " + ", ".join(f"{d['song']} (like {d['like']}, {percent(d['share'])} of "
                                      f"{_plural(d['windows'], 'window')})" for d in dropped) if dropped else "")
                  + ".", ""]
    lines += ["| comparison | logistic | boosting | verdict |", "|---|---|---|---|",
             f"| **generated vs real** | {_auc_cell(t, 'logistic')} | {_auc_cell(t, 'boosting')} | "
             f"**{_fmt(t.get('auc'), 2)}** |",
             f"| control: real vs real (held-out songs split in two halves by song; should be ≤ 0.60) | "
             f"{_auc_cell(rr, 'logistic')} | {_auc_cell(rr, 'boosting')} | {_fmt(rr.get('auc'), 2)} |",
             *([f"| control: real excerpts vs their own token round trip (what the representation loses) | "
                f"{_auc_cell(ctl['tokenizer'], 'logistic')} | {_auc_cell(ctl['tokenizer'], 'boosting')} | "
                f"{_fmt(ctl['tokenizer'].get('auc'), 2)} |"] if ctl.get("tokenizer") else []),
             f"| control: corpus pieces vs their raw source files (what the corpus preparation changes) | "
             f"{_auc_cell(co, 'logistic')} | {_auc_cell(co, 'boosting')} | "
             f"{_fmt(co.get('auc'), 2) if co.get('auc') is not None else co.get('reason', '–')} |", ""]
    groups = r.get("by_group") or {}
    if groups:
        lines += ["Each feature group alone (logistic regression): "
                  + ", ".join(f"{g} {_fmt(v, 2)}" for g, v in groups.items()) + ".", ""]
    lines += ["What gives the generations away most (each feature alone as a score: its AUC, above 0.5 "
              "when the generations run higher):", "",
              "| feature | group | AUC alone | real mean | generated mean |", "|---|---|---|---|---|"]
    lines += [f"| {f['feature']} | {f['group']} | {_fmt(f['auc'], 2)} | {_fmt(f['mean_a'])} | {_fmt(f['mean_b'])} |"
              for f in t.get("top_features") or []]
    lines.append("")
    cp = r.get("copy")
    if cp:
        ref = cp.get("real_reference") or {}
        lines += [f"Copy check: {cp['window_bars']}-bar windows (onset and pitch of every note from the window's "
                  "first bar line, pitches relative to its lowest note, so a transposed copy counts; windows of "
                  f"fewer than {cp['min_notes']} notes not counted) looked up among the windows of "
                  f"{_plural(cp['training_pieces'], 'training piece')} ("
                  + ", ".join(f"{k or '?'} {v}" for k, v in cp["training_sources"].items())
                  + "); the held-out real excerpts are the reference.", "",
                  "| part | windows | copied | share | pieces with a copy | longest verbatim run | real excerpts' share |",
                  "|---|---|---|---|---|---|---|"]
        for part in ("all", "melody"):
            c = cp[part]
            lines.append(f"| {'every note' if part == 'all' else 'melody'} | {c['windows']} | {c['copied']} | "
                         f"{percent(c['copied_share'])} | {c['pieces_with_copy']} | "
                         f"{_plural(c['longest_run_bars'], 'bar')} | {percent((ref.get(part) or {}).get('copied_share'))} |")
        held = (ref.get("all") or {}).get("copied_pieces") or []
        if held:
            lines += ["", "Held-out excerpts with a window found in the train split (the same music under two "
                      "songs' names, or a stock figure): "
                      + ", ".join(f"{h['song']} from bar {h['start_bar'] + 1}" for h in held) + "."]
        lines.append("")
    return lines


def _mood_section(result: Mapping[str, Any]) -> list[str]:
    s, mc = result["settings"], result["mood_control"]
    lines = ["## Mood control", "",
             f"{mc['n']} generations ({s['n']} per mood), labelled by `MoodEstimator`: "
             f"quadrant accuracy **{percent(mc['quadrant_accuracy'])}**, valence "
             f"{percent(mc['valence_accuracy'])}, arousal {percent(mc['arousal_accuracy'])} "
             "(chance: 25%, 50%, 50%).", "",
             "| requested \\ estimated | " + " | ".join(mc["columns"]) + " |",
             "|---|" + "---|" * len(mc["columns"])]
    for label, row in zip(mc["labels"], mc["confusion"]):
        lines.append(f"| **{label}** | " + " | ".join(str(x) for x in row) + " |")
    lines += ["", "Cues per requested mood (means of the estimator's measurements):", "",
              "| set | n | accuracy | major share | onsets/s | mean pitch | tempo qpm | velocity |",
              "|---|---|---|---|---|---|---|---|"]
    rows = list(mc["per_mood"].items()) + list((mc.get("reference") or {}).items())
    for m, x in rows:
        lines.append(f"| {m} | {x['n']} | {percent(x.get('accuracy'))} | {percent(x['major_share'])} | "
                     f"{_fmt(x['onsets_per_second'], 2)} | {_fmt(x['pitch_mean'], 1)} | "
                     f"{_fmt(x['tempo_qpm'], 0)} | {_fmt(x['velocity_mean'], 0)} |")
    lines += ["", f"![mood confusion matrix]({result['figures']['confusion']})", ""]
    return lines


def _samples_section(result: Mapping[str, Any]) -> list[str]:
    samples = result["figures"].get("samples") or {}
    if not samples:
        return []
    lines = ["## Samples", ""]
    for mood, items in samples.items():
        lines += [f"### {mood}", ""]
        for it in items:
            lines += [f"![{mood}]({it['png']}) ([MIDI]({it['mid']}), estimated "
                      f"{it['estimated']})", ""]
    return lines


def write_report(result: dict[str, Any], out_dir: str | os.PathLike,
                 real_features: Sequence[Mapping[str, Any]],
                 generated_features: Sequence[Mapping[str, Any]],
                 samples: Mapping[str, Sequence[tuple["symusic.Score", str]]] | None = None) -> Path:
    """Write ``report.md``, ``report.json`` and the PNGs into ``out_dir``; returns report.md's path.

    ``result`` is :func:`melodia.evaluate.run.evaluate`'s dict without ``figures`` (added here);
    ``samples`` maps a mood to (score, estimated mood) pairs drawn as piano rolls
    (``samples/<mood>-<i>.png``, with the MIDI beside them). Every file is written atomically.

    Example: ``write_report(result, "eval", real_feats, gen_feats, {"calm": [(score, "calm")]})``
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    comparison = result["real_vs_generated"]["features"]
    figures: dict[str, Any] = {
        "features": plot_scalar_features(real_features, generated_features, comparison,
                                         out / "features.png"),
        "note_lengths": plot_note_lengths(comparison, out / "note_lengths.png"),
        "pc_transitions": plot_transitions(comparison, out / "pc_transitions.png"),
        "confusion": plot_confusion(result["mood_control"], out / "mood_confusion.png"),
        "samples": {},
    }
    for mood, items in (samples or {}).items():
        for i, (score, estimated) in enumerate(items):
            stem = f"samples/{mood}-{i + 1}"
            render_png(score, out / f"{stem}.png",
                       title=f"requested {mood} · estimated {estimated} · sample {i + 1}")
            write_midi(score, out / f"{stem}.mid")
            figures["samples"].setdefault(mood, []).append(
                {"png": f"{stem}.png", "mid": f"{stem}.mid", "estimated": estimated})
    result["figures"] = figures
    return write_texts(result, out)


def write_texts(result: dict[str, Any], out: Path) -> Path:
    """report.json and report.md from a result that already names its figures; returns
    report.md's path. Example: ``write_texts(result, Path("eval"))``."""
    write_json(out / "report.json", jsonable(result))
    write_text(out / "report.md", markdown(result))
    return out / "report.md"


def jsonable(x: Any) -> Any:
    """NaN/inf -> None and numpy values -> Python, so report.json is strict JSON.

    Example: ``jsonable({"a": np.float64("nan")}) == {"a": None}``
    """
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x
