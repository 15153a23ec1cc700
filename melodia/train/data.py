"""Training data: ``index.json`` + memory-mapped ``uint16`` shards (:class:`ShardData`), the order
train chunks are read in (:class:`TrainStream`) and conditioning dropout.

Example: ``x, y = ShardData("tokens").batch("train", [0, 1], seq_len=1024)``
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MelodiaError
from .config import IGNORE


class ShardData:
    """The token shards of one ``tokenize`` run, memory-mapped. Example: ``data = ShardData("tokens")``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        index_path = self.root / "index.json"
        if not index_path.is_file():
            raise MelodiaError(f"{index_path}: not found (run `melodia tokenize` to make shards)")
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MelodiaError(f"{index_path}: not readable JSON ({e})") from None

        def bad(msg: str) -> MelodiaError:
            return MelodiaError(f"{index_path}: {msg}")

        if not isinstance(index, dict) or index.get("format") != 1:
            raise bad("not a melodia shard index (format 1)")
        self.index = index
        v = index.get("vocab_size")
        if not isinstance(v, int) or not 8 <= v <= 65535:
            raise bad(f"vocab_size must be an integer in [8, 65535], got {v!r}")
        self.vocab_size = v
        self.max_len = index.get("max_len")
        if not isinstance(self.max_len, int) or self.max_len < 8:
            raise bad(f"max_len must be an integer >= 8, got {self.max_len!r}")
        self.pad_id, self.bos_id, self.eos_id = (index.get(k) for k in ("pad_id", "bos_id", "eos_id"))
        if self.pad_id != 0:
            raise bad(f"pad_id must be 0, got {self.pad_id!r}")
        ids = {}
        for kind in ("mood_ids", "key_ids", "tag_ids"):
            table = index.get(kind, {} if kind == "tag_ids" else None)
            if not isinstance(table, dict) or (kind != "tag_ids" and "any" not in table):
                raise bad(f"{kind} must be an object" + ("" if kind == "tag_ids" else " with an 'any' entry"))
            for name, i in table.items():
                if not isinstance(i, int) or not 0 < i < v:
                    raise bad(f"{kind}[{name!r}] = {i!r} is not an id below vocab_size {v}")
            ids[kind] = table
        self.mood_ids, self.key_ids, self.tag_ids = ids["mood_ids"], ids["key_ids"], ids["tag_ids"]
        self.mood_any, self.key_any = self.mood_ids["any"], self.key_ids["any"]
        self.is_mood = np.zeros(v, dtype=bool)
        self.is_mood[list(self.mood_ids.values())] = True
        self.is_key = np.zeros(v, dtype=bool)
        self.is_key[list(self.key_ids.values())] = True
        self.no_target = self.is_mood | self.is_key
        self.no_target[list(self.tag_ids.values())] = True
        # styles (STYLE_pop …, after the key) are given, never predicted, like the tags
        self.no_target[[i for i in (index.get("style_ids") or {}).values() if isinstance(i, int) and 0 < i < v]] = True
        self.no_target[self.pad_id] = True
        # infilling: the markers are given, never predicted; chords are predicted like notes
        fim = index.get("fim_ids") or {}
        self.fim_suffix, self.fim_middle = fim.get("suffix"), fim.get("middle")
        if self.fim_suffix is not None and self.fim_middle is not None:
            self.no_target[[self.fim_suffix, self.fim_middle]] = True
        self.is_bar = np.zeros(v, dtype=bool)
        self.is_bar[[i for i in index.get("bar_ids") or [] if isinstance(i, int) and 0 <= i < v]] = True

        self.arrays = self._load_shards(index_path, index.get("shards"), v, bad)
        self.splits = self._read_chunks(index.get("chunks") or [], bad)

    def _load_shards(self, index_path: Path, shards: Any, v: int, bad: Any) -> list[np.ndarray]:
        """The listed shard files, memory-mapped, each checked: 1-D uint16, ids below ``v``."""
        if not isinstance(shards, list) or not shards:
            raise bad("no shards listed")
        arrays = []
        for s in shards:
            path = self.root / str(s.get("file", "")) if isinstance(s, dict) else self.root / "?"
            if not path.is_file():
                raise MelodiaError(f"{path}: shard listed in {index_path} not found")
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise MelodiaError(f"{path}: not a readable .npy array ({e})") from None
            if arr.dtype != np.uint16 or arr.ndim != 1:
                raise MelodiaError(f"{path}: expected a 1-D uint16 array, got {arr.ndim}-D {arr.dtype}")
            if arr.size and int(arr.max()) >= v:
                raise MelodiaError(f"{path}: holds token id {int(arr.max())} >= vocab_size {v} of {index_path}")
            arrays.append(arr)
        return arrays

    def _read_chunks(self, chunks: list, bad: Any) -> dict[str, list[tuple[int, int, int]]]:
        """index.json's chunks as ``(shard, offset, length)`` per split, each inside its shard."""
        splits: dict[str, list[tuple[int, int, int]]] = {"train": [], "valid": [], "test": []}
        for n, c in enumerate(chunks):
            try:
                shard, off, length, split = int(c["shard"]), int(c["offset"]), int(c["length"]), c["split"]
            except (KeyError, TypeError, ValueError):
                raise bad(f"chunk {n} lacks shard/offset/length/split") from None
            if not (0 <= shard < len(self.arrays) and off >= 0 and length > 0
                    and off + length <= self.arrays[shard].size):
                raise bad(f"chunk {n} (shard {shard}, offset {off}, length {length}) lies outside its shard")
            splits.setdefault(split, []).append((shard, off, length))
        if not splits["train"]:
            raise bad("the train split has no chunks")
        return splits

    def tokens(self, split: str, i: int, limit: int) -> np.ndarray:
        """The first ``limit`` tokens of chunk ``i`` of ``split`` as int64. Example: ``data.tokens("train", 0, 1025)``"""
        shard, off, length = self.splits[split][i]
        return np.asarray(self.arrays[shard][off:off + min(length, limit)], dtype=np.int64)

    @property
    def can_fim(self) -> bool:
        """Whether these shards name the infilling markers and the bar-opening ids. Example: ``data.can_fim  # True for shards with FIM markers``"""
        return self.fim_suffix is not None and self.fim_middle is not None and bool(self.is_bar.any())

    def fim_rearrange(self, s: np.ndarray, rng: np.random.Generator, max_middle: int = 8) -> np.ndarray:
        """A chunk rearranged to teach infilling: ``controls, bars before, FIM_suffix, bars
        after, FIM_middle, the missing bars, EOS`` (1 to ``max_middle`` missing bars, at least
        one bar on each side). A chunk of fewer than 3 whole bars comes back unchanged.

        Example: ``row = data.fim_rearrange(data.tokens("train", 0, 1025), np.random.default_rng(0))``
        """
        if len(s) < 4 or int(s[-1]) != self.eos_id:
            return s
        starts = np.flatnonzero(self.is_bar[s])
        if len(starts) < 3:
            return s
        body_end = len(s) - 1
        bounds = np.append(starts, body_end)
        n = len(starts)
        a = int(rng.integers(1, n - 1))                    # bars kept before the gap
        m = int(rng.integers(1, min(max_middle, n - 1 - a) + 1))  # missing bars
        pre, mid0, mid1 = bounds[a], bounds[a], bounds[a + m]
        return np.concatenate([s[:pre], [self.fim_suffix], s[mid1:body_end], [self.fim_middle],
                               s[mid0:mid1], [self.eos_id]]).astype(s.dtype)

    def batch(self, split: str, ids: Sequence[int], seq_len: int, pad_multiple: int = 8,
              drop: np.ndarray | None = None, pack: bool = False, fim: float = 0.0,
              rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets ``(x, y)``, each ``(rows, T)``, T <= seq_len.

        ``y[b, t]`` is the token after ``x[b, t]``, or -100 where nothing is to be learnt (padding,
        control tokens, the step from one packed chunk into the next). ``drop`` (``(len(ids), 2)``
        bool) applies conditioning dropout to each chunk's MOOD and KEY. With ``pack``, chunks
        are laid end to end in as few rows as hold them (less padding: docs/benchmarks.md,
        "Packed training rows"); each chunk starts with its own BOS and controls, so a chunk
        may see the one before it, never the reverse.

        Example: ``x, y = data.batch("train", [0, 1, 2], seq_len=1024, pack=True)``
        """
        pieces = []
        use_fim = fim > 0 and self.can_fim and rng is not None
        for b, i in enumerate(ids):
            s = self.tokens(split, i, seq_len + 1)
            if use_fim and rng.random() < fim:
                s = self.fim_rearrange(s, rng)[:seq_len + 1]
            xs, ys = s[:-1].copy(), s[1:].copy()
            ys[self.no_target[ys]] = IGNORE
            if drop is not None and len(xs) > 2:
                if drop[b, 0] and self.is_mood[xs[1]]:
                    xs[1] = self.mood_any
                if drop[b, 1] and self.is_key[xs[2]]:
                    xs[2] = self.key_any
            pieces.append((xs, ys))
        rows: list[list[tuple[np.ndarray, np.ndarray]]] = []
        if pack:
            fill = seq_len + 1  # first-fit: a chunk goes in the first row with room
            room: list[int] = []
            for xs, ys in pieces:
                for r, left in enumerate(room):
                    if len(xs) <= left:
                        rows[r].append((xs, ys))
                        room[r] -= len(xs)
                        break
                else:
                    rows.append([(xs, ys)])
                    room.append(fill - 1 - len(xs))
        else:
            rows = [[p] for p in pieces]
        longest = max(sum(len(xs) for xs, _ in row) for row in rows)
        width = min(seq_len, max(1, -(-longest // pad_multiple) * pad_multiple))
        x = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        y = np.full((len(rows), width), IGNORE, dtype=np.int64)
        for b, row in enumerate(rows):
            at = 0
            for xs, ys in row:
                x[b, at:at + len(xs)] = xs
                y[b, at:at + len(ys)] = ys
                at += len(xs)
        return x, y


def conditioning_dropout(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """``(n, 2)`` bools: replace [MOOD, KEY] by ``any``? Both with prob. p, else each with prob. p.

    Example: ``drop = conditioning_dropout(np.random.default_rng(0), 16, 0.1)``.
    """
    r = rng.random((n, 3))
    return (r[:, :2] < p) | (r[:, 2:] < p)


class TrainStream:
    """Which train chunks each step reads: a seeded permutation per epoch, read in order; or,
    with ``groups`` (one label per chunk, e.g. its mood id), ``n`` seeded draws per epoch in
    which every group is equally likely and chunks within a group too.

    The position is one number, ``consumed`` (samples read by all processes together), so a
    checkpoint records it and a resumed run continues at the next sample.
    Example: ``TrainStream(n=1000, seed=0).take(0, 64)``.
    """

    def __init__(self, n: int, seed: int, groups: np.ndarray | None = None):
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)
        self.p = None
        if groups is not None:
            _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
            self.p = 1.0 / (len(counts) * counts[inverse])

    def perm(self, epoch: int) -> np.ndarray:
        """Example: ``stream.perm(0)[:4]``."""
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch = epoch
            self._perm = rng.permutation(self.n) if self.p is None else rng.choice(self.n, self.n, p=self.p)
        return self._perm

    def take(self, consumed: int, count: int) -> list[int]:
        """Example: ``stream.take(consumed, 64)``."""
        out: list[int] = []
        while len(out) < count:
            epoch, pos = divmod(consumed + len(out), self.n)
            out.extend(self.perm(epoch)[pos:pos + count - len(out)].tolist())
        return out
