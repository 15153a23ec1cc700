"""Instruments: General MIDI names, and a request's instruments resolved to distinct programs.

Example: ``resolve_instruments(["piano", "bass"]) == (0, 33)``
"""
from __future__ import annotations

from collections.abc import Sequence

from ..errors import BadInputError

__all__ = ["DEFAULT_PROGRAMS", "INSTRUMENTS", "DEFAULT_NAMES", "resolve_instruments"]

DEFAULT_PROGRAMS = (0, 1)  # melody + accompaniment on two piano programs, for a model that names none
# A model directory may name its own default instrument set in melodia.json ("default_programs"):
# the shipped model's is POP909's layout (0 melody, 1 counter-melody, 2 piano accompaniment).


#: Instrument names → General MIDI programs (0-based; drums are -1, MidiTok's drum program).
INSTRUMENTS: dict[str, int] = {
    "piano": 0, "grand piano": 0, "acoustic piano": 0, "bright piano": 1, "electric grand": 2,
    "honky-tonk": 3, "electric piano": 4, "rhodes": 4, "harpsichord": 6, "clavinet": 7,
    "celesta": 8, "glockenspiel": 9, "music box": 10, "vibraphone": 11, "marimba": 12,
    "xylophone": 13, "bells": 14, "tubular bells": 14, "dulcimer": 15, "organ": 16,
    "rock organ": 18, "church organ": 19, "accordion": 21, "harmonica": 22,
    "guitar": 24, "nylon guitar": 24, "classical guitar": 24, "acoustic guitar": 25,
    "steel guitar": 25, "jazz guitar": 26, "electric guitar": 27, "overdriven guitar": 29,
    "distortion guitar": 30, "bass": 33, "acoustic bass": 32, "electric bass": 33,
    "fretless bass": 35, "slap bass": 36, "synth bass": 38, "violin": 40, "viola": 41,
    "cello": 42, "contrabass": 43, "double bass": 43, "tremolo strings": 44, "pizzicato": 45,
    "harp": 46, "timpani": 47, "strings": 48, "string ensemble": 48, "synth strings": 50,
    "choir": 52, "voice": 53, "trumpet": 56, "trombone": 57, "tuba": 58, "horn": 60,
    "french horn": 60, "brass": 61, "synth brass": 62, "soprano sax": 64, "sax": 65,
    "saxophone": 65, "alto sax": 65, "tenor sax": 66, "baritone sax": 67, "oboe": 68,
    "english horn": 69, "bassoon": 70, "clarinet": 71, "piccolo": 72, "flute": 73,
    "recorder": 74, "pan flute": 75, "whistle": 78, "ocarina": 79, "lead": 80,
    "synth lead": 80, "square lead": 80, "saw lead": 81, "pad": 88, "synth pad": 89,
    "drums": -1, "drum kit": -1, "percussion": -1,
    "melody": 0, "accompaniment": 1,
}
#: names meaning "the model's own default set"
DEFAULT_NAMES = {"melody + accompaniment", "melody+accompaniment", "melody and accompaniment", "default"}


def resolve_instruments(instruments: Sequence[str | int] | str | None,
                        default: Sequence[int] = DEFAULT_PROGRAMS) -> tuple[int, ...]:
    """Instrument names / GM programs → distinct programs (a repeated instrument moves to a
    free program of its General MIDI family, as the corpus does). ``None`` or "default" (also
    "melody + accompaniment") is ``default``: the model's own set where it names one.

    Example: ``resolve_instruments(["piano", "bass"]) == (0, 33)``;
    ``resolve_instruments(None) == (0, 1)``
    """
    if instruments is None:
        return tuple(default)
    if isinstance(instruments, (str, int)):
        instruments = [instruments]
    out: list[int] = []
    for item in instruments:
        if isinstance(item, str) and " ".join(item.lower().split()) in DEFAULT_NAMES:
            progs = list(default)
        elif isinstance(item, bool):
            raise BadInputError(f"unknown instrument {item!r}")
        elif isinstance(item, int) or (isinstance(item, str) and item.strip().lstrip("-").isdigit()):
            p = int(item)
            if not -1 <= p <= 127:
                raise BadInputError(f"instrument program {item!r}: must be 0-127, or -1 for drums")
            progs = [p]
        elif isinstance(item, str):
            name = " ".join(item.lower().replace("_", " ").split())
            if name not in INSTRUMENTS:
                raise BadInputError(f"unknown instrument {item!r}; known: {', '.join(sorted(INSTRUMENTS))}, "
                                    "or a General MIDI program number")
            progs = [INSTRUMENTS[name]]
        else:
            raise BadInputError(f"unknown instrument {item!r}")
        for p in progs:
            if p in out:
                if p == -1:
                    continue
                family = range(p // 8 * 8, p // 8 * 8 + 8)
                free = [q for q in list(family[family.index(p):]) + list(family) if q not in out]
                if not free:
                    raise BadInputError(f"too many instruments of the family of program {p}")
                p = free[0]
            out.append(p)
    if not out:
        raise BadInputError("instruments: give at least one instrument")
    return tuple(out)
