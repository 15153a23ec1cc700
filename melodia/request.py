"""What a POST body to ``melodia serve`` may say, and how it becomes a :class:`~melodia.api.Composer` call.

The generation fields and their defaults come from :class:`~melodia.generate.GenerationConfig`
(the one list of what a request can say) and the limits from :mod:`melodia.generate`
(``MAX_BARS``, ``MAX_N``); :data:`FIELDS` adds only how JSON spells and bounds each one.
``tests/test_parameters.py`` fails when a field the API takes is missing here without a reason
in :data:`LEFT_OUT`. Every check answers a :class:`RequestError` (HTTP 400) naming the field,
before the request queues for the model.

Example:
    >>> parse_request({"mood": "calm", "bars": 8}, composer, "/generate")[0]
    'generate'
"""
from __future__ import annotations

import base64
import binascii
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import TYPE_CHECKING, Any

from .api import Composer, parse_bar_span
from .errors import BadInputError, MelodiaError
from .generate import DYNAMICS, MAX_BARS, MAX_N, GenerationConfig
from .midifile import load_score
from .music.instruments import resolve_instruments
from .music.keys import parse_key
from .music.meter import bar_starts
from .piece import notes_to_score
from .values import is_bool, is_int, is_number

if TYPE_CHECKING:  # pragma: no cover
    import symusic

MAX_PROMPT_NOTES = 10_000       # notes of a prompt, given as notes or in its MIDI file
#: what one MusicXML render (``POST /render``) may hold: music21 works note by note, measure by
#: measure and change by change (on a busy 2-core machine 3,214 notes in 400 bars × 2 parts took
#: 20 s, 500 tempo changes 12 s: docs/daw.md, "Security and limits"); past one of these: 413
MAX_NOTATION_NOTES = 4_000
MAX_NOTATION_MEASURES = 1_024   # bars × parts with notes
MAX_NOTATION_CHANGES = 512      # tempo and time-signature changes, after dense tempos are merged
MAX_INSTRUMENTS = 16
MAX_TAGS = 16
TEMPO_RANGE = (20.0, 400.0)     # quarter notes per minute, as GenerationConfig.validate checks (tests/test_parameters.py)

#: GenerationConfig's defaults: what a field left out of a request means
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclass_fields(GenerationConfig)}
#: a prompt's defaults: Composer.continue_from's (new bars, bars of context)
PROMPT_DEFAULTS: dict[str, Any] = {name: inspect.signature(Composer.continue_from).parameters[name].default
                                   for name in ("bars", "context_bars", "include_prompt")}


class RequestError(Exception):
    """A request the server refuses: HTTP status and a message for the client.

    Example: ``raise RequestError(400, "bars must be an integer")``
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad(msg: str) -> RequestError:
    """A 400 answer. Example: ``raise bad("n must be an integer")``."""
    return RequestError(400, msg)


# ============================================================================ JSON values
def int_field(body: dict, name: str, lo: int, hi: int, default: Any) -> Any:
    """``body[name]`` as an integer in [lo, hi] (absent or null: ``default``). Example: ``int_field(b, "n", 1, 16, 1)``."""
    v = body.get(name, default)
    if v is None:
        return default
    if not is_int(v):
        raise bad(f"{name} must be an integer from {lo} to {hi}, got {json.dumps(v)}")
    if not lo <= v <= hi:
        raise bad(f"{name} {v} is out of range: must be from {lo} to {hi}")
    return v


def num_field(body: dict, name: str, lo: float, hi: float, default: Any, lo_open: bool = False) -> Any:
    """``body[name]`` as a finite float in [lo, hi] (``lo_open``: above lo). Example: ``num_field(b, "tempo", 20, 400, None)``."""
    v = body.get(name, default)
    if v is None:
        return default
    if not is_number(v):
        raise bad(f"{name} must be a number, got {json.dumps(v)}")
    if v < lo or v > hi or (lo_open and v == lo):
        raise bad(f"{name} {v} is out of range: must be {'above' if lo_open else 'from'} {lo:g} "
                  f"{'and at most' if lo_open else 'to'} {hi:g}")
    return float(v)


def str_field(body: dict, name: str, default: Any, max_len: int = 64) -> Any:
    """``body[name]`` as a string of at most ``max_len`` characters. Example: ``str_field(b, "key", None)``."""
    v = body.get(name, default)
    if v is None:
        return default
    if not isinstance(v, str):
        raise bad(f"{name} must be a string, got {json.dumps(v)[:80]}")
    if len(v) > max_len:
        raise bad(f"{name} is too long ({len(v)} characters; limit {max_len})")
    return v


def bool_field(body: dict, name: str, default: bool) -> bool:
    """``body[name]`` as true or false. Example: ``bool_field(b, "vary", False)``."""
    v = body.get(name, default)
    if not is_bool(v):
        raise bad(f"{name} must be true or false, got {json.dumps(v)[:80]}")
    return v


def list_field(body: dict, name: str, limit: int, item_ok: Callable[[Any], bool], what: str) -> Any:
    """``body[name]`` as a list of at most ``limit`` items (one bare item counts as a list).

    Example: ``list_field(b, "tags", 16, lambda x: isinstance(x, str), "tags")``
    """
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, (str, int)) and not isinstance(v, bool) and item_ok(v):
        v = [v]
    if not isinstance(v, list) or not all(item_ok(x) for x in v):
        raise bad(f"{name} must be a list of {what}, got {json.dumps(v)[:80]}")
    if len(v) > limit:
        raise bad(f"{name}: {len(v)} items is too many (limit {limit})")
    return v


def _instrument_ok(x: Any) -> bool:
    return (isinstance(x, str) and len(x) <= 64) or is_int(x)


def _tag_ok(x: Any) -> bool:
    return isinstance(x, str) and len(x) <= 64


@dataclass(frozen=True)
class Field:
    """How JSON spells one request field: its kind (``int``, ``num``, ``str``, ``bool``,
    ``list``), bounds and default. Example: ``Field("int", 1, MAX_N)``."""

    kind: str
    lo: float = 0
    hi: float = 0
    lo_open: bool = False
    max_len: int = 64
    default: Any = None
    item_ok: Callable[[Any], bool] | None = None
    what: str = ""

    def read(self, body: dict, name: str, default: Any = None) -> Any:
        """The checked value of ``body[name]``. Example: ``FIELDS["n"].read({"n": 2}, "n")  # 2``."""
        default = self.default if default is None else default
        if self.kind == "int":
            return int_field(body, name, int(self.lo), int(self.hi), default)
        if self.kind == "num":
            return num_field(body, name, self.lo, self.hi, default, self.lo_open)
        if self.kind == "str":
            return str_field(body, name, default, self.max_len)
        if self.kind == "bool":
            return bool_field(body, name, default)
        return list_field(body, name, int(self.hi), self.item_ok, self.what)


#: the generation fields a request may carry, in the order they are checked (the first bad one
#: is the one named); defaults are GenerationConfig's (``dynamics``: Composer's)
FIELDS: dict[str, Field] = {
    "mood": Field("str"),
    "valence": Field("num", -1.0, 1.0),
    "arousal": Field("num", -1.0, 1.0),
    "bars": Field("int", 1, MAX_BARS, default=DEFAULTS["bars"]),
    "key": Field("str"),
    "n": Field("int", 1, MAX_N, default=DEFAULTS["n"]),
    "seed": Field("int", -(2 ** 63), 2 ** 64 - 1),
    "temperature": Field("num", 0.0, 10.0, lo_open=True, default=DEFAULTS["temperature"]),
    "guidance": Field("num", 0.0, 20.0, default=DEFAULTS["guidance"]),
    "top_k": Field("int", 0, 100_000, default=DEFAULTS["top_k"]),
    "top_p": Field("num", 0.0, 1.0, lo_open=True, default=DEFAULTS["top_p"]),
    "instruments": Field("list", hi=MAX_INSTRUMENTS, item_ok=_instrument_ok,
                         what="instrument names or General MIDI programs"),
    "tags": Field("list", hi=MAX_TAGS, item_ok=_tag_ok, what="tags"),
    "style": Field("str"),
    "in_key": Field("bool", default=DEFAULTS["in_key"]),
    "leading_tone": Field("bool", default=DEFAULTS["leading_tone"]),
    "dynamics": Field("str", max_len=8, default=DYNAMICS[0]),
    "tempo": Field("num", *TEMPO_RANGE),
    "meter": Field("str", max_len=8),
    "chords": Field("str", max_len=512),
    "form": Field("str", max_len=16),
    "vary": Field("bool", default=DEFAULTS["vary"]),
    "repeat": Field("str", max_len=16),  # "sections" or "exact" (GenerationConfig checks)
}
#: GenerationConfig fields a request cannot set, and why
LEFT_OUT = {
    "max_tokens": "a budget derived from bars; a client has no way to choose it well",
    "chord_tones": "a sampling constraint for experiments; the API does not expose it either",
    "tonic_frame": "a sampling constraint for experiments; the API does not expose it either",
}
#: the fields of a prompt (POST /continue, /infill, or /generate with a prompt)
PROMPT_FIELDS = {"prompt", "midi_base64", "context_bars", "include_prompt"}
#: response switches
OPTION_FIELDS = {"include_midi", "include_notes"}
GENERATE_FIELDS = set(FIELDS) | OPTION_FIELDS
RENDER_FIELDS = {"midi_base64", "format", "sample_rate"}
#: which sampling fields are read, after the mood (in this order)
_SAMPLING = ("bars", "key", "n", "seed", "temperature", "guidance", "top_k", "top_p", "instruments", "tags",
             "style", "in_key", "leading_tone", "dynamics")


def midi_from_base64(data: str) -> bytes:
    """The bytes of a ``midi_base64`` field (not yet parsed). Example: ``midi_from_base64(b64)[:4]  # b'MThd'``."""
    try:
        return base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise bad("midi_base64 is not valid base64") from None


def score_of(raw: bytes, warnings: list[str] | None = None) -> "symusic.Score":
    """A MIDI file's bytes (never a path) parsed, or a 400; what reading changed (dense tempo
    changes merged) is appended to ``warnings``. Example: ``score_of(midi_from_base64(b64), [])``."""
    try:
        return load_score(raw, "midi_base64", [] if warnings is None else warnings)
    except MelodiaError as e:
        raise bad(str(e)) from None


def check_notation_size(score: "symusic.Score") -> None:
    """Refuse (413, naming the limit) a score too big to make MusicXML of in a request's time:
    :data:`MAX_NOTATION_NOTES`, :data:`MAX_NOTATION_MEASURES`, :data:`MAX_NOTATION_CHANGES`.

    Example: ``check_notation_size(score_of(raw))  # None, or RequestError(413, ...)``
    """
    notes = score.note_num()
    parts = sum(1 for t in score.tracks if len(t.notes))
    measures = len(bar_starts(score)) * parts
    changes = len(score.tempos) + len(score.time_signatures)
    for what, n, limit in (("notes", notes, MAX_NOTATION_NOTES),
                           (f"measures ({measures // max(parts, 1)} bars × {parts} parts)", measures,
                            MAX_NOTATION_MEASURES),
                           ("tempo and time-signature changes", changes, MAX_NOTATION_CHANGES)):
        if n > limit:
            raise RequestError(413, f"midi_base64 is too big for MusicXML here: {n} {what}, the limit is "
                                    f"{limit} (melodia render --musicxml has no such limit)")


def parse_render(body: Any) -> tuple[bytes, str, int]:
    """Check a ``POST /render`` body: ``(midi bytes, "wav" | "musicxml", sample rate)``.

    Example: ``parse_render({"midi_base64": b64, "format": "wav"})[1]  # 'wav'``
    """
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object, like {\"midi_base64\": \"...\", \"format\": \"wav\"}")
    unknown = sorted(set(body) - RENDER_FIELDS)
    if unknown:
        raise bad(f"unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(RENDER_FIELDS))}")
    fmt = str_field(body, "format", "wav", max_len=16)
    if fmt not in ("wav", "musicxml"):
        raise bad(f"format {fmt!r}: use \"wav\" or \"musicxml\"")
    rate = int_field(body, "sample_rate", 8000, 48000, 44100)
    data = body.get("midi_base64")
    if not isinstance(data, str) or not data.strip():
        raise bad("/render needs \"midi_base64\": a MIDI file, base64-encoded (a piece's midi_base64)")
    return midi_from_base64(data), fmt, rate


def parse_request(body: Any, composer: "Composer", route: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Check a POST body and turn it into a Composer call.

    Returns ``(method, kwargs, options)``: ``method`` is ``"generate"``, ``"continue_from"`` or
    ``"infill"``, ``kwargs`` its keyword arguments, ``options`` the response switches
    (``include_midi``, ``include_notes``) and ``warnings``, what reading a ``midi_base64``
    prompt changed (dense tempo changes merged; the answer's pieces carry them). Raises
    :class:`RequestError` (400) naming the first bad field.

    Example:
        >>> parse_request({"mood": "calm", "bars": 8}, composer, "/generate")[0]
        'generate'
    """
    body, span, has_prompt = _check_shape(body, route)
    kw = {name: FIELDS[name].read(body, name) for name in ("mood", "valence", "arousal")}
    _call(composer.resolve_mood, kw["mood"], kw["valence"], kw["arousal"])
    kw.update({name: FIELDS[name].read(body, name, PROMPT_DEFAULTS["bars"] if name == "bars" and has_prompt else None)
               for name in _SAMPLING})
    kw["tags"] = kw["tags"] or DEFAULTS["tags"]
    if kw["dynamics"] not in DYNAMICS:
        raise bad(f"dynamics {kw['dynamics']!r}: use \"mood\" or \"flat\"")
    tempo = FIELDS["tempo"].read(body, "tempo")
    meter = FIELDS["meter"].read(body, "meter")
    meter = meter.replace(" ", "") if meter is not None else None
    # the rest of the checks the model would make, done before queueing for it
    if kw["key"] is not None:
        _call(parse_key, kw["key"])
    if kw["style"] is not None:  # an unknown style names the model's (Composer.styles)
        _call(composer.tokenizer.resolve_style, kw["style"])
    if kw["instruments"] is not None:
        _call(resolve_instruments, kw["instruments"])
    if meter is not None and meter not in composer.meters:
        raise bad(f"meter {meter!r} is not one this model writes; use one of {', '.join(composer.meters)}")
    options: dict[str, Any] = {name: bool_field(body, name, True) for name in ("include_midi", "include_notes")}
    options["warnings"] = []
    chords = FIELDS["chords"].read(body, "chords")
    if not has_prompt:
        form, vary = FIELDS["form"].read(body, "form"), FIELDS["vary"].read(body, "vary")
        repeat = FIELDS["repeat"].read(body, "repeat")
        # the form and chords checked here, not after waiting for the model
        cfg = GenerationConfig(bars=kw["bars"], meter=meter or "4/4", chords=chords, form=form, vary=vary,
                               repeat=repeat)
        _call(cfg.validate)
        _call(cfg.repeat_mode, composer.tokenizer.has_sections)  # "sections" of a model without them
        kw.update(tempo=tempo, meter=meter or "4/4", chords=chords, form=form, vary=vary, repeat=repeat)
        return "generate", kw, options
    if route == "/infill":
        kw["bars"] = span
    if chords is not None:  # the new bars' chords (a continuation's or the rewritten ones)
        new_bars = min(span[1] - span[0] + 1, MAX_BARS) if route == "/infill" else kw["bars"]
        _call(GenerationConfig(bars=new_bars, chords=chords).validate)
    kw["chords"] = chords
    kw.update(_prompt_kwargs(body, route, tempo, meter, options["warnings"]))
    return ("infill" if route == "/infill" else "continue_from"), kw, options


def _call(check: Callable[..., Any], *args: Any) -> Any:
    """``check(*args)``, its :class:`BadInputError` answered as a 400."""
    try:
        return check(*args)
    except BadInputError as e:
        raise bad(str(e)) from None


def _check_shape(body: Any, route: str) -> tuple[dict, tuple[int, int] | None, bool]:
    """Which fields the route allows: ``(body without an infill's bars, the infill span, has a prompt)``."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object, like {\"mood\": \"calm\", \"bars\": 8}")
    unknown = sorted(set(body) - GENERATE_FIELDS - PROMPT_FIELDS)
    if unknown:
        raise bad(f"unknown field(s) {', '.join(map(repr, unknown))}; known: "
                  f"{', '.join(sorted(GENERATE_FIELDS | PROMPT_FIELDS))}")
    has_prompt = body.get("prompt") is not None or body.get("midi_base64") is not None
    if route in ("/continue", "/infill") and not has_prompt:
        raise bad(f"{route} needs a prompt: \"prompt\" (a list of notes) or \"midi_base64\" (a MIDI file)")
    span = None
    if route == "/infill":
        span = _infill_span(body)
        body = {k: v for k, v in body.items() if k != "bars"}
    for name in ("form", "vary", "repeat"):
        if name in body and (has_prompt or route != "/generate"):
            raise bad(f"{name} applies to a new piece (POST /generate with no prompt)")
    if not has_prompt:
        extra = sorted(k for k in ("context_bars", "include_prompt") if k in body)
        if extra:
            raise bad(f"{', '.join(extra)} only apply with a prompt (\"prompt\" or \"midi_base64\")")
    return body, span, has_prompt


def _infill_span(body: dict) -> tuple[int, int]:
    span = body.get("bars")
    if span is None:
        raise bad("/infill needs \"bars\": the first and last bar to rewrite, like [5, 8] or \"5-8\"")
    if "include_prompt" in body:
        raise bad("include_prompt does not apply to /infill: the whole clip always comes back")
    if not isinstance(span, (list, str, int)) or isinstance(span, bool) or \
            (isinstance(span, list) and len(span) > 2):
        raise bad(f"bars {span!r}: give the first and last bar to rewrite, like [5, 8] or \"5-8\"")
    return _call(parse_bar_span, span)


def _prompt_kwargs(body: dict, route: str, tempo: float | None, meter: str | None,
                   warnings: list[str]) -> dict[str, Any]:
    """``prompt`` (a Score, from notes or from ``midi_base64``), ``context_bars`` and ``include_prompt``;
    what reading a MIDI prompt changed is appended to ``warnings``."""
    if body.get("prompt") is not None and body.get("midi_base64") is not None:
        raise bad("give either \"prompt\" (notes) or \"midi_base64\", not both")
    kw: dict[str, Any] = {"context_bars": int_field(body, "context_bars", 1, MAX_BARS, PROMPT_DEFAULTS["context_bars"])}
    if route != "/infill":
        kw["include_prompt"] = bool_field(body, "include_prompt", PROMPT_DEFAULTS["include_prompt"])
    if body.get("prompt") is not None:
        notes = body["prompt"]
        if not isinstance(notes, list) or not notes:
            raise bad("prompt must be a non-empty list of notes like "
                      "{\"pitch\": 60, \"start_beat\": 0, \"duration_beats\": 1}")
        if len(notes) > MAX_PROMPT_NOTES:
            raise bad(f"prompt: {len(notes)} notes is too many (limit {MAX_PROMPT_NOTES})")
        try:  # tempo and meter describe the prompt notes
            kw["prompt"] = notes_to_score(notes, tempo=120.0 if tempo is None else tempo, meter=meter or "4/4")
        except BadInputError as e:
            raise bad(f"prompt: {e}") from None
        return kw
    if tempo is not None or meter is not None:
        raise bad("tempo and meter describe \"prompt\" notes; a \"midi_base64\" prompt brings its own")
    data = body["midi_base64"]
    if not isinstance(data, str):
        raise bad("midi_base64 must be a base64 string of a MIDI file")
    kw["prompt"] = score = score_of(midi_from_base64(data), warnings)
    if score.note_num() > MAX_PROMPT_NOTES:
        raise bad(f"midi_base64: {score.note_num()} notes is too many for a prompt (limit {MAX_PROMPT_NOTES})")
    return kw
