"""melodia: mood-conditioned symbolic music composition.

Pipeline (one module per stage): corpus -> tokenizer -> model -> train / generate -> render.
Heavy libraries (torch, music21, miditok) are imported inside the functions that need them,
so ``import melodia`` stays fast.
"""
from .errors import MelodiaError

__version__ = "0.1.0"
__all__ = ["MelodiaError", "__version__"]
