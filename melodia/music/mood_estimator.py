"""The mood estimator: measure a score's mood cues and place it on the valence-arousal plane.

Music-psychology reviews agree on which structural cues carry which emotion dimension
(Gabrielsson & Lindström 2010, "The role of structure in the musical expression of emotions",
in *Handbook of Music and Emotion*; Juslin & Laukka 2003, "Communication of emotions in vocal
expression and music performance", *Psychological Bulletin* 129; Juslin & Lindström 2010):

* **Valence** rests mainly on *mode* (major -> positive, minor -> negative; the most consistent
  valence cue in both reviews) and secondarily on *register* (high pitch -> happy, low pitch ->
  sad / serious). melodia's valence score is::

      valence = clip(w_mode * tanh((margin - margin_centre) / margin_scale)
                     + w_register * clip((pitch_mean - register_centre) / register_scale, -1, 1),
                     -1, 1)

  ``margin`` is the major-minus-minor profile correlation gap. ``margin_centre`` sits a
  little above 0: relative major and minor share their pitch classes, and a bare melody in
  minor (no chords confirming the tonic) often reaches a small positive gap, so a piece must
  be clearly major to count as positive (see the field's comment).

* **Arousal** rests on *tempo* (fast -> high arousal: happy/tense; slow -> sad/calm), *note
  density* (many events per second -> high arousal) and *loudness* (loud -> high arousal);
  all three are among the strongest arousal cues in Gabrielsson & Lindström's table and in
  Juslin & Laukka's performance cues. Each cue becomes a score in [-1, 1]; tempo and density
  on a log (ratio) scale, because tempo is perceived proportionally (60 -> 120 qpm is as big a
  step as 120 -> 240)::

      tempo_score   = clip(log2(tempo_qpm / tempo_centre) / tempo_octaves, -1, 1)
      density_score = clip(log2(onsets_per_second / density_centre) / density_octaves, -1, 1)
      loud_score    = clip((velocity_mean - velocity_centre) / velocity_scale, -1, 1)
      arousal       = w_tempo * tempo_score + w_density * density_score + w_loud * loud_score

* **Unknown tempo.** music21 writes 120 qpm into every work that has no tempo mark (most of
  its corpus), and abc2midi does the same for ABC tunes without a ``Q:`` field. That 120 is
  an invention, not a measurement: a slow air and a fast reel would both "play at 120". So a
  caller that knows the tempo is a default passes ``tempo_known=False``; then
  :func:`extract_features` leaves ``tempo_qpm`` and ``onsets_per_second`` as ``None`` and the
  estimator uses only cues that do not depend on the clock: onsets per beat (how busy the
  notated rhythm is: running quavers and semiquavers against minims and crotchets) and
  velocity::

      arousal = w_beat_density * clip(log2(onsets_per_beat / beat_density_centre)
                                      / beat_density_octaves, -1, 1)
              + w_loud_unknown * loud_score

  A file with no tempo event at all is treated the same way (its 120 qpm is MIDI's default).

* **Mood** is the quadrant of (valence, arousal), 0 counting as positive, exactly as
  :func:`resolve_mood` reads a caller's valence/arousal. So minor + slow -> sad,
  minor + fast/busy/loud -> tense, major + fast -> happy, major + slow/soft -> calm.

Every threshold is a field of :class:`MoodEstimator` with its reason next to it; change one by
making ``MoodEstimator(tempo_centre=...)``. The estimate's ``reasons`` list says in words which
cue pushed which way, so a surprising label can be traced.

The defaults and what they give on the built-in corpus: docs/corpus.md, "Mood estimator
calibration".

Example: ``MoodEstimator().estimate(symusic.Score("song.mid")).mood  # 'calm'``
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadInputError
from .keys import KEY_NAMES, KeyEstimate, key_index, key_of_notes
from .moods import resolve_mood
from .notes import TickNotes, onset_groups, span_seconds, tick_score

if TYPE_CHECKING:  # symusic is only needed by the caller who built the Score
    import symusic

@dataclass(frozen=True)
class MoodFeatures:
    """The measurements the mood estimator reads, from :func:`extract_features`.

    ``tempo_qpm`` and ``onsets_per_second`` are ``None`` when the tempo is not known (see the
    module docstring); ``duration_s`` is then at the file's nominal (probably default) tempo and
    is for bookkeeping only. Beats are quarter notes. Drum notes count in ``note_count``,
    as onsets and towards the span, but not towards key, register (``pitch_*``) or velocity.
    Onsets closer than a sixteenth of a beat count as one (a chord, a spread attack).

    Example: ``extract_features(score).tempo_qpm  # 92.0, or None when the tempo is unknown``
    """

    key: KeyEstimate
    note_count: int
    onset_count: int
    duration_s: float
    duration_beats: float
    onsets_per_beat: float
    onsets_per_second: float | None
    tempo_qpm: float | None
    tempo_known: bool
    pitch_mean: float
    pitch_std: float
    velocity_mean: float

    @property
    def mode(self) -> str:
        """"major" or "minor", from the key estimate. Example: ``features.mode  # 'minor'``."""
        return self.key.mode

    @property
    def major_minor_margin(self) -> float:
        """Best major minus best minor key-profile correlation (> 0 leans major).

        Example: ``features.major_minor_margin  # -0.14``
        """
        return self.key.major_minor_margin

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready dict for the manifest (floats rounded to 4 places).

        Example: ``extract_features(score).to_dict()["key"]  # 'G major'``
        """
        return features_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MoodFeatures":
        """Inverse of :meth:`to_dict` (e.g. to re-score a manifest with other thresholds).

        Example: ``MoodFeatures.from_dict(features.to_dict()).key.name == features.key.name``
        """
        try:
            index = key_index(str(data["key"]))
            key = KeyEstimate(KEY_NAMES[index], index % 12, "minor" if index >= 12 else "major",
                              float(data["key_correlation"]), float(data["major_minor_margin"]))
            values = {name: data[name] for name in cls.__dataclass_fields__ if name != "key"}
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise BadInputError(f"mood features dict is missing or has a bad value: {exc!r}") \
                from exc
        return cls(key=key, **values)


def features_to_dict(features: MoodFeatures) -> dict[str, Any]:
    """Flat JSON-ready dict of :class:`MoodFeatures` (key fields flattened, floats rounded).

    Example: ``features_to_dict(extract_features(score))["mode"]  # 'minor'``
    """
    raw = asdict(features)
    key = raw.pop("key")
    out: dict[str, Any] = {"key": key["name"], "mode": key["mode"],
                           "key_correlation": key["correlation"],
                           "major_minor_margin": key["major_minor_margin"]}
    out.update(raw)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2.0)])


def _median_tempo(notes: TickNotes, start: int, end: int) -> float | None:
    """Tempo (qpm) in force for the most beats between ticks start and end; None if no event."""
    times = notes.tempo_time
    if times.size == 0:
        return None
    qpm = 60_000_000.0 / np.maximum(notes.tempo_mspq, 1.0)
    seg_start = np.clip(times, start, end)
    seg_end = np.clip(np.append(times[1:], end), start, end)
    weights = (seg_end - seg_start).astype(np.float64)
    if weights.sum() <= 0:  # every tempo event after the music ends: the last before it rules
        return float(qpm[max(int(np.searchsorted(times, start, side="right")) - 1, 0)])
    return _weighted_median(qpm, weights)


def extract_features(score: "symusic.Score", tempo_known: bool = True) -> MoodFeatures:
    """Measure key, density, tempo, register and loudness of a score (numpy only, ~1 ms).

    Pass ``tempo_known=False`` when the file's tempo is a tool's default (music21 and abc2midi
    write 120 qpm for unmarked works): then ``tempo_qpm`` and ``onsets_per_second`` are None.
    A score with no tempo event is treated as tempo-unknown too. Raises
    :class:`BadInputError` when the score has no pitched note.

    Example: ``extract_features(symusic.Score("song.mid")).onsets_per_beat  # 2.41``
    """
    score = tick_score(score)
    notes = TickNotes.of_score(score)
    if not notes.pitched.any():
        raise BadInputError("score has no pitched notes; cannot measure mood features")
    pitch = notes.p_pitch
    key = key_of_notes(pitch, notes.duration[notes.pitched])

    tpq = notes.tpq
    onset_count = len(onset_groups(notes.time, tpq)[0])
    start = int(notes.time.min())
    end = int((notes.time + notes.duration).max())
    # At least one sixteenth, so that a lone zero-length note gives a finite density.
    span_ticks = max(end - start, tpq // 4, 1)
    duration_beats = span_ticks / tpq

    seconds = span_seconds(score)
    duration_s = max(seconds[1] - seconds[0], 1e-3)
    tempo = _median_tempo(notes, start, start + span_ticks) if tempo_known else None
    known = tempo is not None
    return MoodFeatures(
        key=key,
        note_count=int(notes.time.size),
        onset_count=onset_count,
        duration_s=float(duration_s),
        duration_beats=float(duration_beats),
        onsets_per_beat=onset_count / duration_beats,
        onsets_per_second=(onset_count / duration_s) if known else None,
        tempo_qpm=tempo,
        tempo_known=known,
        pitch_mean=float(pitch.mean()),
        pitch_std=float(pitch.std()),
        velocity_mean=float(notes.velocity[notes.pitched].mean()),
    )


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------

def _clip(x: float) -> float:
    return float(min(1.0, max(-1.0, x)))


def _log_score(value: float, centre: float, octaves: float) -> float:
    return _clip(math.log2(max(value, 1e-6) / centre) / octaves)


@dataclass(frozen=True)
class MoodEstimate:
    """A mood label with the scores, the measurements and the reasons behind it.

    Example: ``MoodEstimator().estimate(score).reasons[-1]  # 'valence +0.61, arousal -0.20 -> calm'``
    """

    mood: str
    valence: float
    arousal: float
    features: MoodFeatures
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: mood, valence, arousal, reasons and the flat features.

        Example: ``MoodEstimator().estimate(score).to_dict()["mood"]  # 'calm'``
        """
        return {"mood": self.mood, "valence": round(self.valence, 4),
                "arousal": round(self.arousal, 4), "reasons": list(self.reasons),
                "features": features_to_dict(self.features)}


@dataclass
class MoodEstimator:
    """Rule-based valence/arousal estimator; every threshold is a field with its reason.

    See the module docstring for the formulas and the literature. Defaults calibrated on
    POP909 and music21's ABC folk tunes (docs/corpus.md, "Mood estimator calibration").

    Example: ``MoodEstimator().estimate(symusic.Score("song.mid")).mood  # 'happy'``
    """

    # --- valence ---------------------------------------------------------------------------
    #: Major-minus-minor correlation gap at which the music counts as neither major nor minor.
    #: Agreement with POP909's annotated modes is flat (90-92%) from -0.025 to +0.075; within
    #: that plateau 0.05 is chosen because unaccompanied melodies, with no chords to confirm
    #: the tonic, reach small positive gaps even when notated in minor (ABC tunes marked
    #: K:..m, min or dor: 90th percentiles 0.00 to +0.07), and a piece must be clearly major to
    #: count as positive. It also keeps tense/sad above 10% on the (mostly major) folk tunes.
    margin_centre: float = 0.05
    #: Gap (beyond the centre) at which the mode cue reaches tanh(1) = 76% of its weight; the
    #: annotated-major POP909 songs have median gap +0.23, annotated-minor -0.14, so clearly
    #: major or minor music is near saturation.
    margin_scale: float = 0.1
    #: Mode is the dominant valence cue (Gabrielsson & Lindström 2010; Juslin & Laukka 2003).
    w_mode: float = 0.8
    #: Mean MIDI pitch: higher -> brighter (happy), lower -> darker (sad). Between the median
    #: of accompanied pop (POP909: 62.8, melody plus piano) and of bare folk melodies (ABC:
    #: 70.2), so neither texture is pushed one way as a whole.
    register_centre: float = 66.0
    #: An octave away from the centre gives the full register cue.
    register_scale: float = 12.0
    #: Register is a secondary cue: it decides only when the mode is ambiguous.
    w_register: float = 0.2

    # --- arousal, tempo known --------------------------------------------------------------
    #: Tempo (qpm) that counts as neither fast nor slow: faster -> higher arousal. POP909's
    #: median is 74 (quartiles 64 / 92), tempo-marked folk tunes' 124; 80 splits pop ballads
    #: (60-75) from mid-tempo and dance songs.
    tempo_centre: float = 80.0
    #: Octaves of tempo (ratio 2^x) from the centre to saturate: 40 or 160 qpm at 1 octave.
    tempo_octaves: float = 1.0
    #: Note density (distinct onsets per second, all tracks) that counts as neither busy nor
    #: sparse: busier -> higher arousal. POP909 median 3.2 (quartiles 2.9 / 3.6).
    density_centre: float = 3.2
    density_octaves: float = 1.0
    #: Mean MIDI velocity (pitched notes) that counts as neither loud nor soft: louder ->
    #: higher arousal. POP909 median 86 (quartiles 79 / 93); abc2midi's accent pattern
    #: averages 83-91, so tunes without dynamics land near 0 on this cue, as they should.
    velocity_centre: float = 85.0
    #: 25 velocity steps (about two dynamic levels, mf -> ff) saturate the cue.
    velocity_scale: float = 25.0
    #: Tempo and density carry arousal about equally in the reviews; loudness is weaker in
    #: MIDI (velocity is often set by the sequencer, not the performer).
    w_tempo: float = 0.4
    w_density: float = 0.4
    w_loud: float = 0.2

    # --- arousal, tempo unknown (music21 / abc2midi default 120 qpm) -----------------------
    #: Onsets per quarter note that count as neither busy nor plain: busier notated rhythm ->
    #: higher arousal. Tempo-less ABC tunes: median 1.56 (quartiles 1.16 / 1.90); running
    #: quavers (reels, jigs) give ~2, songs in crotchets ~1. 1.4 sits a little under the
    #: median because the minor tunes are plainer, and it splits them evenly into tense/sad.
    beat_density_centre: float = 1.4
    #: Halving or doubling the rhythmic activity (crotchets vs quavers) saturates the cue.
    beat_density_octaves: float = 1.0
    w_beat_density: float = 0.8
    w_loud_unknown: float = 0.2

    def valence_arousal(self, features: MoodFeatures) -> tuple[float, float, list[str]]:
        """(valence, arousal, reasons) of measured features, both scores in [-1, 1].

        Example: ``MoodEstimator().valence_arousal(extract_features(score))[:2]  # (0.61, -0.2)``
        """
        reasons: list[str] = []
        margin = features.key.major_minor_margin
        mode_part = self.w_mode * math.tanh((margin - self.margin_centre) / self.margin_scale)
        reg_part = self.w_register * _clip(
            (features.pitch_mean - self.register_centre) / self.register_scale)
        valence = _clip(mode_part + reg_part)
        reasons.append(
            f"key {features.key.name} (major-minor margin {margin:+.3f}, centre "
            f"{self.margin_centre:+.3f}) -> valence {mode_part:+.2f}")
        reasons.append(f"mean pitch {features.pitch_mean:.1f} (centre {self.register_centre:g}) "
                       f"-> valence {reg_part:+.2f}")

        loud = _clip((features.velocity_mean - self.velocity_centre) / self.velocity_scale)
        if features.tempo_known and features.tempo_qpm is not None \
                and features.onsets_per_second is not None:
            tempo_part = self.w_tempo * _log_score(features.tempo_qpm, self.tempo_centre,
                                                   self.tempo_octaves)
            dens_part = self.w_density * _log_score(features.onsets_per_second,
                                                    self.density_centre, self.density_octaves)
            loud_part = self.w_loud * loud
            arousal = _clip(tempo_part + dens_part + loud_part)
            reasons.append(f"tempo {features.tempo_qpm:.0f} qpm (centre {self.tempo_centre:g}) "
                           f"-> arousal {tempo_part:+.2f}")
            reasons.append(f"{features.onsets_per_second:.2f} onsets/s (centre "
                           f"{self.density_centre:g}) -> arousal {dens_part:+.2f}")
        else:
            dens_part = self.w_beat_density * _log_score(
                features.onsets_per_beat, self.beat_density_centre, self.beat_density_octaves)
            loud_part = self.w_loud_unknown * loud
            arousal = _clip(dens_part + loud_part)
            reasons.append("tempo unknown: arousal from onsets per beat and velocity only")
            reasons.append(f"{features.onsets_per_beat:.2f} onsets/beat (centre "
                           f"{self.beat_density_centre:g}) -> arousal {dens_part:+.2f}")
        reasons.append(f"mean velocity {features.velocity_mean:.0f} (centre "
                       f"{self.velocity_centre:g}) -> arousal {loud_part:+.2f}")
        return valence, arousal, reasons

    def estimate_features(self, features: MoodFeatures) -> MoodEstimate:
        """Mood estimate from features already measured (for re-scoring a manifest).

        Example: ``MoodEstimator().estimate_features(extract_features(score)).mood  # 'sad'``
        """
        valence, arousal, reasons = self.valence_arousal(features)
        mood = resolve_mood(valence=valence, arousal=arousal)
        reasons.append(f"valence {valence:+.2f}, arousal {arousal:+.2f} -> {mood}")
        return MoodEstimate(mood, valence, arousal, features, reasons)

    def estimate(self, score: "symusic.Score", tempo_known: bool = True) -> MoodEstimate:
        """Estimate the mood of a score (see :func:`extract_features` for ``tempo_known``).

        Example: ``MoodEstimator().estimate(symusic.Score("song.mid")).mood  # 'happy'``
        """
        return self.estimate_features(extract_features(score, tempo_known=tempo_known))


