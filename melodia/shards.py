"""``melodia tokenize``: a corpus → BPE tokenizer + ``uint16`` training shards + ``index.json``;
the chord tokens written into a piece's ids; and the round-trip check (``--check``).

Every piece of the corpus → REMI base ids (all cores) → BPE trained on the train split →
pieces cut at bar lines into chunks of at most ``max_len`` ids, each prefixed with its
controls → shards (docs/ARCHITECTURE.md has the layout).

Example:
    >>> tokenize_corpus("C", "T").chunks
    812
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from .chordtokens import chord_positions, insert_chords
from .corpus import load_manifest
from .errors import BadInputError
from .fileio import atomic_write, write_json
from .music.keys import key_from_token_name
from .music.mood_estimator import MoodEstimator
from .music.moods import CANONICAL_MOODS
from .sections import insert_sections, section_token_names
from .tokenizer import (
    BOS_ID,
    DEFAULT_MAX_LEN,
    DEFAULT_VOCAB,
    EOS_ID,
    PAD_ID,
    TOKENIZER_FILE,
    MelodiaTokenizer,
    bar_start_ids,
    encode_bars,
    harmony_controls,
    miditok_config,
    pitch_shift_table,
    restate_tempo,
    split_bars,
    style_controls,
    tempo_ids,
    train_bpe_on_ids,
)

if TYPE_CHECKING:  # pragma: no cover
    import miditok
    import symusic

SHARD_TOKENS = 8_000_000  # ids per shard file (16 MB of uint16)


@dataclass
class TokenizeSummary:
    """What ``tokenize_corpus`` wrote. ``tokens`` maps split → ids written. Example: ``tokenize_corpus("C", "T").chunks``"""

    out: Path
    vocab_size: int
    chunks: int
    tokens: dict
    truncated_bars: int
    failed: list


_WORKER_TOK: "miditok.REMI | None" = None
_WORKER_MTOK: "MelodiaTokenizer | None" = None



_SHIFT_TABLES: dict = {}  # per worker process: semitones -> pitch_shift_table


def _base_worker_init(tok_json: str | None) -> None:
    global _WORKER_TOK, _WORKER_MTOK
    if tok_json is None:
        from miditok import REMI

        _WORKER_TOK = REMI(miditok_config())
    else:
        _WORKER_MTOK = MelodiaTokenizer.load(tok_json)
        _WORKER_TOK = _WORKER_MTOK.remi


def _base_ids(path: str) -> tuple[str, "np.ndarray | str"]:
    """Worker: one piece file → REMI base ids (int32), or an error message."""
    import symusic

    assert _WORKER_TOK is not None
    try:
        score = symusic.Score(path)
        seq = _WORKER_TOK.encode(score, encode_ids=False)
        if isinstance(seq, list):
            seq = seq[0]
        ids = np.asarray(seq.ids, dtype=np.int32)
        if _WORKER_MTOK is not None and _WORKER_MTOK.has_chords:
            return path, (ids, chord_positions(score, _WORKER_TOK), _WORKER_MTOK.section_positions(score))
        return path, ids
    except Exception as e:  # reported by the caller, never fatal for the whole corpus
        return path, f"{e.__class__.__name__}: {e}"


def _chunk_piece(job: tuple) -> tuple[str, "tuple[list, int] | str"]:
    """Worker: one piece → its chunks (uint16 arrays with controls and EOS), the number of
    truncated bars and each chunk's labels, or an error.

    ``label`` is None to keep the prefix on every chunk, else ``(tempo_known, own_mood)``: each
    chunk is estimated from its own notes (in the piece's own key, with the tempo in force);
    with ``own_mood`` its MOOD becomes the estimated mood, and its KEY becomes ``KEY_any`` when
    the notes read in the other mode than the piece's key. The labels returned per chunk are
    ``(mood or None, key_kept)``.
    """
    path, ids, prefix, max_len, shift, label = job
    tok = _WORKER_MTOK
    assert tok is not None
    chords: list = []
    sections: list = []  # (bar, section token id) from the piece's section markers
    if ids is None:
        path, ids = _base_ids(path)
        if isinstance(ids, str):
            return path, ids
        if isinstance(ids, tuple):
            ids, chords, sections = ids
    elif tok.has_chords:  # base ids from the BPE stage: the chords (and sections) are still to be read
        import symusic

        score = symusic.Score(path)
        chords = chord_positions(score, tok.remi)
        sections = tok.section_positions(score)
    if len(ids) == 0:
        return path, "no tokens"
    remi = tok.remi
    own_bars = split_bars(ids, remi.vocab["Bar_None"]) if label is not None else None
    key_token = tok.id_to_token(prefix[2]) if len(prefix) > 2 and prefix[2] >= tok.base_size else "KEY_any"
    key_mode = None if key_token == "KEY_any" else key_from_token_name(key_token).split()[-1]
    if shift:  # key-normalised: the piece's tonic onto C
        table = _SHIFT_TABLES.get(shift)
        if table is None:
            table = _SHIFT_TABLES[shift] = pitch_shift_table(remi, shift)
        ids = table[ids]
    if chords:  # chord tokens, moved with the notes (key-normalised: onto C)
        ids = insert_chords(tok, ids, [(b, p, c.transposed(shift) if c is not None and shift else c)
                                       for b, p, c in chords])
    ids = insert_sections(ids, sections, remi.vocab["Bar_None"])  # SECTION_ right after its Bar
    budget = max_len - len(prefix) - 1 - 4  # 4: room for the tempo re-stated at a chunk start
    bars = split_bars(ids, remi.vocab["Bar_None"])
    encoded = encode_bars(tok, bars)  # BPE never crosses a bar line: a chunk's ids are its bars' ids
    tempo_at_bar = _tempo_at_bars(ids, bars, remi)
    chunks, truncated, firsts = _bar_chunks(tok, bars, encoded, tempo_at_bar, budget)
    out, labels = [], []
    for k, c in enumerate(chunks):
        music = [i for e in c for i in e][: max_len - len(prefix) - 1]
        head = list(prefix)
        mood, key_kept = None, True
        if own_bars is not None:  # the chunk's own notes, in the piece's own key
            first, end = firsts[k], firsts[k] + len(c)
            own = [restate_tempo(own_bars[first], tempo_at_bar[first], remi)] + own_bars[first + 1:end]
            est = _passage_estimate(remi, np.concatenate(own), label[0])
            if label[1]:
                mood = est.mood
                head[1] = tok.mood_id(mood)
            if key_mode is not None and est.features.mode != key_mode:
                key_kept = False
                head[2] = tok.key_id(None)
        labels.append((mood, key_kept))
        out.append(np.asarray(head + music + [EOS_ID], dtype=np.uint16))
    return path, (out, truncated, labels)


def _tempo_at_bars(ids: "np.ndarray", bars: list, remi) -> list[int | None]:
    """The Tempo id in force where each bar starts (REMI writes only tempo changes), None before the first."""
    is_tempo = np.isin(ids, np.fromiter(tempo_ids(remi), dtype=np.int64))
    tempo_at_bar, tempo = [], None
    for b, flags in zip(bars, np.split(is_tempo, np.cumsum([len(b) for b in bars])[:-1])):
        tempo_at_bar.append(tempo)
        if flags.any():
            tempo = int(b[np.flatnonzero(flags)[-1]])
    return tempo_at_bar


def _bar_chunks(tok: MelodiaTokenizer, bars: list, encoded: list, tempo_at_bar: list,
                budget: int) -> tuple[list, int, list[int]]:
    """Whole bars gathered into chunks of at most ``budget`` ids (a chunk after the first
    restates the tempo in force); returns ``(chunks of encoded bars, bars truncated, first bar
    of each chunk)``."""
    remi = tok.remi
    chunks, cur, truncated, firsts = [], [], 0, []
    cur_len = 0
    for bi, (b, e) in enumerate(zip(bars, encoded)):
        if len(e) > budget:  # one absurdly dense bar: keep its first notes only
            b = _truncate_bar(b, remi, tok, budget)
            e = encode_bars(tok, [b])[0]
            truncated += 1
        if cur and cur_len + len(e) > budget:
            chunks.append(cur)
            cur, cur_len = [], 0
        if not cur:
            firsts.append(bi)
        if not cur and bi > 0:
            restated = restate_tempo(b, tempo_at_bar[bi], remi)
            if restated is not b:
                e = encode_bars(tok, [restated])[0]
        cur.append(e)
        cur_len += len(e)
    if cur:
        chunks.append(cur)
    return chunks, truncated, firsts


def _passage_estimate(remi, base_ids: "np.ndarray", tempo_known: bool):
    """The mood estimate (moods.MoodEstimate) of a passage given as REMI base ids."""
    from miditok import TokSequence

    score = remi.decode(TokSequence(ids=[int(i) for i in base_ids if int(i) < len(remi.vocab)], are_ids_encoded=False))
    return MoodEstimator().estimate(score, tempo_known=tempo_known)


def pool_map(fn, items: list, workers: int, init, initargs: tuple, desc: str, progress: bool):
    """Ordered map over a process pool (or in-process for one worker), with a progress bar. Example: ``list(pool_map(fn, paths, 2, init, (), "pieces", False))``"""
    bar = tqdm(total=len(items), desc=desc, unit="piece", disable=not progress)
    try:
        if workers <= 1:
            init(*initargs)
            for it in items:
                yield fn(it)
                bar.update(1)
            return
        with mp.get_context("fork").Pool(workers, initializer=init, initargs=initargs) as pool:
            for r in pool.imap(fn, items, chunksize=8):
                yield r
                bar.update(1)
    finally:
        bar.close()




def tokenize_corpus(corpus_dir: str | os.PathLike, out_dir: str | os.PathLike, vocab_size: int = DEFAULT_VOCAB,
                    max_len: int = DEFAULT_MAX_LEN, workers: int | None = None, progress: bool = True,
                    tokenizer: "MelodiaTokenizer | str | os.PathLike | None" = None,
                    key_normalise: bool | None = None, chunk_labels: bool = False,
                    styles: Sequence[str] | None = None) -> TokenizeSummary:
    """Tokenize a corpus folder into shards (see docs/ARCHITECTURE.md for the layout).

    With ``tokenizer`` (a trained tokenizer or its path, e.g. a base model's for fine-tuning)
    BPE is not retrained; moods and tags it lacks are appended as new control tokens, and so
    are the styles of the corpus rows (``STYLE_<style>`` after the key of each chunk whose piece
    has one: :func:`add_corpus_styles`).
    ``key_normalise`` writes every piece with its tonic on C and the key token of its mode on C
    (default: on for a new tokenizer, the given tokenizer's own setting otherwise).
    ``chunk_labels``: the control tokens describe the passage the model reads, not the whole
    song (a verse and a chorus can differ): a piece whose mood was estimated (no label from
    labels.csv or a folder) gives each chunk the mood estimated from the chunk's own notes
    (labelled pieces keep their label), and a chunk whose notes read in the other mode than
    its piece's key gets ``KEY_any``. False (default): every chunk carries its piece's mood and
    key (docs/ARCHITECTURE.md says what each gave the default model).
    ``styles``: only the pieces of these styles (e.g. ``["pop"]`` for a fine-tune on POP909
    after pretraining on the whole corpus); their splits stay the corpus's.

    Example:
        >>> s = tokenize_corpus("C", "T", vocab_size=4000); s.tokens["train"]
    """
    corpus_dir, out = Path(corpus_dir), Path(out_dir)
    if max_len < 64:
        raise BadInputError(f"max_len {max_len} is too small (at least 64)")
    rows = load_manifest(corpus_dir)
    if not rows:
        raise BadInputError(f"{corpus_dir}: the corpus has no pieces")
    if styles:
        have = sorted({r.get("style") or "none" for r in rows})
        rows = [r for r in rows if r.get("style") in set(styles)]
        if not rows:
            raise BadInputError(f"{corpus_dir}: no pieces of style {', '.join(styles)}; "
                                f"the corpus's styles: {', '.join(have)}")
    workers = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    user_moods = sorted({r["mood"] for r in rows if r["mood"] not in CANONICAL_MOODS and r["mood"] != "any"})
    tags = sorted({t for r in rows for t in r.get("tags", [])})

    tok = corpus_tokenizer(tokenizer, user_moods, tags, key_normalise)
    add_corpus_styles(tok, rows)
    add_corpus_sections(tok, rows)

    # 1. BPE on the train split (base ids on all cores; bars never merge across bars)
    paths = [str(corpus_dir / r["file"]) for r in rows]
    remi = tok.remi
    base: dict[str, np.ndarray] = {}
    failed: list[dict] = []
    if not tok.is_trained and vocab_size > len(remi):
        train_paths = [p for p, r in zip(paths, rows) if r["split"] == "train"]
        if not train_paths:
            raise BadInputError(f"{corpus_dir}: no train pieces to learn BPE from")
        for path, res in pool_map(_base_ids, train_paths, workers, _base_worker_init, (None,), "bpe input", progress):
            if isinstance(res, np.ndarray) and len(res):
                base[path] = res
        train_bpe_on_ids(remi, list(base.values()), vocab_size)

    # 2. chunks: whole bars, at most max_len ids with controls and EOS (all cores)
    out.mkdir(parents=True, exist_ok=True)
    tok_path = tok.save(out / TOKENIZER_FILE)
    shifts = [tok.model_shift(r.get("key")) for r in rows]
    jobs = [(p, base.pop(p, None), tok.controls_prefix(r["mood"], tok.key_for_model(r.get("key")), r.get("tags", []),
                                                       r.get("style")),
             max_len, sh, (bool(r.get("tempo_known", True)), r.get("mood_source") == "estimated") if chunk_labels else None)
            for p, r, sh in zip(paths, rows, shifts)]
    per_split: dict[str, list] = {"train": [], "valid": [], "test": []}
    truncated = 0
    for (path, res), r, sh in zip(pool_map(_chunk_piece, jobs, workers, _base_worker_init, (str(tok_path),),
                                            "tokenize", progress), rows, shifts):
        if isinstance(res, str):
            failed.append({"file": path, "reason": res})
            continue
        chunks, n_trunc, labels = res
        truncated += n_trunc
        per_split[r["split"]].extend((c, {**r, "shift": sh, "mood": m or r["mood"], "key_kept": kept})
                                     for c, (m, kept) in zip(chunks, labels))

    # 3. shards
    shards, tokens, index_chunks = write_shards(out, per_split)
    index = {
        "format": 1, "vocab_size": tok.vocab_size, "base_vocab_size": tok.base_size, "max_len": max_len,
        "key_normalised": tok.key_normalised, "chunk_labels": bool(chunk_labels),
        "pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID,
        "mood_ids": {c[5:]: tok.control_id(c) for c in tok.controls if c.startswith("MOOD_")},
        "key_ids": {("any" if c == "KEY_any" else key_from_token_name(c)): tok.control_id(c) for c in tok.controls if c.startswith("KEY_")},
        "tag_ids": {c[4:]: tok.control_id(c) for c in tok.controls if c.startswith("TAG_")},
        "style_ids": {s: tok.style_id(s) for s in tok.styles},
        "chord_ids": {c[6:]: tok.control_id(c) for c in tok.controls if c.startswith("Chord_")},
        "fim_ids": tok.fim_ids(),
        "section_ids": {s: i for i, s in tok.section_ids().items()},
        "bar_ids": bar_start_ids(tok),
        "shards": shards, "chunks": index_chunks,
        "splits": {s: {"chunks": sum(1 for c in index_chunks if c["split"] == s), "tokens": tokens.get(s, 0)} for s in per_split},
        "corpus": str(corpus_dir.resolve()), "styles": sorted(styles) if styles else None, "truncated_bars": truncated, "failed": failed,
    }
    write_json(out / "index.json", index, indent=None)
    return TokenizeSummary(out, tok.vocab_size, len(index_chunks), tokens, truncated, failed)


def add_corpus_styles(tok: MelodiaTokenizer, rows: list[dict]) -> list[str]:
    """Append a ``STYLE_`` token for each style of the corpus rows the tokenizer lacks (sorted;
    appended, so an older tokenizer, like the shipped model's, keeps every id); returns those
    added. Rows with no style add none, and their chunks carry no style token.

    Example: ``add_corpus_styles(tok, [{"style": "pop"}, {"style": None}])  # ['STYLE_pop']``
    """
    return tok.add_controls(style_controls(sorted({r["style"] for r in rows if r.get("style")})))


def add_corpus_sections(tok: MelodiaTokenizer, rows: list[dict]) -> list[str]:
    """Append the phrase section tokens (``SECTION_A`` … :func:`melodia.sections.section_token_names`)
    when a corpus row carries sections and the tokenizer lacks them (appended, so an older
    tokenizer, like the shipped model's, keeps every id); returns those added. A corpus
    without sections adds none, and its chunks carry no section token.

    Example: ``add_corpus_sections(tok, [{"sections": 12}])[:2]  # ['SECTION_A', 'SECTION_B']``
    """
    return tok.add_controls(section_token_names()) if any(r.get("sections") for r in rows) else []


def corpus_tokenizer(tokenizer: "MelodiaTokenizer | str | os.PathLike | None", user_moods: list[str],
                     tags: list[str], key_normalise: bool | None) -> MelodiaTokenizer:
    """The tokenizer a corpus is written with: ``tokenizer`` (loaded if a path) with the corpus's
    moods and tags (and chord tokens it lacks) appended, or a new key-normalising one.

    Example: ``tok = corpus_tokenizer(None, [], [], None)``
    """
    if tokenizer is not None:
        tok = tokenizer if isinstance(tokenizer, MelodiaTokenizer) else MelodiaTokenizer.load(tokenizer)
        # a tokenizer made before chord tokens gets them (and the infilling markers) appended
        tok.add_controls(harmony_controls() + [f"MOOD_{m}" for m in user_moods] + [f"TAG_{t}" for t in tags])
    else:
        tok = MelodiaTokenizer.new(user_moods, tags)
        tok.key_normalised = True
    if key_normalise is not None:
        tok.key_normalised = bool(key_normalise)
    return tok


def write_shards(out: Path, per_split: dict[str, list]) -> tuple[list[dict], dict[str, int], list[dict]]:
    """Write each split's chunks (``(uint16 ids, manifest row)``) end to end into shard files of
    about :data:`SHARD_TOKENS` ids, replacing old ones; returns ``(shards, ids per split, chunks)``
    as index.json lists them.

    Example: ``shards, tokens, chunks = write_shards(Path("T"), {"train": [(ids, row)]})``
    """
    for old in out.glob("*-[0-9][0-9][0-9].npy"):
        old.unlink()
    shards: list[dict] = []
    tokens: dict[str, int] = {}
    index_chunks: list[dict] = []
    for split, items in per_split.items():
        tokens[split] = int(sum(len(s) for s, _ in items))
        buf: list = []
        buf_len = 0
        for s, r in items:
            buf.append((s, r))
            buf_len += len(s)
            if buf_len >= SHARD_TOKENS:
                _write_shard(out, split, buf, shards, index_chunks)
                buf, buf_len = [], 0
        _write_shard(out, split, buf, shards, index_chunks)
    return shards, tokens, index_chunks


def _write_shard(out: Path, split: str, buf: list, shards: list[dict], index_chunks: list[dict]) -> None:
    """One shard file of ``buf``'s chunks (none if empty), listed in ``shards`` and ``index_chunks``."""
    if not buf:
        return
    name = f"{split}-{sum(1 for sh in shards if sh['split'] == split):03d}.npy"
    arr = np.concatenate([s for s, _ in buf])
    with atomic_write(out / name) as f:
        np.save(f, arr)
    off = 0
    for s, r in buf:
        index_chunks.append({"shard": len(shards), "offset": off, "length": int(len(s)), "piece": r["id"],
                             "split": split, "mood": r["mood"], "key": r["key"], "shift": r["shift"],
                             "key_any": not r["key_kept"],
                             "tags": r.get("tags", []), "style": r.get("style")})
        off += len(s)
    shards.append({"file": name, "split": split, "tokens": int(len(arr))})


def _truncate_bar(bar, remi, tok: MelodiaTokenizer, budget: int):
    """Cut a bar at the last Position boundary that keeps its BPE length within budget."""
    starts = [i for i in range(len(bar)) if int(bar[i]) < len(remi.vocab)
              and remi[int(bar[i])].startswith("Position_")] + [len(bar)]
    best = bar[: starts[0]]
    for s in starts[1:]:
        if len(encode_bars(tok, [bar[:s]])[0]) > budget:
            break
        best = bar[:s]
    return best


# =========================================================================== round trip
@dataclass
class RoundTrip:
    """Result of :func:`check_roundtrip`: ``kept`` of ``notes`` came back (share in ``ratio``). Example: ``check_roundtrip("T").ratio``"""

    pieces: int
    notes: int
    kept: int
    lost_by_reason: dict

    @property
    def ratio(self) -> float:
        """Example: ``RoundTrip(1, 10, 9, {}).ratio == 0.9``."""
        return self.kept / self.notes if self.notes else 1.0


def note_table(score: "symusic.Score") -> "np.ndarray":
    """Notes as an (n, 4) float array: onset beat, duration beats, pitch, program (-1 = drums).

    Example: ``note_table(score)[:, 2]`` are the pitches.
    """
    tpq = score.ticks_per_quarter
    parts = []
    for tr in score.tracks:
        a = tr.notes.numpy()
        n = len(a["time"])
        parts.append(np.stack([a["time"] / tpq, a["duration"] / tpq, a["pitch"].astype(float),
                               np.full(n, -1.0 if tr.is_drum else float(tr.program))], axis=1))
    return np.concatenate(parts) if parts else np.zeros((0, 4))


def compare_notes(orig: "np.ndarray", back: "np.ndarray", onset_step: float, dur_step) -> tuple[int, dict]:
    """How many original notes come back: same pitch and program, onset within one grid step,
    duration within one grid step of the duration grid at that length.

    ``dur_step(d)`` gives the duration grid step (beats) at duration ``d``. Returns the count
    kept and the lost ones by reason. Example: ``kept, lost = compare_notes(a, b, 1/24, f)``.
    """
    pool: dict = defaultdict(list)
    for on, du, p, prog in back:
        pool[(int(p), int(prog))].append([on, du, False])
    kept, lost = 0, {"pitch/program missing": 0, "onset moved": 0, "duration changed": 0}
    for on, du, p, prog in orig:
        cands = pool.get((int(p), int(prog)), [])
        best, reason = None, "pitch/program missing" if not cands else "onset moved"
        tol_on = onset_step + 1e-6
        for c in cands:
            if c[2] or abs(c[0] - on) > tol_on:
                continue
            if abs(c[1] - du) <= dur_step(du) + 1e-6:
                best = c
                break
            reason = "duration changed"
        if best is not None:
            best[2] = True
            kept += 1
        else:
            lost[reason] += 1
    return kept, lost


def _duration_step_fn(remi):
    """Grid step (beats) of MidiTok's duration tokens at a given length."""
    ranges = sorted(remi.config.beat_res.items())
    max_beats = ranges[-1][0][1]

    def step(d: float) -> float:
        for (_lo, hi), res in ranges:
            if d < hi:
                return 1.0 / res
        return max(d - max_beats, 0.0) + 1.0 / ranges[-1][1]  # longer notes are clipped: count as lost
    return step


def _roundtrip_one(path: str) -> tuple[int, int, dict]:
    import symusic

    remi = _WORKER_TOK
    assert remi is not None
    score = symusic.Score(path)
    seq = remi.encode(score)
    back = remi.decode(seq if not isinstance(seq, list) else seq[0])
    orig = note_table(score)
    res = max(remi.config.beat_res.values())
    kept, lost = compare_notes(orig, note_table(back), 1.0 / res, _duration_step_fn(remi))
    return len(orig), kept, lost


def check_roundtrip(shards_dir: str | os.PathLike, split: str = "train", workers: int | None = None,
                    progress: bool = True, limit: int | None = None) -> RoundTrip:
    """Encode and decode every piece of a split; count notes that come back (see :func:`compare_notes`).

    Example: ``print(f"{check_roundtrip('T').ratio:.1%}")``
    """
    shards_dir = Path(shards_dir)
    index = _read_index(shards_dir)
    corpus = Path(index["corpus"])
    rows = [r for r in load_manifest(corpus) if r["split"] == split]
    if limit:
        rows = rows[:limit]
    workers = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    total = kept = 0
    lost: dict = {}
    paths = [str(corpus / r["file"]) for r in rows]
    for n, k, lost_here in pool_map(_roundtrip_one, paths, workers, _base_worker_init, (str(shards_dir / TOKENIZER_FILE),),
                             "round trip", progress):
        total += n
        kept += k
        for key, v in lost_here.items():
            lost[key] = lost.get(key, 0) + v
    return RoundTrip(len(rows), total, kept, lost)


def _read_index(shards_dir: Path) -> dict:
    p = Path(shards_dir) / "index.json"
    if not p.is_file():
        raise BadInputError(f"{shards_dir}: not a shards folder (no index.json; run `melodia tokenize`)")
    with open(p, encoding="utf-8") as f:
        return json.load(f)
