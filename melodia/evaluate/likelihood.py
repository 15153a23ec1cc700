"""Likelihood of a model on whole held-out pieces: nats per predicted token and bits per note.

Each piece is encoded with the model's own tokenizer (``BOS MOOD KEY [TAG…] music EOS``) and
cut, at bar lines where it can, into windows of at most the model's training length, each
opening with the piece's control prefix, as training chunks do; every music token and the
EOS is predicted once, control tokens never.

Example: ``likelihood(model, tok, [(row, score)])["bits_per_note"]  # 8.7``
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError, MelodiaError
from ..tokenizer import BOS_ID, EOS_ID

if TYPE_CHECKING:
    import symusic

    from ..tokenizer import MelodiaTokenizer

__all__ = ["likelihood", "likelihood_windows"]


def _prefix_for(tok: "MelodiaTokenizer", row: Mapping[str, Any]) -> list[int]:
    """The control prefix of a corpus row (its style too), with moods/tags/styles the tokenizer lacks left out."""
    try:
        mood_id = tok.mood_id(str(row.get("mood") or "any"))
    except MelodiaError:
        mood_id = tok.mood_id("any")
    try:
        key_id = tok.key_id(tok.key_for_model(row.get("key")))
    except MelodiaError:
        key_id = tok.key_id(None)
    tags = []
    for t in row.get("tags") or []:
        try:
            tags.append(tok.tag_id(t))
        except MelodiaError:
            pass
    style = tok.style_ids(row["style"]) if row.get("style") in tok.styles else []  # as tokenize_corpus wrote it
    return [BOS_ID, mood_id, key_id] + style + tags


def _model_shift(tok: "MelodiaTokenizer", row: Mapping[str, Any]) -> int:
    """``tok.model_shift`` of a corpus row's key; 0 for a key the tokenizer cannot read."""
    try:
        return tok.model_shift(row.get("key"))
    except MelodiaError:
        return 0


def likelihood_windows(tok: "MelodiaTokenizer", prefix: list[int], music: list[int], width: int,
                       bar_starts_cache: dict) -> list[tuple[list[int], int]]:
    """Cut ``prefix + music + EOS`` into inputs of at most ``width`` tokens.

    Returns (window, first scored position): the first window scores every target after the
    prefix; every later window repeats the prefix and scores only its music and EOS. Cuts
    fall at tokens that open a bar where one fits, so windows look like training chunks.
    ``bar_starts_cache`` (token id -> opens a bar) is filled as ids are met; share it between calls.

    Example: ``likelihood_windows(tok, [1, mood, key], music, 128, {})[0]  # (window, 3)``
    """
    body = list(music) + [EOS_ID]
    budget = width - len(prefix)
    if budget < 2:
        raise BadInputError(f"the model's length {width} leaves no room after the control tokens")
    out: list[tuple[list[int], int]] = []
    i = 0
    while i < len(body):
        j = min(i + budget, len(body))
        if j < len(body):
            for k in range(j, i + budget // 4, -1):  # the last bar start in the window's tail
                tid = body[k]
                if tid not in bar_starts_cache:
                    try:
                        first = tok.base_tokens(tid)[0] if tid < tok.base_size else ""
                    except Exception:
                        first = ""
                    bar_starts_cache[tid] = first == "Bar_None"
                if bar_starts_cache[tid]:
                    j = k
                    break
        out.append((prefix + body[i:j], len(prefix)))
        i = j
    return out


def likelihood(model: Any, tok: "MelodiaTokenizer", pieces: Iterable[tuple[Mapping[str, Any], "symusic.Score"]],
               max_len: int | None = None, max_tokens: int | None = None,
               batch_size: int = 8) -> dict[str, Any]:
    """Mean cross-entropy of ``model`` on whole pieces: nats per token and bits per note.

    ``pieces`` yields (corpus row with mood/key/tags, score). Each piece becomes what the model
    reads in training (for a key-normalised tokenizer: moved to C; a mood, key or tag the tokenizer lacks
    becomes ``any`` / is left out), cut into windows of at most ``max_len`` tokens (default:
    the model's ``max_position_embeddings``), see :func:`likelihood_windows`; unlike a training chunk, a
    later window does not re-state the tempo. Predicted are the music tokens and EOS, once
    each; control tokens are inputs only, as in training. Pieces are taken in order until
    ``max_tokens`` predicted tokens are reached (whole pieces only, so bits per note stays
    exact). ``bits_per_note = total nats / ln 2 / notes`` of the scored pieces' scores.

    Example: ``likelihood(model, tok, [(row, score)])["nats_per_token"]  # 1.83``
    """
    width = int(max_len or getattr(model.config, "max_position_embeddings", 1024))
    device = next(model.parameters()).device
    total_nats, total_tokens, total_notes, n_pieces, skipped = 0.0, 0, 0, 0, 0
    bar_cache: dict = {}
    t0 = time.perf_counter()

    pending: list[tuple[list[int], int]] = []
    for row, score in pieces:
        if max_tokens is not None and total_tokens >= max_tokens:
            break
        try:
            music = tok.encode_score(score, _model_shift(tok, row))
        except Exception:  # a piece MidiTok cannot encode is reported, not fatal
            skipped += 1
            continue
        if not music:
            skipped += 1
            continue
        for w in likelihood_windows(tok, _prefix_for(tok, row), music, width, bar_cache):
            pending.append(w)
            total_tokens += len(w[0]) - w[1]
            if len(pending) == batch_size:
                total_nats += _batch_nats(model, pending, device)
                pending = []
        total_notes += int(score.note_num())
        n_pieces += 1
    if pending:
        total_nats += _batch_nats(model, pending, device)
    if total_tokens == 0:
        return {"pieces": 0, "tokens": 0, "notes": 0, "skipped": skipped, "nats_per_token": None,
                "bits_per_token": None, "bits_per_note": None, "perplexity": None,
                "seconds": round(time.perf_counter() - t0, 2)}
    nats = total_nats / total_tokens
    return {"pieces": n_pieces, "tokens": total_tokens, "notes": total_notes, "skipped": skipped,
            "window": width, "nats_per_token": nats, "bits_per_token": nats / math.log(2),
            "perplexity": math.exp(nats),
            "bits_per_note": total_nats / math.log(2) / total_notes if total_notes else None,
            "seconds": round(time.perf_counter() - t0, 2)}


def _batch_nats(model: Any, batch: list[tuple[list[int], int]], device: Any) -> float:
    """Summed cross-entropy (nats) of the scored targets of a batch of windows."""
    import torch  # heavy: loaded on first use
    import torch.nn.functional as F

    longest = max(len(w) for w, _ in batch)
    x = torch.zeros((len(batch), longest), dtype=torch.long)
    y = torch.full((len(batch), longest), -100, dtype=torch.long)
    for b, (w, first) in enumerate(batch):
        x[b, :len(w)] = torch.tensor(w)
        # logits at position t predict token t+1: targets from the first scored position on
        y[b, first - 1:len(w) - 1] = torch.tensor(w[first:])
    with torch.inference_mode():
        logits = model(input_ids=x.to(device), use_cache=False).logits
        return float(F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(),
                                     ignore_index=-100, reduction="sum"))
