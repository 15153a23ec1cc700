"""Stage 5: a trained model → new music, fast, and always well-formed.

* :mod:`.config` — :class:`GenerationConfig`, the one list of what a request can say, and its limits;
* :mod:`.grammar` — which token ids may legally follow (every sequence decodes, exact bar count);
* :mod:`.sampler` — :class:`Generator`: conditioning, guidance, seeded sampling, one batch;
* :mod:`.prompt` — continuing and infilling a clip; :mod:`.arrange` — finishing a piece.

The lean forward pass is :class:`melodia.model.lean.LeanLlama`; instruments are
:mod:`melodia.music.instruments`.

Example:
    >>> gen = Generator(model, tokenizer)
    >>> ids = gen.generate(GenerationConfig(bars=8, mood="calm", key="F major", n=2, seed=1))
    >>> scores = [tokenizer.decode(x) for x in ids]
"""
from __future__ import annotations

from ..model.lean import LeanLlama
from ..music.instruments import DEFAULT_PROGRAMS, INSTRUMENTS, resolve_instruments
from ..music.meter import parse_meter
from .arrange import clip_to_bars, place_notes, shape_dynamics, unify_sections
from .config import (
                     DYNAMICS,
                     MAX_BARS,
                     MAX_N,
                     MAX_ONSETS,
                     MAX_SECTIONS,
                     GenerationConfig,
                     check_context_bars,
                     with_overrides,
)
from .grammar import BAR, CHORD, DUR, EOS_T, POS, PROG, TEMPO, TSIG, Grammar, State, Vocab
from .sampler import Generator, generate_scores, sample_ids

__all__ = [
    "GenerationConfig", "Generator", "LeanLlama", "generate_scores", "INSTRUMENTS", "DEFAULT_PROGRAMS",
    "MAX_BARS", "MAX_N", "MAX_SECTIONS", "MAX_ONSETS", "DYNAMICS", "parse_meter", "resolve_instruments",
    "shape_dynamics", "clip_to_bars", "unify_sections", "place_notes", "with_overrides", "check_context_bars",
    "sample_ids", "Grammar", "State", "Vocab", "BAR", "CHORD", "DUR", "EOS_T", "POS", "PROG", "TEMPO", "TSIG",
]
