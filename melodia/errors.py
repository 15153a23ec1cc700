"""One error family for everything melodia reports to a user.

Every failure a user can cause (a bad MIDI file, a missing model file, an unknown mood, an
output that already exists) is raised as a :class:`MelodiaError` (or a subclass) whose
message names the file or value and the problem. Anything else escaping is a bug.

Example:
    >>> raise BadMidiError("song.mid", "truncated track chunk")
    Traceback (most recent call last):
    melodia.errors.BadMidiError: song.mid: truncated track chunk
"""
from __future__ import annotations


class MelodiaError(Exception):
    """Base class of every error melodia raises on purpose."""


class BadMidiError(MelodiaError):
    """A music file that cannot be read or is outside sane limits."""

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class BadModelError(MelodiaError):
    """A model or tokenizer directory that is missing files or holds wrong values."""


class BadInputError(MelodiaError):
    """A parameter value a caller gave that melodia cannot use (unknown mood, bars out of range...)."""


class OutputExistsError(MelodiaError):
    """Refusing to overwrite an existing output without ``force``."""


class MelodiaWarning(UserWarning):
    """Something melodia changed in what it was given, and the user should know (dense tempo
    changes merged on reading a MIDI file). The CLI prints it as one ``melodia: warning: …``
    line; the server returns it in its answer's ``"warnings"``.

    Example: ``warnings.warn(MelodiaWarning("a.mid: 20000 tempo changes merged into 384"))``
    """
