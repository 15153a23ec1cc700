"""Instruments: General MIDI names, a request's instruments resolved to distinct programs, their
ranges, and the plan that gives each requested instrument a part of what the model wrote.

Example: ``resolve_instruments(["piano", "bass"]) == (0, 33)``;
``[p.role for p in plan_parts(["piano", "strings", "bass"], (0, 1, 2)).parts]
== ['melody', 'accompaniment', 'bass']``
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import BadInputError

__all__ = ["DEFAULT_PROGRAMS", "INSTRUMENTS", "DEFAULT_NAMES", "ROLES", "resolve_instruments", "instrument_name",
           "instrument_range", "is_bass", "plays_chords", "model_roles", "Part", "PartPlan", "plan_parts"]

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


# ------------------------------------------------------------------ ranges, kinds and roles
#: sounding ranges (lowest, highest MIDI pitch) by General MIDI family (program // 8), from common
#: orchestration tables; :data:`_RANGES` refines single programs. music21's instruments name only
#: some lowest notes and few highest ones, so the table is melodia's own.
_FAMILY_RANGES = {0: (21, 108), 1: (60, 96), 2: (36, 96), 3: (40, 88), 4: (28, 67), 5: (28, 96),
                  6: (36, 96), 7: (40, 84), 8: (56, 87), 9: (60, 96), 10: (36, 96), 11: (36, 96),
                  12: (36, 96), 13: (36, 96), 14: (36, 96), 15: (36, 96)}
_RANGES = {6: (29, 89), 8: (60, 108), 9: (79, 108), 10: (60, 96), 11: (53, 89), 12: (45, 96),
           13: (65, 108), 14: (60, 77), 15: (48, 84), 21: (53, 89), 22: (60, 96),
           40: (55, 103), 41: (48, 88), 42: (36, 76), 43: (28, 67), 44: (28, 96), 45: (28, 96),
           46: (24, 103), 47: (40, 55), 52: (40, 84), 53: (48, 79), 54: (40, 84),
           56: (54, 84), 57: (40, 72), 58: (28, 58), 59: (54, 84), 60: (41, 77), 61: (40, 84),
           62: (36, 96), 63: (36, 96), 64: (56, 87), 65: (49, 81), 66: (44, 76), 67: (36, 69),
           68: (58, 91), 69: (52, 84), 70: (34, 75), 71: (50, 94), 72: (74, 108), 74: (72, 98)}
#: programs that play a bass line: the bass family, contrabass, tuba, bassoon
_BASS = frozenset([*range(32, 40), 43, 58, 70])
#: programs that play chords (keyboards, mallets, organs, guitars, harp, string and brass
#: sections, choirs, pads, plucked folk instruments); the others play one line
_CHORDS = frozenset([*range(0, 32), 44, 45, 46, 48, 49, 50, 51, 52, 54, 55, 61, 62, 63, *range(88, 96),
                     104, 105, 106, 107, 108])

#: the parts a piece can have: the model's own (melody, counter-melody, accompaniment; drums
#: where its default set has a drum program) and ``bass``, made from the accompaniment
ROLES = ("melody", "counter-melody", "accompaniment", "bass", "drums")


def instrument_name(program: int) -> str:
    """The first name :data:`INSTRUMENTS` gives ``program`` (``"program 5"`` where it gives none).

    Example: ``instrument_name(48) == "strings"``
    """
    return next((k for k, v in INSTRUMENTS.items() if v == program and k not in ("melody", "accompaniment")),
                f"program {program}")


def instrument_range(program: int) -> tuple[int, int]:
    """The (lowest, highest) MIDI pitch ``program`` plays (drums: the whole keyboard).

    Example: ``instrument_range(33) == (28, 67)``
    """
    if program < 0:
        return (0, 127)
    return _RANGES.get(program, _FAMILY_RANGES[program // 8])


def is_bass(program: int) -> bool:
    """Whether ``program`` plays the bass line (bass family 32-39, contrabass, tuba, bassoon).

    Example: ``is_bass(33) and not is_bass(0)``
    """
    return program in _BASS


def plays_chords(program: int) -> bool:
    """Whether ``program`` can play an accompaniment's chords (piano, guitar, strings ...), not
    only one line (flute, trumpet, violin ...). Example: ``plays_chords(24) and not plays_chords(73)``
    """
    return program in _CHORDS


def model_roles(programs: Sequence[int]) -> dict[int, str]:
    """The role of each program of a model's default set (melodia.json's ``default_programs``),
    by the order ``corpus.ensemble_programs`` writes them: the first pitched program is the
    melody, the last the accompaniment, any between counter-melodies; -1 is drums.

    Example: ``model_roles((0, 1, 2)) == {0: "melody", 1: "counter-melody", 2: "accompaniment"}``
    """
    pitched = [p for p in programs if p != -1]
    out = {p: ("melody" if k == 0 else "accompaniment" if k == len(pitched) - 1 else "counter-melody")
           for k, p in enumerate(pitched)}
    if -1 in programs:
        out[-1] = "drums"
    return out


@dataclass(frozen=True)
class Part:
    """One requested instrument's part: its ``program``, the ``role`` it plays and the model's
    roles whose notes it gets (``plays``; ``bass`` is made from the accompaniment). With
    ``lead_fill`` a melody part also takes the counter-melody's notes in bars where the melody
    rests (POP909's counter-melody plays the intros and fills). Example: ``Part(48, "accompaniment",
    ("accompaniment", "counter-melody"))``"""

    program: int
    role: str
    plays: tuple[str, ...]
    lead_fill: bool = False


@dataclass(frozen=True)
class PartPlan:
    """How a piece sampled with the model's own parts (``sampled``: program → role) is given to
    the requested instruments (``parts``), and ``warnings``: one line for each thing asked for
    that cannot be honoured, and why. Example: ``plan_parts(["flute"], (0, 1, 2)).warnings``"""

    parts: tuple[Part, ...]
    sampled: tuple[tuple[int, str], ...]
    warnings: tuple[str, ...] = ()


def plan_parts(instruments: Sequence[str | int] | str | None, model_programs: Sequence[int]) -> PartPlan | None:
    """The parts of a request's ``instruments`` when the model writes with its own set
    ``model_programs`` (melodia.json's ``default_programs``; see :func:`model_roles`); None
    when the request names none or exactly the model's own set (nothing to arrange).

    The rule (docs/daw.md, "Instruments and their parts"): a bass instrument
    (:func:`is_bass`) plays a bass line made from the accompaniment; the first other instrument
    plays the melody; of the rest, the first that plays chords (:func:`plays_chords`, else the
    first) plays the accompaniment and the next the counter-melody. A model part nobody plays
    goes to an instrument that can hold it: the counter-melody to the melody where the melody
    rests and to the accompaniment elsewhere, the accompaniment (and counter-melody) to a
    melody instrument that plays chords. What cannot be honoured (drums on a model without a
    drum part, a second bass, more instruments than parts, chords on an instrument that plays
    one line) is left out and said in ``warnings``. Unknown names raise :class:`BadInputError`
    (:func:`resolve_instruments`).

    Example: ``plan_parts(["piano", "bass"], (0, 1, 2)).parts[0].plays
    == ("melody", "counter-melody", "accompaniment")``
    """
    if instruments is None:
        return None
    requested = resolve_instruments(instruments, model_programs)
    if set(requested) == set(model_programs):
        return None
    roles = model_roles(model_programs)
    have = set(roles.values())
    warnings: list[str] = []
    parts: list[Part] = []
    others = [p for p in requested if p != -1 and not is_bass(p)]
    basses = [p for p in requested if p != -1 and is_bass(p)]
    if -1 in requested:
        if "drums" in have:
            parts.append(Part(-1, "drums", ("drums",)))
        else:
            warnings.append("drums left out: the model writes no drum part (its own parts are "
                            + ", ".join(r for r in ROLES if r in have) + ")")
    if basses:
        parts.append(Part(basses[0], "bass", ("bass",)))
        warnings += [f"{instrument_name(p)} left out: one bass line, played by {instrument_name(basses[0])}"
                     for p in basses[1:]]
    if not others:
        if not parts:
            raise BadInputError(f"instruments {', '.join(instrument_name(p) for p in requested)}: none of them "
                                "can play what this model writes; add a pitched instrument, e.g. piano")
        warnings.append("no instrument plays the melody or the accompaniment (list one first, e.g. "
                        f"piano,{instrument_name(parts[-1].program)})")
        return PartPlan(tuple(parts), tuple(roles.items()), tuple(warnings))
    melody, rest = others[0], others[1:]
    acc = counter = None
    if "accompaniment" in have and rest:
        acc = next((p for p in rest if plays_chords(p)), rest[0])
        rest.remove(acc)
    if "counter-melody" in have and rest:
        counter = rest.pop(0)
    roles_here = [r for r in ROLES if r in have or r == "bass"]
    warnings += [f"{instrument_name(p)} left out: more instruments than parts ({', '.join(roles_here)})"
                 for p in rest]
    mel_plays, acc_plays = ["melody"], ["accompaniment"]
    lead_fill = "counter-melody" in have and counter is None
    dropped = []
    if lead_fill:
        if acc is not None:
            acc_plays.append("counter-melody")
        elif plays_chords(melody):
            mel_plays.append("counter-melody")
        else:
            dropped.append("counter-melody")
    if "accompaniment" in have and acc is None:
        if plays_chords(melody):
            mel_plays.append("accompaniment")
        else:
            dropped.append("accompaniment")
    if dropped:
        warnings.append(f"the model's {' and '.join(dropped)} left out: {instrument_name(melody)} plays one "
                        f"line (add an instrument that plays chords, e.g. {instrument_name(melody)},piano)")
    lead_fill = lead_fill and "counter-melody" not in mel_plays  # (a melody that plays it all needs no fill)
    parts.insert(0, Part(melody, "melody", tuple(mel_plays), lead_fill))
    if acc is not None:
        parts.append(Part(acc, "accompaniment", tuple(acc_plays)))
    if counter is not None:
        parts.append(Part(counter, "counter-melody", ("counter-melody",)))
    order = {p: k for k, p in enumerate(requested)}
    return PartPlan(tuple(sorted(parts, key=lambda q: order[q.program])), tuple(roles.items()), tuple(warnings))
