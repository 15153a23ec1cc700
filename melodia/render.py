"""The last pipeline stage: a score becomes files you can hear, read and look at.

Input is a ``symusic.Score`` or anything :func:`load_score` reads (a MIDI path or MIDI bytes).
Outputs, each written atomically through :mod:`melodia.fileio` (a half-written file is never
left behind; an existing file is kept unless ``force``):

* ``.mid`` / ``.midi`` — :func:`write_midi` (symusic).
* ``.wav`` — :func:`render_wav`: the SoundFont synthesizer rustysynth (the ``midirenderer``
  wheel) with the General MIDI SoundFont pretty_midi ships (``TimGM6mb.sf2``) unless you pass
  your own; 16-bit stereo PCM, peak-normalised to -1 dBFS, never clipped, ending about one
  second after the last note. :func:`render_audio` gives the same audio as a numpy array.
* ``.musicxml`` / ``.xml`` / ``.mxl`` — :func:`render_musicxml` (music21 parses and quantizes).
* ``.png`` — :func:`render_png`: a piano roll (matplotlib, Agg), bars on the x axis.

:func:`save` picks the writer from the extension; :func:`cli_render` is ``melodia render``.
Heavy libraries are imported inside the functions, so ``import melodia.render`` is cheap.

Example:
    >>> save("calm.mid", "calm.wav")
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import math
import os
import tempfile
import wave
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BadInputError, BadMidiError, MelodiaError, OutputExistsError
from .fileio import atomic_write, check_out_dir, write_bytes
from .midifile import load_score
from .music.meter import bar_starts, meter_at

if TYPE_CHECKING:  # pragma: no cover - typing only
    import music21
    import numpy as np  # heavy here: `import melodia.render` stays cheap (tests/test_render.py)
    import symusic

    ScoreLike = str | os.PathLike | bytes | symusic.Score

__all__ = [
    "load_score", "write_midi", "render_audio", "render_wav", "render_musicxml", "render_png",
    "save", "default_soundfont", "check_soundfont", "add_render_arguments", "cli_render", "FORMATS",
]

#: Extensions :func:`save` understands, and the writer each one goes to.
FORMATS = {".mid": "midi", ".midi": "midi", ".wav": "wav", ".musicxml": "musicxml",
           ".xml": "musicxml", ".mxl": "musicxml", ".png": "png"}

MAX_RENDER_SECONDS = 20 * 60        # audio longer than this is refused (memory ~0.9 GB at 20 min)
SYNTH_RATE = 48000                  # midirenderer (rustysynth) always renders 48 kHz stereo
PEAK_DBFS = -1.0                    # normalisation target
RELEASE_S = 1.0                     # audio kept after the last note ends
_RENDER_TAIL_S = 2.0                # extra time the synthesizer runs past the last note
_SILENCE_DB = -70.0                 # below peak by this much counts as silence when trimming
_FADE_S = 0.05                      # fade-out at the cut, so the file never ends on a click


# ----------------------------------------------------------------------------- reading

def _label(src: object) -> str:
    return str(src) if isinstance(src, (str, os.PathLike)) else "<score>"


def _need_notes(score: "symusic.Score", label: str, what: str) -> None:
    if score.note_num() == 0:
        raise BadInputError(f"{label}: nothing to {what}: the score has no notes")


def _check_target(path: Path, force: bool) -> None:
    """Fail early (before expensive work) when ``path`` exists and ``force`` is off."""
    if not force and path.exists():
        raise OutputExistsError(f"{path}: already exists (use --force to overwrite)")


# ----------------------------------------------------------------------------- MIDI

def write_midi(score: "ScoreLike", path: str | os.PathLike, force: bool = True) -> Path:
    """Write ``score`` as a standard MIDI file. Example: ``write_midi(score, "out.mid")``."""
    path = Path(path)
    _check_target(path, force)
    data = load_score(score, _label(score)).dumps_midi()
    write_bytes(path, data, force=force)
    return path


# ----------------------------------------------------------------------------- audio

def default_soundfont() -> Path:
    """The General MIDI SoundFont pretty_midi ships (TimGM6mb.sf2, GPL-2).

    Example:
        >>> default_soundfont().name
        'TimGM6mb.sf2'
    """
    spec = importlib.util.find_spec("pretty_midi")  # locate it without importing it
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        candidate = Path(folder) / "TimGM6mb.sf2"
        if candidate.is_file():
            return candidate
    raise MelodiaError("no default SoundFont: pretty_midi's TimGM6mb.sf2 was not found "
                       f"(looked in {folders or 'nowhere: pretty_midi is not installed'}); "
                       "pass soundfont=PATH to a .sf2 file")


def _soundfont_bytes(soundfont: str | os.PathLike | None) -> tuple[Path, bytes]:
    path = Path(soundfont) if soundfont is not None else default_soundfont()
    try:
        st = path.stat()
        if not path.is_file():
            raise MelodiaError(f"{path}: SoundFont is not a file")
    except FileNotFoundError:
        raise MelodiaError(f"{path}: SoundFont not found") from None
    except OSError as e:
        raise MelodiaError(f"{path}: SoundFont cannot be read ({e.strerror or e})") from None
    return path, _read_soundfont(str(path.resolve()), st.st_mtime_ns, st.st_size)


def check_soundfont(soundfont: str | os.PathLike | None = None) -> Path:
    """The SoundFont :func:`render_audio` will use (``None``: :func:`default_soundfont`), checked
    before any work: a :class:`MelodiaError` naming it if it is missing, not a file, unreadable or
    no SoundFont 2 file. Its bytes stay cached for the render.

    Example: ``check_soundfont("GeneralUser.sf2")  # PosixPath('GeneralUser.sf2')``
    """
    return _soundfont_bytes(soundfont)[0]


@lru_cache(maxsize=2)
def _read_soundfont(path: str, mtime_ns: int, size: int) -> bytes:
    # cached on (path, mtime, size): rendering many clips reads the 6 MB file once
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise MelodiaError(f"{path}: SoundFont cannot be read ({e.strerror or e})") from None
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise MelodiaError(f"{path}: not a SoundFont 2 file (no RIFF 'sfbk' header)")
    return data


def _end_seconds(score: "symusic.Score") -> tuple[float, float]:
    """(when the last note or pedal ends, when the last event of any kind happens), seconds."""
    import numpy as np  # heavy here: `import melodia.render` stays cheap (tests/test_render.py)

    sec = score.to("second")
    notes_end = 0.0
    for track in sec.tracks:
        if len(track.notes):
            n = track.notes.numpy()
            notes_end = max(notes_end, float(np.max(n["time"] + n["duration"])))
        for p in track.pedals:
            notes_end = max(notes_end, float(p.time + p.duration))
    return notes_end, max(notes_end, float(sec.end()))


def _synth_midi(score: "symusic.Score", gain: float, tail_s: float) -> bytes:
    """MIDI bytes for the synthesizer: a marker ``tail_s`` past the end (so the synthesizer
    renders the release), and every channel's expression (CC11) scaled so its gain is
    ``gain`` (rustysynth's gain goes as the square of CC7 x CC11)."""
    import symusic

    s = score.copy()
    qpm = 120.0
    end = s.end()
    for t in s.tempos:
        if t.time <= end:
            qpm = t.qpm
    tail_ticks = int(math.ceil(tail_s * qpm / 60.0 * s.ticks_per_quarter))
    s.markers.append(symusic.TextMeta(end + tail_ticks, "melodia:end"))
    if gain < 1.0:
        k = math.sqrt(gain)
        for track in s.tracks:
            at_zero = False
            for c in track.controls:
                if c.number == 11:
                    at_zero = at_zero or c.time == 0
                    c.value = int(round(c.value * k))
            if not at_zero:
                track.controls.append(symusic.ControlChange(0, 11, int(round(127 * k))))
            track.controls.sort()
    return s.dumps_midi()


def _run_synth(sf_path: Path, sf_data: bytes, midi: bytes, label: str) -> "np.ndarray":
    import midirenderer
    import numpy as np  # heavy here: `import melodia.render` stays cheap (tests/test_render.py)

    try:
        wav_bytes = midirenderer.render_wave_from(sf_data, midi)
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as e:  # RuntimeError, or pyo3's PanicException (a BaseException)
        msg = str(e)
        if msg.startswith("SoundFont error"):
            raise MelodiaError(f"{sf_path}: SoundFont cannot be used ({msg})") from None
        if msg.startswith("MIDI error"):
            raise BadMidiError(label, f"the synthesizer rejected it ({msg})") from None
        raise MelodiaError(f"synthesis with {sf_path} failed: {type(e).__name__}: {msg}") from None
    with wave.open(io.BytesIO(wav_bytes)) as r:
        if r.getsampwidth() != 2 or r.getframerate() != SYNTH_RATE:
            raise MelodiaError(f"midirenderer returned {r.getsampwidth() * 8}-bit "
                               f"{r.getframerate()} Hz audio; melodia expects 16-bit "
                               f"{SYNTH_RATE} Hz")
        channels = r.getnchannels()
        frames = r.readframes(r.getnframes())
    audio = np.frombuffer(frames, dtype="<i2").reshape(-1, channels)
    if channels == 1:
        audio = np.repeat(audio, 2, axis=1)
    return audio


def resample(x: "np.ndarray", src: int, dst: int) -> "np.ndarray":
    """Band-limited resampling of (n, channels) audio from ``src`` Hz to ``dst`` Hz.

    Block FFT resampling (overlapping blocks, cosine roll-off over the top 10% of the shared
    band): exact for any rational ratio, float32 in and out, memory linear in the length.

    Example: ``resample(audio_48k, 48000, 44100).shape[0] == 44100  # for one second in``
    """
    import numpy as np  # heavy here: `import melodia.render` stays cheap (tests/test_render.py)

    if src == dst:
        return x.astype(np.float32, copy=False)
    ratio = Fraction(dst, src)
    up, down = ratio.numerator, ratio.denominator
    n_in, ch = x.shape
    n_out = n_in * up // down
    m = 1
    while down * m < 65536:
        m *= 2
    mm = 1
    while down * mm < 8192:
        mm *= 2
    body_in, marg_in, body_out, marg_out = down * m, down * mm, up * m, up * mm
    tot_in, tot_out = body_in + 2 * marg_in, body_out + 2 * marg_out
    nb = min(tot_in, tot_out) // 2 + 1
    k0 = int(0.9 * (nb - 1))
    taper = np.ones(nb, dtype=np.float32)
    taper[k0:] = 0.5 * (1 + np.cos(np.pi * np.arange(nb - k0) / max(1, nb - 1 - k0)))
    taper *= tot_out / tot_in
    out = np.empty((n_out, ch), dtype=np.float32)
    seg = np.zeros((tot_in, ch), dtype=np.float32)
    spec = np.zeros((tot_out // 2 + 1, ch), dtype=np.complex64)
    for b in range(math.ceil(n_out / body_out)):
        lo = b * body_in - marg_in
        a, z = max(lo, 0), min(lo + tot_in, n_in)
        seg[:] = 0
        seg[a - lo:z - lo] = x[a:z]
        spec[:nb] = np.fft.rfft(seg, axis=0)[:nb] * taper[:, None]
        y = np.fft.irfft(spec, n=tot_out, axis=0)
        o = b * body_out
        take = min(body_out, n_out - o)
        out[o:o + take] = y[marg_out:marg_out + take]
    return out


def render_audio(score: "ScoreLike", soundfont: str | os.PathLike | None = None,
                 sample_rate: int = 44100, *, max_seconds: float = MAX_RENDER_SECONDS
                 ) -> "np.ndarray":
    """Synthesize ``score`` to a float32 array of shape (samples, 2), peak at -1 dBFS.

    Rendered by rustysynth (midirenderer) at 48 kHz, band-limited resampled to
    ``sample_rate``, cut about one second after the last note, faded and normalised.
    If the synthesizer's 16-bit output would clip, it is rendered again quieter.

    Example:
        >>> audio = render_audio("song.mid")   # audio.shape == (n, 2), 44100 Hz
    """
    import numpy as np  # heavy here: `import melodia.render` stays cheap (tests/test_render.py)

    label = _label(score)
    score = load_score(score, label)
    if not isinstance(sample_rate, int) or not 8000 <= sample_rate <= 192000:
        raise BadInputError(f"sample_rate {sample_rate!r}: must be an integer 8000..192000 Hz")
    _need_notes(score, label, "render")
    notes_end, events_end = _end_seconds(score)
    if events_end > max_seconds:
        raise BadInputError(f"{label}: lasts {events_end:.0f} s; melodia renders at most "
                            f"{max_seconds:.0f} s of audio")
    sf_path, sf_data = _soundfont_bytes(soundfont)

    for gain in (1.0, 0.5, 0.25, 0.1, 0.03, 0.01):
        raw = _run_synth(sf_path, sf_data, _synth_midi(score, gain, _RENDER_TAIL_S), label)
        if raw.size == 0 or (raw.max() < 32767 and raw.min() > -32767):
            break  # no sample hit the 16-bit rails
    raw_end = min(len(raw), int(round((notes_end + RELEASE_S) * SYNTH_RATE)))
    raw = raw[:raw_end]

    audio = resample(raw, SYNTH_RATE, sample_rate)
    audio *= 1.0 / 32768.0
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0:
        loud = np.flatnonzero(np.max(np.abs(audio), axis=1) > peak * 10 ** (_SILENCE_DB / 20))
        keep = min(len(audio), int(loud[-1]) + 1 + int(_FADE_S * sample_rate))
        audio = audio[:keep]
    fade = min(len(audio), int(_FADE_S * sample_rate))
    if fade:
        ramp = 0.5 * (1 + np.cos(np.linspace(0, np.pi, fade)))
        audio[-fade:] *= ramp.astype(np.float32)[:, None]
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0:
        audio *= np.float32(10 ** (PEAK_DBFS / 20) / peak)
    return audio


def render_wav(score: "ScoreLike", path: str | os.PathLike,
               soundfont: str | os.PathLike | None = None, sample_rate: int = 44100,
               force: bool = True) -> Path:
    """Render ``score`` to a 16-bit stereo PCM WAV (see :func:`render_audio`).

    Example:
        >>> render_wav("song.mid", "song.wav")
    """
    path = Path(path)
    _check_target(path, force)
    audio = render_audio(score, soundfont=soundfont, sample_rate=sample_rate)
    with atomic_write(path, "wb", force=force) as f:
        _write_wav(f, audio, sample_rate)
    return path


def wav_bytes(score: "ScoreLike", soundfont: str | os.PathLike | None = None, sample_rate: int = 44100) -> bytes:
    """``score`` rendered (see :func:`render_audio`) as the bytes of a 16-bit PCM WAV file.

    Example: ``data = wav_bytes(piece.to_score(), sample_rate=22050)``
    """
    buf = io.BytesIO()
    _write_wav(buf, render_audio(score, soundfont=soundfont, sample_rate=sample_rate), sample_rate)
    return buf.getvalue()


def _write_wav(f, audio: "np.ndarray", sample_rate: int) -> None:
    import numpy as np  # heavy here: `import melodia.render` stays cheap (tests/test_render.py)

    with wave.open(f, "wb") as w:
        w.setnchannels(audio.shape[1])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.setnframes(len(audio))
        step = 1 << 18
        for i in range(0, len(audio), step):
            block = np.clip(np.round(audio[i:i + step] * 32767.0), -32767, 32767)
            w.writeframes(block.astype("<i2").tobytes())


# ----------------------------------------------------------------------------- MusicXML

def to_music21(score: "symusic.Score", quantize: bool = True) -> "music21.stream.Score":
    """A ``symusic.Score`` as a ``music21`` score: one part per track, tempo, meter and key
    signature shared by every part, quantized to sixteenths and triplet eighths unless
    ``quantize=False``. Exceptions are music21's own.

    Example: ``to_music21(symusic.Score("song.mid")).analyze("key")``
    """
    import symusic
    from music21 import midi as m21midi

    if len(score.tracks) > 1 and len(score.tracks[0].notes):
        # symusic writes tempo, time and key signatures into the first track; music21 only
        # shares them with every part when that track is a note-free conductor track.
        score = score.copy()
        score.tracks.insert(0, symusic.Track(name="conductor"))
    mf = m21midi.MidiFile()
    mf.readstr(bytes(score.dumps_midi()))
    return m21midi.translate.midiFileToStream(mf, quantizePost=quantize, quarterLengthDivisors=(4, 3))


def render_musicxml(score: "ScoreLike", path: str | os.PathLike, force: bool = True,
                    title: str | None = None) -> Path:
    """Write ``score`` as MusicXML (``.musicxml``/``.xml``, or compressed ``.mxl``) via music21.

    The MIDI is parsed and quantized to sixteenths and triplet eighths by music21; any music21
    failure becomes a :class:`MelodiaError`.

    Example:
        >>> render_musicxml("song.mid", "song.musicxml", title="calm · F major")
    """
    path = Path(path)
    ext = path.suffix.lower()
    if FORMATS.get(ext) != "musicxml":
        raise BadInputError(f"{path}: a MusicXML file must end in .musicxml, .xml or .mxl")
    _check_target(path, force)
    write_bytes(path, musicxml_bytes(score, title=title, compressed=ext == ".mxl"), force=force)
    return path


def musicxml_bytes(score: "ScoreLike", title: str | None = None, compressed: bool = False) -> bytes:
    """``score`` as MusicXML bytes (``compressed``: an ``.mxl`` archive), as
    :func:`render_musicxml` writes them. Example: ``xml = musicxml_bytes(piece.to_score())``"""
    label = _label(score)
    score = load_score(score, label)
    ext = ".mxl" if compressed else ".musicxml"
    try:
        from music21 import metadata
        from music21.musicxml.m21ToXml import GeneralObjectExporter

        stream = to_music21(score)
        if title:
            if stream.metadata is None:
                stream.insert(0, metadata.Metadata())
            stream.metadata.title = title
        if ext == ".mxl":
            with tempfile.TemporaryDirectory() as tmp:
                out = stream.write("mxl", fp=Path(tmp) / "score.mxl")
                data = Path(out).read_bytes()
        else:
            data = GeneralObjectExporter(stream).parse()
    except MelodiaError:
        raise
    except Exception as e:
        raise MelodiaError(f"{label}: music21 could not make MusicXML "
                           f"({type(e).__name__}: {e})") from None
    return data


# ----------------------------------------------------------------------------- piano roll

def _gm_name(program: int, is_drum: bool) -> str:
    if is_drum:
        return "Drums"
    from pretty_midi import program_to_instrument_name

    try:
        return program_to_instrument_name(int(program))
    except Exception:
        return f"Program {program}"


def render_png(score: "ScoreLike", path: str | os.PathLike, title: str | None = None,
               force: bool = True) -> Path:
    """Draw a 1600x600 piano roll: notes as bars coloured by track, bar lines from the time
    signatures, x axis in bars, y axis in pitch names.

    Example:
        >>> render_png(score, "calm.png", title="calm · F major · 8 bars")
    """
    import numpy as np  # heavy here: `import melodia.render` stays cheap (tests/test_render.py)
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state
    from matplotlib.figure import Figure

    path = Path(path)
    _check_target(path, force)
    label = _label(score)
    score = load_score(score, label)
    _need_notes(score, label, "draw")

    tracks = [t for t in score.tracks if len(t.notes)]
    arrays = [t.notes.numpy() for t in tracks]
    end = max(int(np.max(a["time"] + a["duration"])) for a in arrays)
    bounds = np.asarray(bar_starts(score, end, close=True), dtype=np.float64)
    n_bars = len(bounds) - 1

    pitches = np.concatenate([a["pitch"].astype(int) for a in arrays])
    lo, hi = int(pitches.min()), int(pitches.max())
    if hi - lo < 12:
        lo, hi = lo - (12 - (hi - lo)) // 2, lo - (12 - (hi - lo)) // 2 + 12

    fig = Figure(figsize=(16, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlim(0, n_bars)
    ax.set_ylim(lo - 1.5, hi + 1.5)
    ax.set_facecolor("white")
    _draw_grid(ax, score, bounds, lo, hi)
    handles = _draw_notes(ax, tracks, arrays, bounds)
    _label_axes(ax, score, n_bars, lo, hi, title)
    if handles:
        # outside the axes, so the legend never hides notes
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False,
                   ncol=max(1, math.ceil(len(handles) / 24)))

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_bytes(path, buf.getvalue(), force=force)
    return path


def _draw_grid(ax, score: "symusic.Score", bounds: "np.ndarray", lo: int, hi: int) -> None:
    """Black-key rows shaded, beat lines (light, up to 64 bars) and bar lines (dark, up to 512)."""
    from matplotlib.collections import LineCollection, PolyCollection

    n_bars = len(bounds) - 1
    ylo, yhi = lo - 1.5, hi + 1.5
    # black-key rows shaded, like a keyboard turned on its side
    black = [p for p in range(lo - 1, hi + 2) if p % 12 in (1, 3, 6, 8, 10)]
    ax.add_collection(PolyCollection(
        [[(0, p - 0.5), (n_bars, p - 0.5), (n_bars, p + 0.5), (0, p + 0.5)] for p in black],
        facecolors="0.94", edgecolors="none", zorder=0))
    if n_bars <= 64:
        beats = []
        for i in range(n_bars):
            num = meter_at(score, int(bounds[i]))[0]
            beats += [i + j / num for j in range(1, num)]
        ax.add_collection(LineCollection([[(x, ylo), (x, yhi)] for x in beats],
                                         colors="0.85", linewidths=0.6, zorder=1))
    if n_bars <= 512:
        ax.add_collection(LineCollection([[(x, ylo), (x, yhi)] for x in range(n_bars + 1)],
                                         colors="0.45", linewidths=0.9, zorder=1))


def part_colour(program: int, is_drum: bool = False, nth: int = 0) -> str:
    """The piano-roll colour of a part, chosen by its instrument, not by its track's place, so
    the same part keeps its colour from one picture to the next. ``nth`` counts earlier tracks
    with the same program (POP909's melody, counter-melody and piano are all program 0 in its
    own files), which get the next colours along. Drums are grey.

    Example: ``part_colour(33) == part_colour(33, nth=0)``; ``part_colour(0, nth=1) != part_colour(0)``.
    """
    if is_drum:
        return "0.35"
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",  # matplotlib's tab10
               "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
    return palette[(int(program) + nth) % len(palette)]


def _draw_notes(ax, tracks: list, arrays: list, bounds: "np.ndarray") -> list:
    """Each track's notes as boxes (opacity from velocity); returns the legend's handles."""
    import matplotlib.colors as mcolors
    import numpy as np  # heavy here: `import melodia.render` stays cheap (tests/test_render.py)
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    def to_x(ticks: "np.ndarray") -> "np.ndarray":
        return np.interp(ticks, bounds, np.arange(len(bounds)))

    handles = []
    seen: dict[tuple[bool, int], int] = {}
    for track, a in zip(tracks, arrays):
        x0 = to_x(a["time"].astype(np.float64))
        x1 = to_x((a["time"] + a["duration"]).astype(np.float64))
        x1 = np.maximum(x1, x0 + 0.01)  # zero-length notes stay visible
        p = a["pitch"].astype(np.float64)
        verts = np.stack([np.stack([x0, p - 0.4], 1), np.stack([x1, p - 0.4], 1),
                          np.stack([x1, p + 0.4], 1), np.stack([x0, p + 0.4], 1)], 1)
        part = (bool(track.is_drum), int(track.program))
        colour = part_colour(track.program, track.is_drum, seen.get(part, 0))
        seen[part] = seen.get(part, 0) + 1
        rgba = np.tile(mcolors.to_rgba(colour), (len(p), 1))
        rgba[:, 3] = 0.45 + 0.55 * np.clip(a["velocity"].astype(np.float64), 0, 127) / 127
        ax.add_collection(PolyCollection(verts, facecolors=rgba, edgecolors=colour,
                                         linewidths=0.4, zorder=2))
        name = track.name.strip() or _gm_name(track.program, track.is_drum)
        handles.append(Patch(color=colour, label=name))
    return handles


def _label_axes(ax, score: "symusic.Score", n_bars: int, lo: int, hi: int, title: str | None) -> None:
    """Bars numbered from 1, pitch names (C4 = MIDI 60), and the title with bars, meter, tempo, length."""
    import numpy as np  # heavy here: `import melodia.render` stays cheap (tests/test_render.py)

    step = max(1, math.ceil(n_bars / 32))
    ax.set_xticks(np.arange(0, n_bars, step) + 0.0, [str(b + 1) for b in range(0, n_bars, step)])
    names = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
    shown = (set(range(12)) if hi - lo <= 30 else {0, 7} if hi - lo <= 60 else {0})
    yt = [p for p in range(lo - 1, hi + 2) if p % 12 in shown]
    ax.set_yticks(yt, [f"{names[p % 12]}{p // 12 - 1}" for p in yt], fontsize=8)
    ax.set_xlabel("bar")
    ax.set_ylabel("pitch")
    ax.tick_params(axis="x", length=0)

    qpm = score.tempos[0].qpm if len(score.tempos) else 120.0
    sigs = [f"{n}/{d}" for _, (n, d) in sorted(
        {ts.time: (ts.numerator, ts.denominator) for ts in score.time_signatures}.items())]
    sig = ", ".join(dict.fromkeys(sigs)) or "4/4"
    secs = _end_seconds(score)[0]
    info = (f"{n_bars} bar{'s' if n_bars != 1 else ''} · {sig} · {qpm:.0f} bpm · "
            f"{int(secs // 60)}:{int(round(secs % 60)):02d}")
    ax.set_title(title or info, loc="left", fontsize=13)
    if title:
        ax.set_title(info, loc="right", fontsize=9, color="0.35")


# ----------------------------------------------------------------------------- by extension

def save(score: "ScoreLike", path: str | os.PathLike, force: bool = True,
         soundfont: str | os.PathLike | None = None, title: str | None = None) -> Path:
    """Write ``score`` in the format ``path``'s extension names (.mid .midi .wav .musicxml
    .xml .mxl .png); an unknown extension is a :class:`BadInputError`.

    Example:
        >>> save(score, "calm.wav")
    """
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind == "midi":
        return write_midi(score, path, force=force)
    if kind == "wav":
        return render_wav(score, path, soundfont=soundfont, force=force)
    if kind == "musicxml":
        return render_musicxml(score, path, force=force, title=title)
    if kind == "png":
        return render_png(score, path, title=title, force=force)
    raise BadInputError(f"{path}: unknown output format {path.suffix or '(no extension)'!r}; "
                        f"use one of {', '.join(FORMATS)}")


# ----------------------------------------------------------------------------- command line

def add_render_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``melodia render``'s arguments to ``parser``.

    Example:
        >>> add_render_arguments(subparsers.add_parser("render")).set_defaults(func=cli_render)
    """
    parser.add_argument("input", metavar="IN.mid", help="MIDI file to render")
    parser.add_argument("--wav", action="store_true", help="write IN.wav (SoundFont audio)")
    parser.add_argument("--png", action="store_true", help="write IN.png (piano roll)")
    parser.add_argument("--musicxml", action="store_true", help="write IN.musicxml (notation)")
    parser.add_argument("--soundfont", metavar="PATH", default=None,
                        help="a .sf2 SoundFont (default: pretty_midi's TimGM6mb.sf2)")
    parser.add_argument("--title", default=None, help="title for the PNG and MusicXML "
                                                      "(default: the input's name)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="folder for the outputs (default: next to the input)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    return parser


def cli_render(args: argparse.Namespace) -> int:
    """Run ``melodia render``: writes the chosen formats (all three when none is chosen)
    and prints each path written.

    Example:
        >>> cli_render(parser.parse_args(["render", "calm.mid", "--wav"]))
    """
    src = Path(args.input)
    if getattr(args, "out", None):
        check_out_dir(args.out)
    score = load_score(src)
    kinds = [k for k in ("wav", "png", "musicxml") if getattr(args, k, False)]
    kinds = kinds or ["wav", "png", "musicxml"]
    out_dir = Path(args.out) if getattr(args, "out", None) else src.parent
    targets = [out_dir / f"{src.stem}.{k}" for k in kinds]
    force = bool(getattr(args, "force", False))
    if not force:
        existing = [str(t) for t in targets if t.exists()]
        if existing:
            raise OutputExistsError(f"{', '.join(existing)}: already exist"
                                    f"{'s' if len(existing) == 1 else ''} "
                                    "(use --force to overwrite)")
    title = getattr(args, "title", None) or src.stem
    for target in targets:
        save(score, target, force=force, soundfont=getattr(args, "soundfont", None), title=title)
        print(target)
    return 0
