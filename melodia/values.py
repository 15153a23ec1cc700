"""Checks for the plain values a request carries: numbers, integers, true/false.

One home for them, so the API, the generation config and the server judge a value alike.
``is_*`` answer yes or no; :func:`number` and :func:`integer` return the value or raise
:class:`BadInputError` naming it.

Example: ``integer(8.0, "bars", 1, 64) == 8``; ``is_number(float("nan")) is False``
"""
from __future__ import annotations

import math
from typing import Any

from .errors import BadInputError

__all__ = ["is_int", "is_number", "is_bool", "number", "integer", "count"]


def count(n: int, word: str, plural: str | None = None) -> str:
    """``n`` and ``word``, plural unless ``n`` is 1. Example: ``count(1, "bar") == "1 bar"``; ``count(8, "bar") == "8 bars"``."""
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def is_int(value: Any) -> bool:
    """An ``int`` that is not a bool. Example: ``is_int(True) is False``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool. Example: ``is_number(1e400) is False``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_bool(value: Any) -> bool:
    """Exactly ``True`` or ``False``. Example: ``is_bool(1) is False``."""
    return isinstance(value, bool)


def number(value: Any, what: str, lo: float, hi: float, lo_open: bool = False) -> float:
    """``value`` as a float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``), else BadInputError.

    Example: ``number(90, "tempo", 20.0, 400.0) == 90.0``
    """
    if not is_number(value):
        raise BadInputError(f"{what} must be a number, got {value!r}")
    if value < lo or value > hi or (lo_open and value == lo):
        raise BadInputError(f"{what} {value!r} is outside {'(' if lo_open else '['}{lo:g}, {hi:g}]")
    return float(value)


def integer(value: Any, what: str, lo: int, hi: int) -> int:
    """``value`` as an int in ``[lo, hi]`` (a whole float such as ``60.0`` counts), else BadInputError.

    Example: ``integer(60.0, "pitch", 0, 127) == 60``
    """
    if not is_int(value):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise BadInputError(f"{what} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise BadInputError(f"{what} {value!r} is outside {lo}-{hi}")
    return int(value)
