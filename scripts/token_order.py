"""The token-order experiment of issue 23: each bar's chords, then its melody, then its accompaniment.

Today a bar's tokens are in time order: at each position the notes of every part
(``Position_12 Program_0 Pitch … Program_2 Pitch …``), so the melody's notes stand between the
accompaniment's. In *part order* a bar is ``Bar [SECTION] TimeSig``, then its tempo and chord
changes (``Position_p Tempo``, ``Position_p Chord_…``), then the notes of each program in
turn, lowest program first (POP909: melody 0, bridge 1, piano 2), each part in time order
(``Position_p Program_k Pitch Velocity Duration …``): positions go back where a part starts.
The same notes, chords and sections decode from both (MidiTok's REMI decoder reads a Position
as "this bar's tick p"); :func:`part_order_bar` is that transform on REMI base ids, and
:func:`convert_shards` applies it to tokenized shards with the same tokenizer and BPE.

What this script measures, for two model directories trained the same way on the two shard
sets, at equal training tokens:

* ``nll``: validation negative log-likelihood **per note** (nats), summed over every music
  token of the validation split: the two orders spell the same music with different token
  counts, so per-token losses do not compare and per-note sums do;
* ``sample``: 16-bar pieces per mood sampled **without the grammar** (the grammar knows only
  time order), the same controls, temperature 1.0 and top-p 0.95 for both, a sliding window
  from a bar line past the 1,024-token training length;
* ``realism``: :func:`melodia.evaluate.realism.realism_report` of those pieces against the
  held-out POP909 excerpts (one shared train index), as ``melodia evaluate --realism`` reads it.

Results and the decision are in docs/evaluation.md ("Token order").

Example:
    $ python scripts/token_order.py shards T/pop T/pop-parts
    $ python scripts/token_order.py nll run_pop/model T/pop            # time order
    $ python scripts/token_order.py sample run_parts/model parts.pkl --per-mood 16
    $ python scripts/token_order.py realism C out.json time=time.pkl parts=parts.pkl
"""
from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from melodia.fileio import atomic_write, write_bytes, write_json, write_text
from melodia.tokenizer import EOS_ID, MelodiaTokenizer, encode_bars

PAD_LIKE = 4  # ids below this are PAD, BOS, EOS, MASK


def base_stream(tok: MelodiaTokenizer, ids, base_size: int, memo: dict) -> list[int]:
    """A sequence's ids as REMI base ids, every control or special id ``c`` kept as ``-c - 1``.
    Example: ``base_stream(tok, ids, tok.base_size, {})``"""
    out: list[int] = []
    for i in ids:
        i = int(i)
        if i >= base_size or i < PAD_LIKE:
            out.append(-i - 1)
            continue
        bt = memo.get(i)
        if bt is None:
            bt = memo[i] = [tok.remi.vocab[t] for t in tok.base_tokens(i)]
        out.extend(bt)
    return out


def part_order_bar(bar: list[int], remi, names: dict[int, str]) -> list[int]:
    """One bar of REMI base ids (controls as ``-c - 1``, :func:`base_stream`) in part order:
    ``Bar [SECTION] TimeSig``, the tempo/chord changes by position, then each program's notes.

    Example: ``part_order_bar(bar, tok.remi, {i: t for t, i in tok.remi.vocab.items()})``
    """
    head: list[int] = []
    meta: dict[int, list[int]] = {}
    notes: list[tuple[int, int, list[int]]] = []
    pos, prog, seen_pos = 0, 0, False
    for i in bar:
        if i < 0:  # a control: a section (right after Bar) or a chord at the current position
            if not seen_pos and len(head) <= 1:
                head.append(i)
            else:
                meta.setdefault(pos, []).append(i)
            continue
        kind, _, val = names[i].partition("_")
        if kind in ("Bar", "TimeSig"):
            head.append(i)
        elif kind == "Position":
            pos, seen_pos = int(val), True
        elif kind == "Tempo":
            meta.setdefault(pos, []).insert(0, i)
        elif kind == "Program":
            prog = int(val)
        elif kind in ("Pitch", "PitchDrum"):
            notes.append((pos, prog, [i]))
        elif kind in ("Velocity", "Duration"):
            notes[-1][2].append(i)
        else:
            raise ValueError(f"unexpected token {names[i]} in a bar")
    out = list(head)
    for p in sorted(meta):
        out += [remi.vocab[f"Position_{p}"], *meta[p]]
    for k in sorted({n[1] for n in notes}):
        last = None
        for p, pr, toks in notes:
            if pr != k:
                continue
            if p != last:
                out.append(remi.vocab[f"Position_{p}"])
                last = p
            out += [remi.vocab[f"Program_{pr}"], *toks]
    return out


def part_order_chunk(tok: MelodiaTokenizer, ids, base_size: int, memo: dict, names: dict[int, str]):
    """A chunk (controls, bars, maybe EOS) → ``(prefix ids, bars in part order as base ids
    with controls as -c-1, tail ids)``. Example: ``part_order_chunk(tok, ids, tok.base_size, {}, names)``"""
    bar_id = tok.remi.vocab["Bar_None"]
    s = base_stream(tok, ids, base_size, memo)
    k = next((j for j, x in enumerate(s) if x == bar_id), len(s))
    prefix = [-x - 1 for x in s[:k]]
    body, tail = s[k:], []
    while body and body[-1] < 0 and -body[-1] - 1 < PAD_LIKE:
        tail.insert(0, -body.pop() - 1)
    bars: list[list[int]] = []
    for x in body:
        if x == bar_id:
            bars.append([x])
        else:
            bars[-1].append(x)
    return prefix, [part_order_bar(b, tok.remi, names) for b in bars], tail


def _as_ids(bar: list[int]) -> np.ndarray:
    return np.asarray([x if x >= 0 else -x - 1 for x in bar], dtype=np.int64)


def _restate_tempo(bar: list[int], tempo: int, remi, names: dict[int, str]) -> list[int]:
    """The bar with ``tempo`` at Position_0 of its tempo/chord block (a chunk's first bar)."""
    if tempo in bar:
        return bar
    b = list(bar)
    h = 1 + int(len(b) > 1 and b[1] < 0)
    h += int(len(b) > h and b[h] >= 0 and names[b[h]].startswith("TimeSig_"))
    if len(b) > h and b[h] >= 0 and names[b[h]] == "Position_0":
        b.insert(h + 1, tempo)
    else:
        b[h:h] = [remi.vocab["Position_0"], tempo]
    return b


def convert_shards(src: Path, dst: Path, max_len: int = 1024) -> dict:
    """Shards in part order from shards in time order (same tokenizer, same splits and chunk
    fields): each chunk's bars reordered and BPE-encoded again; a chunk that grows past
    ``max_len`` is cut at a bar line into two, the second with the chunk's controls and its
    tempo restated. Example: ``convert_shards(Path("T"), Path("T-parts"))``"""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "tokenizer.json", dst / "tokenizer.json")
    tok = MelodiaTokenizer.load(src / "tokenizer.json")
    remi, base_size, memo = tok.remi, tok.base_size, {}
    names = {i: t for t, i in remi.vocab.items()}
    idx = json.loads((src / "index.json").read_text(encoding="utf-8"))
    arrays = {k: np.load(src / s["file"]) for k, s in enumerate(idx["shards"])}
    split_shard = {s["split"]: k for k, s in enumerate(idx["shards"])}
    rows: dict[str, list[list[int]]] = {s["split"]: [] for s in idx["shards"]}
    fill = dict.fromkeys(rows, 0)
    chunks, splits, before, cut = [], {}, 0, 0
    for c in idx["chunks"]:
        ids = arrays[c["shard"]][c["offset"]:c["offset"] + c["length"]].tolist()
        before += len(ids)
        prefix, bars, tail = part_order_chunk(tok, ids, base_size, memo, names)
        enc = encode_bars(tok, [_as_ids(b) for b in bars])
        tempo = next((x for x in (bars[0] if bars else []) if x >= 0 and names[x].startswith("Tempo_")), None)
        budget = max_len - len(prefix) - len(tail)
        groups: list[list[list[int]]] = [[]]
        for k, e in enumerate(enc):
            if groups[-1] and sum(map(len, groups[-1])) + len(e) > budget:
                groups.append([])
                cut += 1
                if tempo is not None:
                    e = encode_bars(tok, [_as_ids(_restate_tempo(bars[k], tempo, remi, names))])[0]
            groups[-1].append(e[:budget])
        for g, group in enumerate(groups):
            row = prefix + [i for b in group for i in b] + (tail if g == len(groups) - 1 else [])
            split = c["split"]
            chunks.append({**c, "shard": split_shard[split], "offset": fill[split], "length": len(row)})
            rows[split].append(row)
            fill[split] += len(row)
            sp = splits.setdefault(split, {"chunks": 0, "tokens": 0})
            sp["chunks"] += 1
            sp["tokens"] += len(row)
    shards = []
    for s in idx["shards"]:
        a = np.asarray([i for r in rows[s["split"]] for i in r], dtype=arrays[0].dtype)
        with atomic_write(dst / s["file"]) as f:
            np.save(f, a)
        shards.append({**s, "tokens": int(len(a))})
    idx.update(shards=shards, chunks=chunks, splits=splits, token_order="parts")
    write_json(dst / "index.json", idx, indent=None)
    after = sum(sp["tokens"] for sp in splits.values())
    return {"tokens_before": before, "tokens_after": after, "growth": round(after / before, 4), "chunks_cut": cut}


def nll_per_note(model_dir: str, shards: Path, split: str = "valid") -> dict:
    """Nats per note of a split: -log p summed over every token after the control prefix
    (EOS included), divided by the notes the chunks hold. Example: ``nll_per_note("run/model", Path("T"))``"""
    import torch

    from melodia.model.llama import load_model_dir

    model, _ = load_model_dir(model_dir)
    tok = MelodiaTokenizer.load(shards / "tokenizer.json")
    base_size = tok.base_size
    idx = json.loads((shards / "index.json").read_text(encoding="utf-8"))
    arrays = {k: np.load(shards / s["file"]) for k, s in enumerate(idx["shards"])}
    pitches: dict[int, int] = {}
    total, notes, tokens = 0.0, 0, 0
    with torch.no_grad():
        for c in idx["chunks"]:
            if c["split"] != split:
                continue
            ids = arrays[c["shard"]][c["offset"]:c["offset"] + c["length"]].astype(np.int64)
            x = torch.from_numpy(ids)[None]
            nll = torch.nn.functional.cross_entropy(model(input_ids=x).logits[0, :-1].float(), x[0, 1:],
                                                    reduction="none")
            first = next(k for k, i in enumerate(ids) if PAD_LIKE <= i < base_size)
            total += float(nll[first - 1:].sum())
            tokens += len(ids) - first
            for i in ids:
                i = int(i)
                if PAD_LIKE <= i < base_size:
                    if i not in pitches:
                        pitches[i] = sum(t.startswith("Pitch") for t in tok.base_tokens(i))
                    notes += pitches[i]
    return {"model": model_dir, "shards": str(shards), "split": split, "nats_per_note": round(total / notes, 4),
            "nats_per_token": round(total / tokens, 4), "notes": notes, "tokens": tokens}


def sample_pieces(model_dir: str, per_mood: int, bars: int = 16, seed: int = 0, window: int = 1024,
                  max_new: int = 3000) -> list[list[int]]:
    """``per_mood`` pieces of ``bars`` bars per mood (happy, tense, sad, calm), sampled with no
    grammar: every music id and chord/section id is allowed, temperature 1.0, top-p 0.95; EOS
    is not (an early EOS would compare lengths, not music): a piece ends before its
    ``bars + 1``-th bar line, or at ``max_new`` ids. Past
    ``window`` ids the context restarts from the controls and the bar line nearest to half a
    window back. Example: ``rows = sample_pieces("run/model", 2)``"""
    import torch

    from melodia.api import Composer
    from melodia.evaluate.checks import bar_count
    from melodia.generate.config import GenerationConfig
    from melodia.generate.sampler import sample_ids
    from melodia.music.moods import CANONICAL_MOODS

    comp = Composer.load(model_dir, device="cpu")
    gen, tok = comp._gen, comp.tokenizer
    base_size, vocab = tok.base_size, tok.vocab_size
    allowed = torch.zeros(1, vocab, dtype=torch.bool)
    allowed[0, PAD_LIKE:base_size] = True
    for cid in [*tok.chord_ids(), *tok.section_ids()]:
        allowed[0, cid] = True
    bars_cache: dict[int, int] = {}
    opens_bar = {i for i in range(PAD_LIKE, base_size) if tok.base_tokens(i)[:1] == ["Bar_None"]}
    rng = torch.Generator().manual_seed(seed)
    out = []
    for k, mood in enumerate(CANONICAL_MOODS):
        for j in range(per_mood):
            cfg = GenerationConfig(mood=mood, bars=bars, seed=100 + 10 * k + j)
            req = gen.resolve(cfg)
            prefix, row, n_bars = gen.controls(req)[0], [], 0
            gen.net.reset(batch=1, length=window + 8)
            logits, used = gen.net.forward(torch.tensor([prefix])), len(prefix)
            while len(row) < max_new:
                nxt = int(sample_ids(logits.view(1, -1)[:, :vocab].float(), allowed, 1.0, 0, 0.95, rng)[0])
                more = bar_count(tok, [nxt], bars_cache)
                if n_bars + more > bars:
                    break
                row.append(nxt)
                n_bars += more
                if used + 1 < window:
                    logits, used = gen.net.step(torch.tensor([nxt])), used + 1
                    continue
                lo = len(row) - window // 2
                start = next((m for m in range(lo, len(row)) if row[m] in opens_bar), lo)
                ctx = prefix + row[start:]
                gen.net.reset(batch=1, length=window + 8)
                logits, used = gen.net.forward(torch.tensor([ctx])), len(ctx)
            out.append(gen.shown_prefix(cfg, req) + row + [EOS_ID])
    return out


def realism(corpus: Path, runs: dict[str, tuple[str, str]]) -> dict:
    """``{name: (tokenizer.json, rows pickle)}`` → each set's realism report against the
    corpus's held-out POP909 (one train index for all). Example: ``realism(Path("C"), {"parts": (t, p)})``"""
    from melodia.evaluate.copycheck import CopyIndex
    from melodia.evaluate.realism import realism_report
    from melodia.evaluate.report import jsonable

    index = CopyIndex.of_corpus(corpus)
    res = {}
    for name, (tok_json, rows_path) in runs.items():
        tok = MelodiaTokenizer.load(tok_json)
        with open(rows_path, "rb") as f:
            rows = pickle.load(f)
        scores = [tok.decode(r) for r in rows]
        rep = realism_report(scores, corpus, 16, seed=0, index=index, tokenizer=tok)
        rep["notes_per_piece"] = float(np.mean([s.note_num() for s in scores]))
        res[name] = jsonable(rep)
        top = ", ".join(f"{f['feature']} {f['auc']:.2f}" for f in rep["test"]["top_features"][:6])
        print(f"{name}: AUC {rep['test']['auc']:.3f}; groups "
              + ", ".join(f"{g} {a:.2f}" for g, a in rep["by_group"].items()) + f"; top: {top}", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("shards", help="part-order shards from time-order shards")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p = sub.add_parser("nll", help="validation nats per note")
    p.add_argument("model")
    p.add_argument("shards", type=Path)
    p = sub.add_parser("sample", help="grammar-free 16-bar pieces, per mood")
    p.add_argument("model")
    p.add_argument("out", type=Path)
    p.add_argument("--per-mood", type=int, default=16)
    p = sub.add_parser("realism", help="realism reports of sampled pieces")
    p.add_argument("corpus", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("runs", nargs="+", help="NAME=TOKENIZER_JSON,ROWS_PICKLE")
    for p in sub.choices.values():
        p.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    t0 = time.time()
    if a.cmd == "shards":
        print(json.dumps(convert_shards(a.src, a.dst)))
    elif a.cmd == "nll":
        print(json.dumps(nll_per_note(a.model, a.shards)))
    elif a.cmd == "sample":
        rows = sample_pieces(a.model, a.per_mood)
        write_bytes(a.out, pickle.dumps(rows))
        print(f"{len(rows)} pieces, {np.mean([len(r) for r in rows]):.0f} ids each on average")
    else:
        runs = {}
        for spec in a.runs:
            name, _, rest = spec.partition("=")
            tok_json, _, rows_path = rest.partition(",")
            runs[name] = (tok_json, rows_path)
        write_text(a.out, json.dumps(realism(a.corpus, runs), indent=1))
    print(f"{time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
