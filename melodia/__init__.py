"""melodia: mood-conditioned symbolic music composition.

Pipeline (one module per stage): corpus -> tokenizer -> model -> train / generate -> render.
Heavy libraries (torch, music21, miditok) are imported inside the functions that need them,
so ``import melodia`` stays fast; :class:`Composer` (from ``melodia.api``), :class:`Piece` and
:class:`Note` (from ``melodia.piece``) are loaded on first use.

Example:
    >>> from melodia import Composer
    >>> Composer.load().generate(mood="calm", bars=8, seed=1)[0].save("calm.mid")
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import MelodiaError
from .version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from .api import Composer
    from .piece import Note, Piece

__all__ = ["Composer", "MelodiaError", "Note", "Piece", "__version__"]

_LAZY = {"Composer": "api", "Piece": "piece", "Note": "piece"}


def __getattr__(name: str) -> Any:
    """Import ``melodia.api`` (``melodia.piece``) only when ``melodia.Composer`` (Piece, Note) is first used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'melodia' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
