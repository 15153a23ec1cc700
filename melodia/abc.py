"""ABC books: split into tunes, read a field, and put a tune's pickup before its first bar line.

symusic reads one ABC tune at a time (through abc2midi); a book holds many, and a tune that
starts with an anacrusis comes out with every bar line in the middle of a real bar until
:func:`fix_abc_pickup` pads the pickup with a rest.

Example: ``score, pickup = fix_abc_pickup(symusic.Score.from_abc(tune), tune)``
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from .music.meter import first_bar_ticks
from .music.notes import onset_ticks
from .prepare import shift_score

if TYPE_CHECKING:
    import symusic


def split_abc(text: str) -> list[tuple[str, str]]:
    """Split an ABC book into ``(reference number, tune text)`` pairs, file header prepended.

    Example:
        >>> split_abc("X:1\\nT:A\\nK:C\\nCDE|\\n\\nX:2\\nT:B\\nK:G\\nGAB|\\n")[1][0]
        '2'
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    header: list[str] = []
    tunes: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("X:"):
            tunes.append((line[2:].strip(), [line]))
        elif tunes:
            tunes[-1][1].append(line)
        elif line.startswith("%%") or (len(line) > 1 and line[1] == ":" and line[0] in "LMQ"):
            header.append(line)  # file-wide directives and defaults
    return [(ref, "\n".join([body[0], *header, *body[1:]]) + "\n") for ref, body in tunes]


def abc_field(tune: str, name: str) -> str | None:
    """The first ``name:`` field of a tune, stripped; None when it has none.

    Example: ``abc_field("X:1\\nT:Drowsy Maggie\\nK:D\\n", "T")  # 'Drowsy Maggie'``
    """
    m = re.search(rf"^{name}:(.*)$", tune, re.M)
    return m.group(1).strip() if m else None


def abc_pickup_onsets(tune: str) -> int:
    """How many notes (a chord counts once) an ABC tune plays before its first bar line: 0 for
    a tune that starts on a bar line. Reads the body after the ``K:`` line, skipping fields,
    comments, quoted chord names, decorations and grace notes.

    Example: ``abc_pickup_onsets("X:1\\nM:4/4\\nK:F\\nC2 | F2FF A2GF |")  # 1``
    """
    lines = tune.replace("\r", "").split("\n")
    body, in_body = [], False
    for ln in lines:
        if not in_body:
            in_body = ln.startswith("K:")
            continue
        if re.match(r"^[A-Za-z]:", ln) or ln.startswith("%"):
            continue
        body.append(ln.split("%", 1)[0])
    text = re.sub(r'"[^"]*"|![^!]*!|\+[^+\s]*\+|\{[^}]*\}|\[[A-Za-z]:[^\]]*\]', "", " ".join(body))
    count, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "|" or (c == ":" and i + 1 < n and text[i + 1] == ":"):
            return count
        if c == "[":  # a chord: one onset
            j = text.find("]", i)
            inner = text[i + 1: j if j > 0 else n]
            if re.search(r"[A-Ga-g]", inner):
                count += 1
            i = (j if j > 0 else n) + 1
            continue
        if c in "ABCDEFGabcdefg":
            count += 1
        i += 1
    return 0


def fix_abc_pickup(score: "symusic.Score", tune: str) -> tuple["symusic.Score", float]:
    """An ABC tune whose first bar is short (an anacrusis) padded with a rest before it, so the
    note after the first bar line starts bar 2; also drops abc2midi's one-tick lead-in.
    Returns the score and the pickup length in beats (0 when none).

    Example: ``score, pickup = fix_abc_pickup(symusic.Score.from_abc(tune), tune)``
    """
    tpq = score.ticks_per_quarter
    onsets = np.unique(onset_ticks(score))
    if onsets.size == 0:
        return score, 0.0
    lead = int(onsets[0]) if 0 < onsets[0] < tpq // 24 else 0
    if lead:
        score = shift_score(score, -lead)
        onsets = onsets - lead
    k = abc_pickup_onsets(tune)
    bar = first_bar_ticks(score)
    if k == 0 or k >= onsets.size:
        return score, 0.0
    first_bar = int(onsets[k])
    if first_bar <= 0 or first_bar >= bar - tpq // 24:
        return score, 0.0
    pad = int(round(bar - first_bar))
    return shift_score(score, pad), first_bar / tpq
