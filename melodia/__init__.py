"""melodia: mood-conditioned symbolic music composition.

Pipeline (one module per stage): corpus -> tokenizer -> model -> train / generate -> render.
Heavy libraries (torch, music21, miditok) are imported inside the functions that need them,
so ``import melodia`` stays fast; :class:`Composer`, :class:`Piece` and :class:`Note` (from
``melodia.api``) are loaded on first use.

Example:
    >>> from melodia import Composer
    >>> Composer.load().generate(mood="calm", bars=8, seed=1)[0].save("calm.mid")
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import MelodiaError

if TYPE_CHECKING:  # pragma: no cover
    from .api import Composer, Note, Piece

__version__ = "0.1.0"
__all__ = ["Composer", "MelodiaError", "Note", "Piece", "__version__"]

_LAZY = {"Composer": "api", "Piece": "api", "Note": "api"}


def __getattr__(name: str) -> Any:
    """Import ``melodia.api`` only when ``melodia.Composer`` (or Piece, Note) is first used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'melodia' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
