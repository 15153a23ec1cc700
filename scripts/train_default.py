#!/usr/bin/env python3
"""Rebuild melodia's shipped default model from nothing: corpus → tokens → training →
mood check → export to ``melodia/weights/default/`` (with its MODEL_CARD.md).

Data: music21's bundled corpus (installed with music21) and POP909 (MIT), read from
``--pop909`` (default ``data/pop909`` in the repository; see data/README.md).

Stages (``--stages``, default all, in this order; each reads what the one before wrote in
``--work``):

* ``corpus``   — ``melodia corpus build music21: POP909 --out WORK/C``
* ``tokenize`` — BPE 4,000 and chunks ≤ 1,024 of the pieces in their own keys, each chunk
                 labelled with its piece's mood → WORK/T0
* ``pretrain`` — the ``small`` preset on WORK/T0 into WORK/run0 (``--pretrain-steps``)
* ``normalise``— the same tokenizer (with ``--init``: that model's), chord tokens and the
                 infilling markers appended, every piece moved to C major / C minor → WORK/T
                 (each chunk with its piece's mood and key: labelling chunks by their own
                 notes, ``tokenize_corpus(chunk_labels=True)``, was tried and not kept; see
                 docs/ARCHITECTURE.md)
* ``train``    — from WORK/run0's weights (or ``--init MODEL``'s), ``--steps`` more on WORK/T
                 into WORK/run; a quarter of the chunks are rearranged to teach infilling
                 (``--balance-moods``: chunks drawn so every mood is read equally often)
                 (both training stages resume if a checkpoint exists, and run on the GPU when
                 there is one: the shards need only torch + numpy)
* ``popshards``— the POP909 pieces alone (``style pop``), with WORK/T's tokenizer and the corpus's
                 splits → WORK/Tpop
* ``finetune`` — from WORK/run's weights (or ``--finetune-init``'s) on WORK/Tpop into WORK/run_pop, until its (POP909)
                 validation loss has not improved for ``--patience`` evaluations (or
                 ``--finetune-steps``); the best weights are kept. The stages after it measure
                 and export WORK/run_pop/model when it exists, else WORK/run/model
* ``baseline`` — the same preset from scratch on WORK/T for a tenth of all the steps
                 (pretrain + train), into WORK/run_tenth
* ``compare``  — the ``tiny`` preset from scratch on WORK/T for ``--compare-minutes`` of wall
                 time into WORK/run_tiny: its validation loss against the train stage's at the
                 same wall time decides which preset ships (printed, kept for the card)
* ``moods``    — 64 samples of 16 bars per mood (``--samples``) from the weights rounded to bfloat16 (as they
                 ship); the mood estimator's agreement and the happy/sad feature shifts
                 (printed as a table, with each set of 32 on its own, kept for the card)
* ``metre``    — 16 samples × 4 moods × 16 bars against 64 real 16-bar POP909 excerpts cut at
                 downbeats: onsets on a sixteenth and on a beat, bar-to-bar rhythm repetition,
                 bass on the downbeat, beats holding a chord, chord-tone share (for the card)
* ``realism``  — 16 samples × 4 moods × 16 bars as ``Composer.generate`` writes them against
                 excerpts of the held-out POP909 songs: a classifier's ROC-AUC, its controls and
                 the copy check against the train split (``melodia.evaluate.realism``; for the card)
* ``controls`` — the controls a user asks for (``scripts/measure_controls.py``): chord-tone
                 share with chords asked for, form repeats, infill, velocity per mood (for the card)
* ``export``   — weights in bfloat16, tokenizer.json, melodia.json and MODEL_CARD.md into
                 ``melodia/weights/default/`` (≤ 16 MB)

Why two training stages: a model that reads pieces in all 24 keys learns each key from its
own few pieces and wrote minor requests in the relative major; moved to C, the 12 keys of a
mode teach one thing, and decoding moves the notes to the key asked for (docs/ARCHITECTURE.md).
The pretraining in all keys was done first because it was what the project had; the second
stage is what taught the model the modes.

Usage:
    python scripts/train_default.py --work /tmp/melodia-default [--steps 1500] [--stages ...]

The shipped model was built with the defaults below on 2 CPU cores; see its MODEL_CARD.md
for the steps and wall times.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STAGES = ("corpus", "tokenize", "pretrain", "normalise", "train", "popshards", "finetune", "baseline", "compare", "moods",
          "metre", "realism", "controls", "export")
DEFAULT_OUT = ROOT / "melodia" / "weights" / "default"
STEPS = 750


def _stamp(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stage_corpus(a) -> None:
    from melodia.corpus import build_corpus

    sources = ["music21:"]
    if Path(a.pop909).exists():
        sources.append(a.pop909)
    else:
        _stamp(f"POP909 not found at {a.pop909}: music21's corpus only")
    s = build_corpus(sources, a.work / "C")
    _stamp(f"corpus: {s.pieces} pieces, {s.skipped} skipped")


def stage_tokenize(a) -> None:
    from melodia.shards import tokenize_corpus

    # each chunk keeps its piece's mood here: that is what the shipped pretraining read
    s = tokenize_corpus(a.work / "C", a.work / "T0", vocab_size=a.vocab, max_len=a.max_len, key_normalise=False,
                        chunk_labels=False)
    _stamp(f"tokens (own keys): {s.tokens}")


def stage_normalise(a) -> None:
    from melodia.shards import tokenize_corpus

    base = Path(a.init) / "tokenizer.json" if a.init else a.work / "T0" / "tokenizer.json"
    s = tokenize_corpus(a.work / "C", a.work / "T", max_len=a.max_len, tokenizer=base,
                        key_normalise=True, chunk_labels=False)
    _stamp(f"tokens (moved to C): {s.tokens}")


def _train(a, data: Path, out: Path, steps: int, init: Path | None = None, balance: bool = False,
           preset: str = "small", max_minutes: float = 0.0, lr: float | None = None, patience: int = 0) -> None:
    from melodia.train import TrainConfig, train

    resume = (out / "checkpoint" / "state.json").exists()
    cfg = TrainConfig(data=str(data), out=str(out), preset=None if init else preset,
                      init=str(init) if init else None, steps=steps,
                      batch_size=a.batch_size, lr=lr or a.lr, patience=patience, warmup=max(1, min(a.warmup, steps // 10)),
                      eval_every=max(1, min(a.eval_every, steps)), eval_batches=a.eval_batches,
                      ckpt_every=a.ckpt_every, log_every=5, threads=a.threads, device=a.device,
                      balance_moods=balance, resume=resume, max_minutes=max_minutes or a.max_minutes)
    t = time.time()
    train(cfg)
    _stamp(f"trained {out} in {time.time() - t:.0f} s")


def stage_pretrain(a) -> None:
    _train(a, a.work / "T0", a.work / "run0", a.pretrain_steps)


def stage_train(a) -> None:
    init = Path(a.init) if a.init else a.work / "run0" / "model"
    _train(a, a.work / "T", a.work / "run", a.steps, init=init, balance=a.balance_moods)


def stage_popshards(a) -> None:
    from melodia.shards import tokenize_corpus

    s = tokenize_corpus(a.work / "C", a.work / "Tpop", max_len=a.max_len, tokenizer=a.work / "T" / "tokenizer.json",
                        styles=["pop"])
    _stamp(f"tokens (POP909 alone): {s.tokens}")


def stage_finetune(a) -> None:
    _train(a, a.work / "Tpop", a.work / "run_pop", a.finetune_steps,
           init=Path(a.finetune_init) if a.finetune_init else a.work / "run" / "model",
           lr=a.finetune_lr, patience=a.patience)


def final_run(a) -> Path:
    """The run the measuring and export stages read: the POP909 fine-tune when there is one."""
    return a.work / "run_pop" if (a.work / "run_pop" / "model" / "melodia.json").exists() else a.work / "run"


def stage_compare(a) -> None:
    """The tiny preset from scratch for the same wall time: which preset learns more per second."""

    out = a.work / "run_tiny"
    _train(a, a.work / "T", out, a.compare_steps, preset="tiny", max_minutes=a.compare_minutes)
    res = compare_presets(a.work / "run", out)
    (a.work / "compare.json").write_text(json.dumps(res, indent=1))
    _stamp(f"compare: {res}")


def _val_curve(run: Path) -> list[tuple[float, float]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [(r.get("time_s", 0.0), r["val_loss"]) for r in rows if "val_loss" in r]


def compare_presets(run_small: Path, run_tiny: Path) -> dict:
    """Validation loss of each run at the tiny run's last validation's wall time."""
    tiny = _val_curve(run_tiny)
    small = _val_curve(run_small)
    if not tiny or not small:
        return {"note": "a run has no validation"}
    t_end = tiny[-1][0]
    small_at = [v for t, v in small if t <= t_end + 1]
    return {"wall_s": round(t_end, 1), "tiny_val": round(min(v for _, v in tiny), 4),
            "small_val_same_time": round(min(small_at), 4) if small_at else None,
            "small_val_final": round(min(v for _, v in small), 4)}


def stage_baseline(a) -> None:
    _train(a, a.work / "T", a.work / "run_tenth", max(1, (a.pretrain_steps + a.steps) // 10),
           balance=a.balance_moods)


def _final_val(run: Path) -> tuple[float | None, dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    vals = [r for r in rows if "val_loss" in r]
    steps = [r for r in rows if "tokens" in r]
    return (min(r["val_loss"] for r in vals) if vals else None), (steps[-1] if steps else {})


def finetune_summary(work: Path) -> dict:
    """The POP909 fine-tune (WORK/run_pop) for the card: its validation loss on POP909 at its
    start (the weights it began from) and at its best, steps, tokens, epochs, and why it stopped."""
    rows = [json.loads(x) for x in (work / "run_pop" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    vals = [r for r in rows if "val_loss" in r]
    steps = [r for r in rows if "tokens" in r]
    t = json.loads((work / "run_pop" / "model" / "melodia.json").read_text()).get("training") or {}
    index = json.loads((work / "Tpop" / "index.json").read_text())
    best = min(vals, key=lambda r: r["val_loss"]) if vals else {}
    return {"val_start": vals[0]["val_loss"] if vals else None, "val_best": best.get("val_loss"),
            "best_step": best.get("step"), "evals": [(r["step"], round(r["val_loss"], 4)) for r in vals],
            "steps": t.get("steps_done"), "tokens": t.get("tokens_seen"),
            "epochs": (t.get("tokens_seen") or 0) / max(1, index["splits"]["train"]["tokens"]),
            "train_tokens": index["splits"]["train"]["tokens"], "valid_tokens": index["splits"]["valid"]["tokens"],
            "stopped_early": t.get("stopped_early"), "patience": t.get("patience"), "lr": t.get("lr"),
            "eval_every": t.get("eval_every"), "last": steps[-1] if steps else {}}


def tempo_unknown(work: Path, tokenizer_json: Path) -> dict:
    """``corpus.tempo_unknown_token`` of WORK/C with this tokenizer's Tempo tokens."""
    from melodia.corpus import load_manifest, tempo_unknown_token
    from melodia.tokenizer import tempo_tokens

    return tempo_unknown_token(load_manifest(work / "C"), tempo_tokens(tokenizer_json))


def default_programs(work: Path) -> list[int]:
    """The instrument set the model saw most as an ensemble (``corpus.ensemble_programs`` of
    WORK/C: POP909's melody, counter-melody and piano, 0, 1, 2). Written into melodia.json, it
    is what ``melodia generate`` plays when asked for no instruments."""
    from melodia.corpus import ensemble_programs, load_manifest

    return ensemble_programs(load_manifest(work / "C")) or [0, 1]


def stage_moods(a) -> None:
    import numpy as np

    from melodia.generate import GenerationConfig, Generator, shape_dynamics
    from melodia.model import load_model_dir
    from melodia.music.mood_estimator import MoodEstimator
    from melodia.music.moods import CANONICAL_MOODS, mood_valence_arousal
    from melodia.tokenizer import MelodiaTokenizer

    model_dir = final_run(a) / "model"
    model, meta = load_model_dir(model_dir)
    import torch

    with torch.no_grad():  # measure the weights that ship: rounded to bfloat16 as export writes them
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(p.dtype))
    tok = MelodiaTokenizer.load(model_dir / "tokenizer.json")
    gen = Generator(model, tok, default_programs=default_programs(a.work),
                    tempo_unknown=tempo_unknown(a.work, model_dir / "tokenizer.json")["token"])
    est = MoodEstimator()
    table = {}
    t0 = time.time()
    for mood in CANONICAL_MOODS:
        rows = []
        for b in range(0, a.samples, 16):
            n = min(16, a.samples - b)
            for sc in gen.generate_scores(GenerationConfig(mood=mood, bars=16, n=n, seed=a.seed + b)):
                e = est.estimate(sc, tempo_known=True)
                f = e.features
                # as melodia generate writes it: velocities shaped by the mood (dynamics "mood")
                shaped = est.estimate(shape_dynamics(sc, mood_valence_arousal(mood)[1]), tempo_known=True)
                rows.append((e.mood, f.mode == "major", f.onsets_per_second or 0.0, f.pitch_mean, shaped.mood,
                             f.velocity_mean))
        agree = float(np.mean([r[0] == mood for r in rows]))
        halves = [rows[:32], rows[32:]] if len(rows) > 32 else [rows]
        table[mood] = {
            "samples": len(rows), "agreement": round(agree, 3),
            # 32 at a time as well: the measure, and how far two sets of 32 disagree
            "agreement_by_32": [round(float(np.mean([r[0] == mood for r in h])), 3) for h in halves if h],
            "major_share": round(float(np.mean([r[1] for r in rows])), 3),
            "onsets_per_s": round(float(np.mean([r[2] for r in rows])), 2),
            "mean_pitch": round(float(np.mean([r[3] for r in rows])), 1),
            "estimated": {m: sum(r[0] == m for r in rows) for m in CANONICAL_MOODS},
            "agreement_shaped": round(float(np.mean([r[4] == mood for r in rows])), 3),
            "velocity_mean": round(float(np.mean([r[5] for r in rows])), 1),
        }
        _stamp(f"{mood}: {table[mood]}")
    res = {"table": table, "seconds": round(time.time() - t0, 1), "bars": 16, "seed": a.seed}
    (a.work / "moods.json").write_text(json.dumps(res, indent=1))
    print(mood_table_md(res))


def stage_metre(a) -> None:
    """Metre and harmony of 16 samples × 4 moods × 16 bars against 64 real POP909 excerpts."""
    import numpy as np

    from melodia.corpus import load_manifest
    from melodia.evaluate import excerpt, load_piece, metre_harmony, metre_summary, note_bars
    from melodia.generate import GenerationConfig, Generator
    from melodia.model import load_model_dir
    from melodia.music.moods import CANONICAL_MOODS
    from melodia.tokenizer import MelodiaTokenizer

    model_dir = Path(a.metre_model) if a.metre_model else final_run(a) / "model"
    model, _ = load_model_dir(model_dir)
    tok = MelodiaTokenizer.load(model_dir / "tokenizer.json")
    gen = Generator(model, tok, default_programs=default_programs(a.work),
                    tempo_unknown=tempo_unknown(a.work, model_dir / "tokenizer.json")["token"])
    from melodia.music.mood_estimator import MoodEstimator

    figs: dict = {}
    agree: dict = {}
    for mood in CANONICAL_MOODS:
        cfg = GenerationConfig(mood=mood, bars=16, n=16, seed=a.seed)
        seqs = gen.generate(cfg)
        scores = [tok.decode(ids) for ids in seqs]
        figs[mood] = [metre_harmony(sc, tok.chords(ids) if tok.has_chords else None) for ids, sc in zip(seqs, scores)]
        agree[mood] = sum(MoodEstimator().estimate(sc, tempo_known=True).mood == mood for sc in scores)
    rows = [r for r in load_manifest(a.work / "C") if r["source"] == "pop909" and r["split"] != "train"]
    rng = np.random.default_rng(a.seed)
    real = []
    for i in rng.permutation(len(rows))[:64]:
        sc = load_piece(a.work / "C", rows[int(i)])
        n_bars = len(note_bars(sc)) - 1
        real.append(metre_harmony(excerpt(sc, int(rng.integers(0, max(n_bars - 16, 0) + 1)), 16)))
    res = {"generated": metre_summary([f for fs in figs.values() for f in fs]),
           "by_mood": {m: metre_summary(fs) for m, fs in figs.items()},
           "real_pop909": metre_summary(real), "model": str(model_dir),
           "mood_agreement": {**agree, "all": round(sum(agree.values()) / (16 * len(agree)), 3)}}
    (a.work / "metre.json").write_text(json.dumps(res, indent=1))
    print(metre_table_md(res))
    print(f"mood agreement on these samples: {res['mood_agreement']}")


REALISM_CASES = {  # name: (style, generate() settings, pieces per mood); the first is the card's headline
    "default": (None, {}, 16),
    "dynamics_flat": (None, {"dynamics": "flat"}, 16),
    "chromatic": (None, {"in_key": False}, 8),
    "folk": ("folk", {}, 8),
    "chorale": ("chorale", {}, 8),
}


def realism_cases(composer, corpus: Path, seed: int, threads: int, cases=tuple(REALISM_CASES), say=_stamp,
                  sources: tuple = ()) -> dict:
    """The realism check of one model in each of ``cases`` (:data:`REALISM_CASES`): pieces of
    16 bars, an equal number per mood (happy, tense, sad, calm), as ``Composer.generate`` writes
    them with those settings, against the held-out excerpts of the case's style (pop: POP909),
    sharing one train index (``sources``: where the corpus control finds the raw POP909 files). "default" is "dynamics_flat"'s notes with the mood's dynamics
    (``dynamics="mood"`` shapes a piece so after sampling: the same notes, one sampling). A style
    the model does not know is skipped (named in the result)."""
    import torch

    from melodia.evaluate.copycheck import CopyIndex
    from melodia.evaluate.realism import realism_report
    from melodia.evaluate.report import jsonable
    from melodia.generate import shape_dynamics
    from melodia.generate.arrange import dynamics_level
    from melodia.music.moods import CANONICAL_MOODS

    torch.set_num_threads(threads)
    index = CopyIndex.of_corpus(corpus)
    out: dict = {}
    flat: dict[str, list] = {}  # mood -> the flat pieces "default" and "dynamics_flat" share
    for name in cases:
        style, settings, n = REALISM_CASES[name]
        if style and style not in composer.styles:
            out[name] = {"skipped": f"the model knows no style {style!r}"}
            continue
        t0 = time.time()
        scores = []
        for k, mood in enumerate(CANONICAL_MOODS):
            if name in ("default", "dynamics_flat"):
                if mood not in flat:
                    flat[mood] = [p.to_score() for p in composer.generate(mood=mood, bars=16, n=n, seed=seed + 100 + k,
                                                                          dynamics="flat")]
                level = dynamics_level("mood", mood, None)
                scores += flat[mood] if name == "dynamics_flat" else [shape_dynamics(s, level) for s in flat[mood]]
            else:
                scores += [p.to_score() for p in composer.generate(mood=mood, bars=16, n=n, seed=seed + 100 + k,
                                                                   **settings, **({"style": style} if style else {}))]
        say(f"realism {name}: {len(scores)} pieces in {time.time() - t0:.0f} s")
        res = realism_report(scores, corpus, 16, seed=seed, style=style, say=say, index=index,
                             sources=list(sources) or None, tokenizer=composer.tokenizer)
        res["settings"], res["seconds"] = {"style": style, **settings}, round(time.time() - t0, 1)
        out[name] = jsonable(res)
        say(f"realism {name}: AUC {res['test']['auc']:.2f}")
    return out


def stage_realism(a) -> None:
    """Can a classifier tell 16-bar samples of each mood from held-out real excerpts? For the
    model in each of ``--realism-cases`` (:data:`REALISM_CASES`) and, with ``--realism-baseline``,
    the model shipped before (default settings). Results are merged into WORK/realism.json, so
    two runs with different cases can share the two cores."""
    import fcntl

    from melodia import Composer
    from melodia.evaluate.report import realism_markdown
    from melodia.fileio import write_json

    cases = [c.strip() for c in a.realism_cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(REALISM_CASES))
    if unknown:
        raise SystemExit(f"unknown realism case(s) {', '.join(unknown)}; cases: {', '.join(REALISM_CASES)}")
    res = realism_cases(Composer.load(a.metre_model or final_run(a) / "model"), a.work / "C", a.seed, a.threads,
                        cases, sources=(a.pop909,)) if cases else {}
    if a.realism_baseline:
        res["baseline"] = realism_cases(Composer.load(a.realism_baseline), a.work / "C", a.seed, a.threads,
                                        cases=("default",), sources=(a.pop909,))["default"]
        res["baseline"]["model"] = str(a.realism_baseline)
    path = a.work / "realism.json"
    with open(a.work / "realism.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = json.loads(path.read_text()) if path.exists() else {}
        merged = merged if "test" not in merged else {}  # an older single-case file: replaced
        merged.update(res)
        write_json(path, merged)
    if "default" in res:
        print(realism_markdown(res["default"]))
    print(realism_table_md(merged))


CASE_LABELS = {"baseline": "the model shipped before, default settings", "default": "this model, default settings",
               "dynamics_flat": "this model, `dynamics=\"flat\"` (its own velocities)",
               "chromatic": "this model, `in_key=False` (no scale mask)", "folk": "this model, `style=\"folk\"`",
               "chorale": "this model, `style=\"chorale\"`"}


def realism_table_md(res: dict) -> str:
    """One row per realism case: AUC, its control, the copy check."""
    rows = ["| generations (16 bars, as many happy, tense, sad and calm) | pieces | against held-out | AUC | "
            "real vs real | 4-bar windows copied | longest verbatim run |", "|---|---|---|---|---|---|---|"]
    for name in ("baseline", *REALISM_CASES):
        r = res.get(name)
        if not r:
            continue
        if "skipped" in r:
            rows.append(f"| {CASE_LABELS[name]} | – | – | skipped: {r['skipped']} | | | |")
            continue
        cp = (r.get("copy") or {}).get("all") or {}
        rr = r["controls"].get("real_vs_real") or {}
        rows.append(f"| {CASE_LABELS[name]} | {r['generated']['n']} | {r['real']['excerpts']} excerpts of {r['real']['songs']} songs "
                    f"({r['real']['label']}) | **{r['test']['auc']:.2f}** | {rr.get('auc', float('nan')):.2f} | "
                    f"{cp.get('copied', '?')} of {cp.get('windows', '?')} ({(cp.get('copied_share') or 0):.1%}) | "
                    f"{cp.get('longest_run_bars', '?')} bars |")
    return "\n".join(rows) + "\n"


def metre_table_md(res: dict) -> str:
    names = {"grid16": "onsets on a sixteenth", "on_beat": "onsets on a beat",
             "rhythm_repetition": "rhythm repetition (consecutive bars)", "bass_downbeat": "bass on the downbeat",
             "chord_beats": "beats holding a triad/seventh", "chord_tones": "note time on chord tones",
             "chord_tones_melody": "… melody", "chord_tones_accompaniment": "… accompaniment"}
    moods = list(res["by_mood"])
    lines = ["| figure | real POP909 (64 excerpts) | generated (64) | " + " | ".join(moods) + " |",
             "|---|---|---|" + "---|" * len(moods)]
    fmt = (lambda v: "–" if v is None else f"{v:.2f}")
    for k, label in names.items():
        cells = [res["real_pop909"][k]["mean"], res["generated"][k]["mean"]] + [res["by_mood"][m][k]["mean"] for m in moods]
        lines.append(f"| {label} | " + " | ".join(fmt(c) for c in cells) + " |")
    return "\n".join(lines)


def mood_table_md(res: dict) -> str:
    seed = res.get("seed", 0)
    lines = [f"| requested | samples | estimator agrees | of seeds {seed}–{seed + 31} | of seeds {seed + 32}–{seed + 63} "
             "| agrees, mood dynamics | major share | onsets/s | mean pitch | velocity | estimated as (happy/tense/sad/calm) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, r in res["table"].items():
        e = r["estimated"]
        by = [f"{x:.0%}" for x in r.get("agreement_by_32", [])] + ["–", "–"]
        shaped = f"{r['agreement_shaped']:.0%}" if "agreement_shaped" in r else "–"
        lines.append(f"| {m} | {r['samples']} | {r['agreement']:.0%} | {by[0]} | {by[1]} | {shaped} | "
                     f"{r['major_share']:.0%} | {r['onsets_per_s']} | "
                     f"{r['mean_pitch']} | {r.get('velocity_mean', '–')} | {e['happy']}/{e['tense']}/{e['sad']}/{e['calm']} |")
    return "\n".join(lines)


def stage_controls(a) -> None:
    """Chords, form, infill and dynamics as a user asks for them (scripts/measure_controls.py)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import torch
    from measure_controls import controls_md, measure

    from melodia import Composer

    torch.set_num_threads(a.threads)
    figs = measure(Composer.load(a.metre_model or final_run(a) / "model"), n=8, seed=a.seed + 1)
    (a.work / "controls.json").write_text(json.dumps(figs, indent=1))
    print(controls_md(figs))


def stage_export(a) -> None:
    import shutil

    import torch

    from melodia.model import count_parameters, load_model_dir, save_model_dir

    src = final_run(a) / "model"
    model, meta = load_model_dir(src)
    val, last = _final_val(a.work / "run")
    finetune = finetune_summary(a.work) if src.parent.name == "run_pop" else None
    val0, last0 = _final_val(a.work / "run0") if (a.work / "run0" / "metrics.jsonl").exists() else (None, {})
    val10, _ = _final_val(a.work / "run_tenth") if (a.work / "run_tenth").exists() else (None, {})
    moods = json.loads((a.work / "moods.json").read_text()) if (a.work / "moods.json").exists() else None
    metre = json.loads((a.work / "metre.json").read_text()) if (a.work / "metre.json").exists() else None
    realism = json.loads((a.work / "realism.json").read_text()) if (a.work / "realism.json").exists() else None
    compare = json.loads((a.work / "compare.json").read_text()) if (a.work / "compare.json").exists() else None
    history = None
    if a.init:  # the model this run started from: its own training, from its melodia.json
        import hashlib

        init_meta = json.loads((Path(a.init) / "melodia.json").read_text())
        dm = init_meta.get("default_model") or {}
        history = {"sha256": hashlib.sha256((Path(a.init) / "model.safetensors").read_bytes()).hexdigest(),
                   "pretrained": dm.get("pretrained"), "trained": dm.get("trained"), "val_loss": dm.get("val_loss"),
                   "train_tokens": (dm.get("corpus") or {}).get("train_tokens")}
    index = json.loads((a.work / "T" / "index.json").read_text())
    report = json.loads((a.work / "C" / "report.json").read_text())
    meta = dict(meta)
    meta.setdefault("corpus", {})
    if isinstance(meta["corpus"], dict):
        meta["corpus"].pop("data", None)  # no build paths inside the package
    if isinstance(meta.get("training"), dict):
        for k in ("data", "out", "init"):
            meta["training"].pop(k, None)
    meta["default_programs"] = default_programs(a.work)
    unknown = tempo_unknown(a.work, src / "tokenizer.json")
    meta["tempo_unknown"] = unknown["token"]
    meta["default_model"] = {
        "val_loss": val, "val_loss_tenth_steps": val10, "moods": moods,
        "corpus": {"pieces": report["pieces"], "sources": ["music21 corpus", "POP909"],
                   "train_tokens": index["splits"]["train"]["tokens"]},
        "trained": last, "pretrained": {**last0, "val_loss": val0} if last0 else None,
        "tempo_unknown": unknown,
        "hardware": a.hardware or f"{platform.processor() or platform.machine()}, CPU",
        "metre": metre, "realism": realism, "preset_comparison": compare, "started_from": history,
        "finetune": finetune,
    }
    if history:
        meta["default_model"]["pretrained"] = None
    out = Path(a.out)
    tmp = out.parent / (out.name + ".new")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model_dir(model, tmp, src / "tokenizer.json", meta, dtype=torch.bfloat16)
    card = model_card(meta, count_parameters(model), moods, val, val10, index, report, a)
    (tmp / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    for extra in ("generation_config.json",):
        (tmp / extra).unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    _stamp(f"exported to {out} ({size:.1f} MB)")


def model_card(meta, params, moods, val, val10, index, report, a) -> str:
    tr = meta["default_model"]["trained"]
    pre = meta["default_model"].get("pretrained") or {}
    t = meta.get("training") or {}  # the run's own settings, as its model directory recorded them
    ft = meta["default_model"].get("finetune")
    if ft:  # the shipped weights are the fine-tune's; the lines below describe the run before it
        t = json.loads((a.work / "run" / "model" / "melodia.json").read_text()).get("training") or {}
    t0 = index_tokens0 = None
    if (a.work / "T0" / "index.json").exists():
        index_tokens0 = json.loads((a.work / "T0" / "index.json").read_text())["splits"]["train"]["tokens"]
    if pre:
        t0 = (f"**1. Pretraining** on the pieces in their own keys (stage `pretrain`): {pre.get('step', '?')} steps "
              f"from scratch, {pre.get('tokens', 0):,} target tokens"
              + (f" ({pre.get('tokens', 0) / index_tokens0:.2f} epochs)" if index_tokens0 else "")
              + f", {pre.get('time_s', '?')} s; validation loss {pre['val_loss']:.3f} nats/token on its own"
              f" shards.\n\n**2. Training on the pieces moved to C** (stage `train`), from those weights:\n\n")
    hist = meta["default_model"].get("started_from")
    if hist:
        hp, ht = hist.get("pretrained") or {}, hist.get("trained") or {}
        t0 = (f"**1–2. The model it started from** (the previous default, weights sha256 `{hist['sha256'][:12]}…`, "
              f"built by this script before bar lines and chords): {hp.get('step', '?')} steps from scratch on the "
              f"pieces in their own keys ({hp.get('time_s', '?')} s), then {ht.get('step', '?')} steps on the pieces "
              f"moved to C ({ht.get('time_s', '?')} s; validation loss {hist.get('val_loss') or float('nan'):.3f} on "
              f"those shards), both on the corpus read on the MIDI tempo grid with pickups as bar 1.\n\n"
              f"**3. This retrain** (stage `train --init`), from those weights, on the corpus with real bar lines, "
              f"chord tokens and infilling rows" + (", and new style and section tokens" if ft else "") + ":\n\n")
    cmp_ = meta["default_model"].get("preset_comparison")
    cmp_note = ""
    if cmp_ and cmp_.get("tiny_val") is not None:
        lead = "the smaller model led" if cmp_["tiny_val"] < (cmp_["small_val_same_time"] or 1e9) else "this run led"
        cmp_note = (f"\n* Presets compared at equal wall time (stage `compare`): the `tiny` preset (0.36 M"
                    f" parameters, 512-token windows) from scratch on the same shards reached validation loss"
                    f" {cmp_['tiny_val']:.3f} in {cmp_['wall_s'] / 60:.0f} minutes; this run's best validation by"
                    f" then was {cmp_['small_val_same_time']:.3f} (its first, as its new chord tokens were still"
                    f" being learned), {cmp_['small_val_final']:.3f} at the end. So at {cmp_['wall_s'] / 60:.0f} minutes"
                    f" {lead}; the tiny run was not taken to this run's full wall time, so the measurement does not"
                    f" settle the preset, and `small` is kept because it carries the previous model's weights.")
    tenth_note = (f"; the same preset trained from scratch on the same shards for a tenth of all the steps:"
                  f" {val10:.3f} nats/token" if val10 is not None else "")
    metre = meta["default_model"].get("metre")
    metre_md = metre_table_md(metre) if metre else "_Not measured._"
    realism = meta["default_model"].get("realism")
    if realism:
        from melodia.evaluate.report import realism_markdown
    if realism and "default" in realism:  # one check per case (stage realism): the table, then the headline's detail
        realism_md = ("## Realism (measured by the script)\n\n" + realism_table_md(realism) + "\n"
                      + realism_markdown(realism["default"]).replace("## Realism", "### This model, default settings"))
    else:
        realism_md = realism_markdown(realism).replace("## Realism", "## Realism (measured by the script)") \
            if realism else "## Realism\n\n_Not measured._"
    controls = json.loads((a.work / "controls.json").read_text()) if (a.work / "controls.json").exists() else None
    if controls:
        sys.path.insert(0, str(ROOT / "scripts"))
        from measure_controls import controls_md
    controls_section = controls_md(controls) if controls else "_Not measured._"
    ma = (metre or {}).get("mood_agreement")
    agree_md = (f"\nThe mood estimator reads {ma['all']:.0%} of these 64 samples as the mood asked for "
                f"(happy {ma['happy']}, tense {ma['tense']}, sad {ma['sad']}, calm {ma['calm']} of 16).\n") if ma else ""
    listen = Path(a.listening).read_text(encoding="utf-8") if a.listening else "_Not yet done._"
    limits = Path(a.limits).read_text(encoding="utf-8") if a.limits else "_Not written._"
    epochs = tr.get("tokens", 0) / max(1, index["splits"]["train"]["tokens"])
    chunk_note = (": in the training on pieces moved to C each chunk (≤ 1,024 tokens, a passage of a song)"
                  " carries the mood estimated from its own notes"
                  + (", in the pretraining the mood of its whole piece" if pre else "")) if index.get("chunk_labels") else ""
    unk = meta["default_model"].get("tempo_unknown") or {}
    tempo_note = textwrap.fill(
        f"* Tempo: {unk['tempo_less']:,} of the {unk['pieces']:,} pieces whose tempo falls in the bin of"
        f" 120 qpm (`{unk['token']}`) have no tempo of their own (music21 and abc2midi write 120"
        f" then), so melodia.json names it `tempo_unknown`: generation keeps it out of the moods'"
        f" tempo bands and reads an explicit 120 as the nearest other bin.", width=98,
        subsequent_indent="  ") + "\n" if unk.get("token") else ""
    balance_note = ("; chunks drawn so that each of the four moods is read equally often"
                    if t.get("balance_moods") else "")
    sec = report.get("sections") or {}
    from collections import Counter

    from melodia.corpus import load_manifest
    styles = Counter(r.get("style") or "none" for r in load_manifest(a.work / "C"))
    styles_md = ""
    if index.get("style_ids"):
        styles_md = textwrap.fill(
            "* Styles: each piece's source gives it a `STYLE_` token after its key ("
            + ", ".join(f"{k} {v:,}" for k, v in sorted(styles.items(), key=lambda kv: -kv[1]))
            + " pieces; pop = POP909, folk = the ABC collections, chorale = Bach, classical = the rest)."
            + (f" Sections: POP909's human phrase labels (`data/pop909-structure`, MIT) aligned to the bar"
               f" lines on {sec.get('pieces', 0)} of {sec.get('labelled', 0)} songs (the rest did not fit and"
               f" are skipped), one `SECTION_` token where each phrase starts (docs/corpus.md)." if sec else ""),
            width=98, subsequent_indent="  ") + "\n"
    ft_md = ""
    if ft:
        why = (f"its POP909 validation loss had not improved for {ft['patience']} evaluations"
               if ft["stopped_early"] else "its wall-time limit (the loss had not yet stopped falling)")
        ft_md = (f"\n**4. Fine-tune on POP909 alone** (stages `popshards`, `finetune`), from those weights: the "
                 f"POP909 pieces with the same tokenizer and splits ({ft['train_tokens']:,} training tokens, "
                 f"{ft['valid_tokens']:,} validation tokens), peak lr {ft['lr']}, validation every "
                 f"{ft['eval_every']} steps; {ft['steps']} steps, {ft['tokens']:,} target tokens "
                 f"({ft['epochs']:.2f} epochs), stopped by {why}. POP909 validation loss "
                 f"{ft['val_start']:.3f} → {ft['val_best']:.3f} nats/token (best, at step {ft['best_step']}; "
                 f"each evaluation: {', '.join(f'{st}: {v:.3f}' for st, v in ft['evals'])}). These are the "
                 f"shipped weights.\n")
    return f"""# melodia default model

A {params / 1e6:.2f} M-parameter Llama-style causal Transformer (preset `small`: 6 layers,
d_model 320, RoPE) over MidiTok REMI + BPE tokens with mood, key, chord and tag control tokens.
Weights in bfloat16 (safetensors). Rebuilt by `python scripts/train_default.py`.

## Data and licences

* music21's bundled corpus (BSD-licensed toolkit; the works are public domain or distributed
  with music21 under its licence): ABC folk collections, Bach chorales, Palestrina, Monteverdi,
  Beethoven/Mozart/Haydn quartets and more.
* POP909 (MIT, © 2020 Music X Lab): 909 Chinese pop songs, melody + bridge + piano, read on
  their annotated beats with their annotated keys and chords (`data/pop909`).
* Bar lines are the music's: pickups padded to a full bar; chords annotated (POP909) or
  recognised per half bar (the rest), one `Chord_<root>:<quality>` token at each change; a
  quarter of the training chunks rearranged to teach infilling (docs/corpus.md).
{styles_md}* {report['pieces']:,} pieces after deduplication; {index['splits']['train']['tokens']:,} training
  tokens, {index['splits']['valid']['tokens']:,} validation tokens (split by song).
* Moods: labelled by melodia's estimator (`melodia/music/mood_estimator.py`), not by people{chunk_note}.
{tempo_note}
## Training

Hardware: {meta['default_model']['hardware']}.

{t0 or ''}* Steps: {tr.get('step', '?')} × {t.get('batch_size', '?')} chunks of ≤ {a.max_len} tokens (packed into rows);
  AdamW, peak lr {t.get('lr', '?')}, {t.get('warmup', '?')} warm-up steps then cosine; conditioning
  dropout {t.get('cond_dropout', '?')} (for classifier-free guidance){balance_note}.
* Target tokens seen: {tr.get('tokens', '?'):,} ({epochs:.2f} epochs of the training split); wall time of
  the training run: {tr.get('time_s', '?')} s.
* Validation loss: {val if val is None else f'{val:.3f}'} nats/token (best){tenth_note}.{cmp_note}
{ft_md}
## Metre and harmony (measured by the script)

16 samples × 4 moods × 16 bars from these weights (default settings, seed {a.seed}) against 64
real 16-bar POP909 excerpts of the held-out songs, cut at bar lines; each piece on its own bar
lines. On a sixteenth / beat: within 0.025 beat. Rhythm repetition: Jaccard similarity of
consecutive bars' onset sets on a sixteenth grid. Bass on the downbeat: of the lowest notes
starting on each beat, the share (by duration) on beat 1 (0.25 = no sense of the bar in 4/4).
Chord tones: share of note time on the tones of the chord in force (the generations' own chord
tokens; the excerpts' annotated chords); melody = program 0, accompaniment = program 2.

{metre_md}
{agree_md}

{realism_md}

## Mood control (measured by the script)

{moods['table']['happy']['samples'] if moods else '?'} samples of 16 bars per requested mood from the shipped (bfloat16) weights, default settings, drawn
16 at a time (seeds {moods.get('seed', 0) if moods else '?'}, +16, …); the mood estimator's verdict, over all samples and
for each set of 32 (with 32 samples a share moves by about ±8 points between seed sets):

{mood_table_md(moods) if moods else '_Not measured._'}

## Controls asked for (measured by the script)

{controls_section}

## Listening check

{listen}

## Limits

{limits}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/melodia-default"))
    ap.add_argument("--pop909", default=str(ROOT / "data" / "pop909"), help="POP909 folder (default data/pop909)")
    ap.add_argument("--init", default="", help="stages normalise and train start from this model directory "
                                               "(its tokenizer and weights) instead of WORK/run0")
    ap.add_argument("--metre-model", default="", help="model directory the metre stage measures (default WORK/run/model)")
    ap.add_argument("--max-minutes", type=float, default=0.0, help="wall-time limit of each training stage (0: none)")
    ap.add_argument("--compare-minutes", type=float, default=12.0,
                    help="wall time of the compare stage's tiny run")
    ap.add_argument("--compare-steps", type=int, default=3000, help="step budget of the tiny run (its lr schedule)")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--pretrain-steps", type=int, default=1500, help="steps on pieces in their own keys")
    ap.add_argument("--steps", type=int, default=STEPS, help=f"steps on pieces moved to C (the shipped model: {STEPS})")
    ap.add_argument("--finetune-steps", type=int, default=3000,
                    help="most steps of the POP909 fine-tune (it stops earlier on --patience)")
    ap.add_argument("--finetune-init", default="",
                    help="weights the fine-tune starts from (default WORK/run/model, the train stage's best)")
    ap.add_argument("--finetune-lr", type=float, default=3e-4, help="peak learning rate of the POP909 fine-tune")
    ap.add_argument("--patience", type=int, default=4,
                    help="the fine-tune stops after this many validations without improvement")
    ap.add_argument("--batch-size", type=int, default=16, help="chunks per step, packed into rows")
    ap.add_argument("--balance-moods", action=argparse.BooleanOptionalAction, default=False,
                    help="stages train and baseline draw chunks so every mood is read equally often")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--eval-every", type=int, default=150)
    ap.add_argument("--eval-batches", type=int, default=10)
    ap.add_argument("--ckpt-every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the shipped model: 2)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--samples", type=int, default=64,
                    help="samples per mood for the mood table (the card also shows each set of 32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--realism-cases", default=",".join(REALISM_CASES),
                    help="the realism stage's cases (default all: " + ", ".join(REALISM_CASES) + ")")
    ap.add_argument("--realism-baseline", default="",
                    help="also run the realism check (default settings) on this model, e.g. the one shipped before")
    ap.add_argument("--hardware", default="", help="what the card says it was trained on")
    ap.add_argument("--listening", default="", help="a markdown file with the listening notes")
    ap.add_argument("--limits", default="", help="a markdown file with the card's Limits section")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    for st in [s.strip() for s in a.stages.split(",") if s.strip()]:
        if st not in STAGES:
            raise SystemExit(f"unknown stage {st!r}; stages: {', '.join(STAGES)}")
        _stamp(f"stage {st}")
        globals()[f"stage_{st}"](a)


if __name__ == "__main__":
    main()
