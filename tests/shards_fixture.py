"""Token shards in the documented format (docs/ARCHITECTURE.md) from given token lists.

For training tests that should not depend on the MIDI tokenizer: :func:`write_shards` lays
chunks end to end in ``uint16`` shards and writes ``index.json`` and a stand-in
``tokenizer.json``; :func:`synthetic_shards` makes a learnable corpus (a mood- and
key-dependent motif with some noise), so a small model's loss falls quickly.

Example:
    >>> root = synthetic_shards(tmp_path / "T", n_train=64, n_valid=16)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MOODS = ["happy", "tense", "sad", "calm"]
KEYS = [f"{n} {m}" for m in ("major", "minor") for n in
        ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")]
N_SPECIAL = 4  # PAD BOS EOS MASK


def control_ids(base_vocab: int, tags: tuple[str, ...] = ("jazz",), extra_moods: tuple[str, ...] = ()) -> dict:
    """Ids of the control tokens appended after a base vocabulary, in the documented order."""
    nxt = base_vocab
    mood_ids, key_ids, tag_ids = {}, {}, {}
    for m in MOODS + ["any"]:
        mood_ids[m], nxt = nxt, nxt + 1
    for k in KEYS + ["any"]:
        key_ids[k], nxt = nxt, nxt + 1
    for t in tags:
        tag_ids[t], nxt = nxt, nxt + 1
    for m in extra_moods:  # a fine-tuning corpus's own moods: appended, so every old id keeps its meaning
        mood_ids[m], nxt = nxt, nxt + 1
    return {"mood_ids": mood_ids, "key_ids": key_ids, "tag_ids": tag_ids, "vocab_size": nxt}


def write_shards(root: str | Path, chunks: list[dict], ids: dict, max_len: int,
                 shard_tokens: int = 4096) -> Path:
    """Write ``chunks`` (dicts: tokens, split, mood, key, piece, tags) as shards + index.json."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shards, index_chunks, buf, buf_split = [], [], [], None
    splits: dict[str, dict] = {s: {"chunks": 0, "tokens": 0} for s in ("train", "valid", "test")}

    def flush() -> None:
        nonlocal buf
        if buf:
            name = f"{buf_split}-{sum(s['split'] == buf_split for s in shards):03d}.npy"
            arr = np.concatenate(buf).astype(np.uint16)
            np.save(root / name, arr)
            shards.append({"file": name, "split": buf_split, "tokens": int(arr.size)})
            buf = []

    for c in sorted(chunks, key=lambda c: ["train", "valid", "test"].index(c["split"])):
        toks = np.asarray(c["tokens"], dtype=np.uint16)
        assert len(toks) <= max_len and int(toks.max()) < ids["vocab_size"]
        if c["split"] != buf_split or sum(map(len, buf)) + len(toks) > shard_tokens:
            flush()
            buf_split = c["split"]
        offset = sum(map(len, buf))
        buf.append(toks)
        index_chunks.append({"shard": len(shards), "offset": offset, "length": int(len(toks)),
                             "piece": c.get("piece", "p"), "split": c["split"], "mood": c["mood"],
                             "key": c["key"], "tags": c.get("tags", [])})
        splits[c["split"]]["chunks"] += 1
        splits[c["split"]]["tokens"] += int(len(toks))
    flush()
    index = {"format": 1, "vocab_size": ids["vocab_size"], "max_len": max_len, "pad_id": 0, "bos_id": 1,
             "eos_id": 2, "mood_ids": ids["mood_ids"], "key_ids": ids["key_ids"], "tag_ids": ids["tag_ids"],
             "shards": shards, "chunks": index_chunks, "splits": splits}
    (root / "index.json").write_text(json.dumps(index, indent=1))
    (root / "tokenizer.json").write_text(json.dumps({"stand_in": True, "melodia": {
        "mood_ids": ids["mood_ids"], "key_ids": ids["key_ids"], "tag_ids": ids["tag_ids"]}}))
    return root


def synthetic_chunks(n_train: int, n_valid: int, base_vocab: int = 64, seed: int = 0, min_len: int = 24,
                     max_len: int = 96, moods: list[str] | None = None, ids: dict | None = None) -> list[dict]:
    """Learnable sequences: BOS MOOD KEY, then a motif chosen by the mood, transposed by the key."""
    ids = ids or control_ids(base_vocab)
    rng = np.random.default_rng(seed)
    moods = moods or MOODS
    span = base_vocab - N_SPECIAL
    motifs = {m: rng.integers(0, span, size=int(rng.integers(3, 7))).tolist() for m in moods}
    out = []
    for n in range(n_train + n_valid):
        mood, key = moods[n % len(moods)], KEYS[int(rng.integers(0, len(KEYS)))]
        shift = KEYS.index(key)
        length = int(rng.integers(min_len, max_len - 3))
        body = [N_SPECIAL + (motifs[mood][i % len(motifs[mood])] + shift) % span for i in range(length)]
        noise = rng.random(length) < 0.05
        body = [int(rng.integers(N_SPECIAL, base_vocab)) if z else b for b, z in zip(body, noise)]
        toks = [1, ids["mood_ids"][mood], ids["key_ids"][key], *body, 2]
        out.append({"tokens": toks, "split": "train" if n < n_train else "valid", "mood": mood, "key": key,
                    "piece": f"s{n:04d}", "tags": []})
    return out


def synthetic_shards(root: str | Path, n_train: int = 96, n_valid: int = 24, base_vocab: int = 64,
                     seed: int = 0, max_len: int = 128, extra_moods: tuple[str, ...] = ()) -> Path:
    """A learnable synthetic corpus written as shards. Example: ``synthetic_shards(tmp_path / "T")``."""
    ids = control_ids(base_vocab, extra_moods=extra_moods)
    chunks = synthetic_chunks(n_train, n_valid, base_vocab, seed, max_len=max_len,
                              moods=MOODS + list(extra_moods), ids=ids)
    return write_shards(root, chunks, ids, max_len=max_len)
