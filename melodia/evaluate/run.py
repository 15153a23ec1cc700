"""The whole evaluation of a model, and the ``melodia evaluate`` command.

:func:`evaluate` measures the likelihood on held-out pieces, compares real excerpts with
unconditional generations, checks mood control, metre and validity (and with ``realism`` runs
the classifier test and the copy check of :mod:`.realism`), and writes the report.
What each part measures is described in ``docs/evaluation.md``.

Example: ``evaluate("runs/small/model", "C", n=64, out_dir="eval")["validity"]["valid_share"]``
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..corpus import load_manifest
from ..errors import BadInputError, BadMidiError, MelodiaError
from ..fileio import check_out_dir
from ..generate import MAX_N, GenerationConfig, Generator
from ..generate.arrange import dynamics_level, finish_piece
from ..model import DEFAULT_MODEL_DIR, load_model_dir, read_model_meta
from ..music.mood_estimator import MoodEstimator
from ..music.moods import CANONICAL_MOODS
from ..tokenizer import MelodiaTokenizer
from ..values import count
from ..version import __version__
from .checks import check_sequence, cue_summary, mood_control_summary, validity_summary
from .likelihood import likelihood
from .metre import metre_harmony, metre_summary
from .metrics import SCALAR_FEATURES, piece_features
from .real import corpus_from_meta, held_out, load_piece, real_excerpts
from .realism import heldout_rows, realism_report, require_sklearn
from .report import jsonable, percent, write_report, write_texts
from .stats import compare_sets

if TYPE_CHECKING:
    import symusic

    from ..music.mood_estimator import MoodEstimate

__all__ = ["GenerateFn", "add_evaluate_arguments", "cli_evaluate", "evaluate", "shown_path"]

#: ``fn(mood, n, seed, bars) -> token id lists``: what :func:`evaluate` generates with
GenerateFn = Callable[[str, int, int, int], Sequence[Sequence[int]]]


def shown_path(path: Path) -> str:
    """How a report names a folder: the shipped model as ``default``, a folder under the
    working directory relative to it (a report copied elsewhere names no build machine's
    paths), anything else as given.

    Example: ``shown_path(DEFAULT_MODEL_DIR) == "default"``
    """
    try:
        if path.resolve() == DEFAULT_MODEL_DIR.resolve():
            return "default"
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (OSError, ValueError):
        return str(path)


def _generator(model: Any, tok: MelodiaTokenizer, guidance: float | None = None,
               default_programs: Sequence[int] | None = None, tempo_unknown: str | None = None,
               style: str | None = None, style_programs: Mapping[str, Sequence[int]] | None = None) -> GenerateFn:
    """``fn(mood, n, seed, bars) -> token id lists`` on top of :class:`melodia.generate.Generator`.

    Batches of at most the generator's ``MAX_N`` rows, seeded ``seed, seed + 1, ...``;
    ``guidance`` and ``style`` None keep :class:`GenerationConfig`'s defaults.
    """
    gen = Generator(model, tok, default_programs=default_programs, tempo_unknown=tempo_unknown,
                    style_programs=style_programs)
    extra: dict[str, Any] = {} if guidance is None else {"guidance": float(guidance)}
    if style is not None:
        extra["style"] = style

    def generate(mood: str, n: int, seed: int, bars: int) -> list[list[int]]:
        out: list[list[int]] = []
        for k, start in enumerate(range(0, n, MAX_N)):
            cfg = GenerationConfig(bars=bars, mood=mood, n=min(MAX_N, n - start), seed=seed + k, **extra)
            out.extend(list(map(int, s)) for s in gen.generate(cfg))
        return out
    return generate


def _estimate(score: "symusic.Score | None") -> "MoodEstimate | None":
    if score is None:
        return None
    try:
        return MoodEstimator().estimate(score, tempo_known=True)
    except MelodiaError:  # no pitched note
        return None


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"melodia evaluate: {text}", file=sys.stderr, flush=True)


def _threads() -> int | None:
    try:
        import torch  # heavy: loaded on first use

        return int(torch.get_num_threads())
    except Exception:  # pragma: no cover
        return None


def _check_arguments(n: Any, bars: Any, max_tokens: Any, out_dir: str | os.PathLike) -> Path:
    """Named errors for bad arguments, before any work; returns the report folder, checked
    (:func:`melodia.fileio.check_out_dir`) but not made: a run that fails leaves nothing."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise BadInputError(f"n must be an integer of at least 2 (pieces per set), got {n!r}")
    if isinstance(bars, bool) or not isinstance(bars, int) or not 1 <= bars <= 256:
        raise BadInputError(f"bars must be an integer in 1..256, got {bars!r}")
    if max_tokens is not None and max_tokens < 1:
        raise BadInputError(f"max_tokens must be positive (or None for all), got {max_tokens!r}")
    return check_out_dir(out_dir, "out_dir")  # fail now, not after minutes of work (write_report makes it)


def _likelihood_part(model: Any, meta: dict, tok: MelodiaTokenizer, corpus: Path, split: str,
                     held: list[dict], seed: int, max_tokens: int | None) -> dict[str, Any]:
    """Likelihood on whole held-out pieces, in a seeded order, up to ``max_tokens``."""
    order = np.random.default_rng(seed).permutation(len(held))

    def whole_pieces() -> Iterable[tuple[dict, "symusic.Score"]]:
        for i in order:
            try:
                yield held[int(i)], load_piece(corpus, held[int(i)])
            except BadMidiError:
                continue

    width = int(meta.get("max_len") or model.config.max_position_embeddings)
    width = min(width, int(model.config.max_position_embeddings))
    lk = likelihood(model, tok, whole_pieces(), max_len=width, max_tokens=max_tokens)
    lk["split"] = split
    if lk["nats_per_token"] is None:
        lk["reason"] = f"no piece of the {split} split could be encoded"
    return lk


def _generate_sets(gen: GenerateFn, n: int, seed: int, bars: int, progress: bool) -> dict[str, list[list[int]]]:
    """``n`` sequences per mood: ``any`` first, then each canonical mood, seeded apart."""
    sets: dict[str, list[list[int]]] = {}
    for k, mood in enumerate(("any",) + tuple(CANONICAL_MOODS)):
        _say(progress, f"generating {n} x {count(bars, 'bar')}, mood {mood}")
        seqs = [list(map(int, s)) for s in gen(mood, n, seed + 1000 * (k + 1), bars)]
        if len(seqs) != n:
            raise MelodiaError(f"the generator returned {len(seqs)} sequences for mood {mood}, "
                               f"expected {n}")
        sets[mood] = seqs
    return sets


def _analyse(tok: MelodiaTokenizer, sets: dict[str, list[list[int]]], bars: int,
             real_scores: list["symusic.Score"]) -> dict[str, Any]:
    """Decode, validity, features, moods and metre of the generated sets against the real ones.

    Returns ``validity``, ``validity_by_mood``, ``real_features``, ``generated_features``,
    ``comparison``, ``mood_control``, ``metre``, and the decoded ``scores`` (None: no notes)
    and mood ``estimates`` (canonical moods in order) the samples are drawn from.
    """
    cache: dict = {}
    records: dict[str, list[dict]] = {}
    scores: dict[str, list["symusic.Score | None"]] = {}
    for mood, seqs in sets.items():
        records[mood], scores[mood] = [], []
        for ids in seqs:
            rec, score = check_sequence(tok, ids, bars, cache)
            records[mood].append(rec)
            scores[mood].append(score if score is not None and score.note_num() else None)
    real_feats = [piece_features(s) for s in real_scores]
    gen_feats = [piece_features(s) for s in scores["any"] if s is not None]
    requested = [m for m in CANONICAL_MOODS for _ in scores[m]]
    estimates = [_estimate(s) for m in CANONICAL_MOODS for s in scores[m]]
    return {"validity": validity_summary([r for rs in records.values() for r in rs]),
            "validity_by_mood": {m: validity_summary(rs) for m, rs in records.items()},
            "real_features": real_feats, "generated_features": gen_feats,
            "comparison": compare_sets(real_feats, gen_feats),
            "mood_control": _mood_part(requested, estimates, real_scores, scores["any"]),
            "metre": _metre_part(tok, sets, scores, real_scores),
            "scores": scores, "requested": requested, "estimates": estimates}


def _mood_part(requested: list[str], estimates: list["MoodEstimate | None"], real_scores: list["symusic.Score"],
               unconditional: list["symusic.Score | None"]) -> dict[str, Any]:
    """Mood control of the per-mood generations, with the real and unconditional sets' cues."""
    mood = mood_control_summary(requested, estimates)
    real_est = [_estimate(s) for s in real_scores]
    any_est = [_estimate(s) for s in unconditional]
    mood["reference"] = {"real": cue_summary(real_est), "unconditional": cue_summary(any_est)}
    return mood


def _metre_part(tok: MelodiaTokenizer, sets: dict[str, list[list[int]]],
                scores: dict[str, list["symusic.Score | None"]], real_scores: list["symusic.Score"]) -> dict[str, Any]:
    """Metre and harmony: real excerpts (cut at bar lines) against every generation, each on its
    own bar lines; generations are judged against the chord tokens they wrote."""
    real_metre = [metre_harmony(s) for s in real_scores]
    gen_metre = {m: [metre_harmony(sc, tok.chords(ids) if tok.has_chords else None)
                     for ids, sc in zip(sets[m], scores[m]) if sc is not None] for m in sets}
    return {"real": metre_summary(real_metre),
            "generated": metre_summary([f for fs in gen_metre.values() for f in fs]),
            "by_mood": {m: metre_summary(fs) for m, fs in gen_metre.items()},
            "chords_from": "chord tokens" if tok.has_chords else "recognised from the notes"}


def _finished(scores: dict[str, list["symusic.Score | None"]], bars: int) -> list["symusic.Score"]:
    """The per-mood generations finished as :meth:`melodia.Composer.generate` finishes a plain
    mood request (``finish_piece``: the mood's dynamics), as a user would get them."""
    out = []
    for m in CANONICAL_MOODS:
        cfg, level = GenerationConfig(bars=bars, mood=m), dynamics_level("mood", m, None)
        out += [finish_piece(s.copy(), cfg, level) for s in scores[m] if s is not None]
    return out


def _samples(analysis: dict[str, Any], per_mood: int) -> dict[str, list[tuple["symusic.Score", str]]]:
    """Up to ``per_mood`` decoded generations per canonical mood, with their estimated mood."""
    scores, requested, estimates = analysis["scores"], analysis["requested"], analysis["estimates"]
    samples: dict[str, list[tuple["symusic.Score", str]]] = {}
    for m in CANONICAL_MOODS:
        picked = [(s, e.mood if e is not None else "none")
                  for s, e in zip(scores[m], estimates[requested.index(m):]) if s is not None]
        samples[m] = picked[:per_mood]
    return samples


def evaluate(model_dir: str | os.PathLike | None = None, corpus_dir: str | os.PathLike | None = None,
             n: int = 64, seed: int = 0, out_dir: str | os.PathLike = "eval", bars: int = 8,
             max_tokens: int | None = 50_000, samples_per_mood: int = 4,
             guidance: float | None = None, generate_fn: GenerateFn | None = None,
             progress: bool = False, realism: bool = False, style: str | None = None) -> dict[str, Any]:
    """Run the whole evaluation and write the report; returns what report.json holds.

    ``model_dir`` defaults to the shipped model, ``corpus_dir`` to the corpus the model's
    shards came from (melodia.json -> index.json). ``n`` pieces each: real excerpts,
    unconditional generations and generations per canonical mood (``5 n`` generations in all).
    ``max_tokens`` caps the predicted tokens of the likelihood pass (None: the whole split).
    ``guidance`` is the classifier-free guidance scale (None: the generator's default).
    ``generate_fn(mood, n, seed, bars) -> token id lists`` replaces melodia.generate (tests).
    ``realism`` adds :func:`melodia.evaluate.realism.realism_report` on the ``4 n`` per-mood
    generations (finished with their mood's dynamics) against held-out excerpts of the same
    bar count: the classifier test, its controls and the copy check (``result["realism"]``).
    ``style`` (one of the model's styles: :attr:`melodia.Composer.styles`) makes every generation
    in that style and compares the realism check with that style's held-out pieces; None: the
    model's default style, and held-out pop where the corpus has it.

    Example: ``evaluate("runs/small/model", "C", n=64, out_dir="eval")["validity"]["valid_share"]``
    """
    t0 = time.perf_counter()
    out = _check_arguments(n, bars, max_tokens, out_dir)
    if corpus_dir is not None:  # a corpus_dir that is no corpus (no manifest.jsonl) fails before the model loads
        load_manifest(corpus_dir)
    if realism:
        require_sklearn()
    model_dir = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    # every input is checked before the weights load: the corpus the model names, the style
    meta = read_model_meta(model_dir)
    tok = MelodiaTokenizer.load(model_dir / "tokenizer.json")
    style = tok.resolve_style(style) if style is not None else None  # an unknown style fails here, not after minutes
    corpus = Path(corpus_dir) if corpus_dir is not None else corpus_from_meta(model_dir, meta)
    split, held = held_out(load_manifest(corpus))
    if realism:
        heldout_rows(load_manifest(corpus), style)  # a style with no held-out pieces fails now, too
    model, meta = load_model_dir(model_dir, dtype="float32")  # exact losses; fast on CPU
    timings: dict[str, float] = {}

    t = time.perf_counter()
    _say(progress, f"likelihood on the {split} split ({len(held)} pieces)")
    lk = _likelihood_part(model, meta, tok, corpus, split, held, seed, max_tokens)
    timings["likelihood"] = time.perf_counter() - t

    t = time.perf_counter()
    real_scores, real_pieces = real_excerpts(corpus, held, n, bars, np.random.default_rng(seed + 1))
    if len(real_scores) < 2:
        raise BadInputError(f"{corpus}: fewer than 2 held-out pieces with notes in the {split} split")
    timings["real_excerpts"] = time.perf_counter() - t

    gen = generate_fn or _generator(model, tok, guidance, meta.get("default_programs"), meta.get("tempo_unknown"),
                                    style, meta.get("style_programs"))
    t = time.perf_counter()
    sets = _generate_sets(gen, n, seed, bars, progress)
    timings["generation"] = time.perf_counter() - t

    t = time.perf_counter()
    a = _analyse(tok, sets, bars, real_scores)
    timings["analysis"] = time.perf_counter() - t

    result: dict[str, Any] = {
        "format": 1,
        "settings": {"model": shown_path(model_dir), "corpus": shown_path(corpus), "n": n, "seed": seed,
                     "bars": bars, "max_tokens": max_tokens, "guidance": guidance, "version": __version__,
                     "preset": meta.get("preset"), "threads": _threads(), "style": style},
        "likelihood": lk,
        "validity": a["validity"],
        "validity_by_mood": a["validity_by_mood"],
        "real_vs_generated": {"n_real": len(real_scores), "real_pieces": real_pieces,
                              "real_split": split, "n_generated": len(a["generated_features"]),
                              "features": a["comparison"],
                              "per_piece": {name: {"real": [f[name] for f in a["real_features"]],
                                                   "generated": [f[name] for f in a["generated_features"]]}
                                            for name in SCALAR_FEATURES}},
        "mood_control": a["mood_control"],
        "metre": a["metre"],
    }
    if realism:
        t = time.perf_counter()
        result["realism"] = realism_report(_finished(a["scores"], bars), corpus, bars, seed=seed, style=style,
                                           say=lambda text: _say(progress, text), tokenizer=tok)
        timings["realism"] = time.perf_counter() - t
    t = time.perf_counter()
    _say(progress, f"writing the report to {out}")
    write_report(result, out, a["real_features"], a["generated_features"], _samples(a, samples_per_mood))
    timings["report"] = time.perf_counter() - t
    result["timings"] = {k: round(v, 2) for k, v in timings.items()}
    result["seconds"] = round(time.perf_counter() - t0, 2)
    write_texts(result, out)  # again, now with the whole run's time
    return jsonable(result)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``melodia evaluate``. Example: ``add_evaluate_arguments(sub.add_parser("evaluate"))``."""
    parser.add_argument("--model", default=None,
                        help="model directory (default: the shipped default model)")
    parser.add_argument("--corpus", default=None,
                        help="corpus folder whose test split is held out (default: the corpus "
                             "the model's shards were made from)")
    parser.add_argument("--n", type=int, default=64,
                        help="pieces per set: real excerpts, unconditional and per-mood "
                             "generations (default 64)")
    parser.add_argument("--bars", type=int, default=8, help="bars per piece (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--max-tokens", type=int, default=50_000,
                        help="predicted tokens for the likelihood, 0 = the whole split "
                             "(default 50000)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance scale for the generations "
                             "(default: the generator's)")
    parser.add_argument("--realism", action="store_true",
                        help="also run the realism check: a classifier told to find the per-mood "
                             "generations among held-out real excerpts (ROC-AUC, controls, the "
                             "features that give them away) and the copy check against the train "
                             "split (needs scikit-learn: pip install 'melodia[eval]'; use --bars 16)")
    parser.add_argument("--style", metavar="NAME", default=None,
                        help="generate every piece in this style (one the model knows: `melodia info --model "
                             "DIR`) and compare the realism check with the corpus's held-out pieces of it "
                             "(default: the model's default style, and held-out pop where the corpus has it)")
    parser.add_argument("--out", required=True, help="report folder to write")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def cli_evaluate(args: argparse.Namespace) -> int:
    """Run ``melodia evaluate`` from parsed arguments. Example: ``cli_evaluate(parser.parse_args([...]))``."""
    check_out_dir(args.out)
    r = evaluate(args.model, args.corpus, n=args.n, seed=args.seed, out_dir=args.out,
                 bars=args.bars, max_tokens=args.max_tokens or None, guidance=args.guidance,
                 progress=not args.quiet, realism=args.realism, style=args.style)
    lk, v, m = r["likelihood"], r["validity"], r["mood_control"]
    nats = lk.get("nats_per_token")
    print(f"{args.out}/report.md: "
          + (f"{nats:.3f} nats/token, {lk['bits_per_note']:.2f} bits/note; " if nats is not None else "")
          + f"valid {percent(v['valid_share'])}, exact bars {percent(v['exact_bars_share'])}; "
          f"mood accuracy {percent(m['quadrant_accuracy'])}"
          + (f"; realism AUC {r['realism']['test']['auc']:.2f} (real vs real "
             f"{r['realism']['controls']['real_vs_real']['auc']:.2f})" if r.get("realism") else "")
          + f" ({r['seconds']:.0f} s)")
    return 0
