"""Evaluation: every metric on small hand-made pieces with hand-computed values, the
Yang-Lerch overlap, mood-control and validity summaries, likelihood, and a whole report
(tiny random model, real POP909 excerpts standing in for generated pieces)."""
from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import symusic
from conftest import POP909

from melodia import evaluate as ev
from melodia.errors import BadInputError, MelodiaError

TPQ = 480


def piece(notes, qpm: float | list = 120.0, meter=(4, 4), drums=(), tpq: int = TPQ) -> symusic.Score:
    """A score from (onset beats, duration beats, pitch) triples; ``qpm`` may be
    [(beat, qpm), ...] for a tempo map; ``drums`` are more triples on a drum track."""
    s = symusic.Score(tpq)
    for beat, q in ([(0, qpm)] if not isinstance(qpm, list) else qpm):
        s.tempos.append(symusic.Tempo(int(beat * tpq), qpm=q))
    if meter:
        s.time_signatures.append(symusic.TimeSignature(0, *meter))
    t = symusic.Track("piano", program=0)
    for on, du, p in notes:
        t.notes.append(symusic.Note(int(round(on * tpq)), int(round(du * tpq)), p, 80))
    s.tracks.append(t)
    if drums:
        d = symusic.Track("drums", program=0, is_drum=True)
        for on, du, p in drums:
            d.notes.append(symusic.Note(int(round(on * tpq)), int(round(du * tpq)), p, 100))
        s.tracks.append(d)
    return s


C_MAJOR = [60, 62, 64, 65, 67, 69, 71]


def scale(pitches=C_MAJOR, dur=1.0):
    return piece([(i * dur, dur, p) for i, p in enumerate(pitches)])


# ---------------------------------------------------------------------------- pitch metrics

def test_pitch_class_entropy():
    assert ev.pitch_class_entropy(scale()) == pytest.approx(math.log2(7))
    assert ev.pitch_class_entropy(scale(range(60, 72))) == pytest.approx(math.log2(12))
    assert ev.pitch_class_entropy(scale([60, 72, 48])) == 0.0  # one pitch class
    # counts notes, not durations: C C C E -> p = (3/4, 1/4)
    mixed = piece([(0, 4, 60), (4, 1, 60), (5, 1, 60), (6, 1, 64)])
    assert ev.pitch_class_entropy(mixed) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    # drums are not pitches
    with_drums = piece([(i, 1, p) for i, p in enumerate(C_MAJOR)], drums=[(0, 1, 36), (1, 1, 37)])
    assert ev.pitch_class_entropy(with_drums) == pytest.approx(math.log2(7))
    assert math.isnan(ev.pitch_class_entropy(piece([])))


def test_scale_consistency():
    assert ev.scale_consistency(scale()) == 1.0
    assert ev.scale_consistency(scale([62, 64, 66, 67, 69, 71, 73])) == 1.0  # D major
    assert ev.scale_consistency(scale([57, 59, 60, 62, 64, 65, 67])) == 1.0  # A natural minor
    assert ev.scale_consistency(scale(C_MAJOR + [66])) == pytest.approx(7 / 8)  # one F#
    assert ev.scale_consistency(scale(range(60, 72))) == pytest.approx(7 / 12)
    assert math.isnan(ev.scale_consistency(piece([])))


def test_pitch_range():
    assert ev.pitch_range(scale(C_MAJOR + [72])) == 12.0
    assert ev.pitch_range(scale([60])) == 0.0
    assert ev.pitch_range(piece([(0, 1, 60), (0, 1, 67)], drums=[(0, 1, 81)])) == 7.0
    assert math.isnan(ev.pitch_range(piece([])))


def test_polyphony():
    triad = piece([(0, 4, 60), (0, 4, 64), (0, 4, 67)])
    assert ev.polyphony(triad) == pytest.approx(3.0)
    assert ev.polyphony(scale()) == pytest.approx(1.0)
    # a bar of triad then a bar of one note: (3*4 + 1*4) / 8 = 2
    assert ev.polyphony(piece([(0, 4, 60), (0, 4, 64), (0, 4, 67), (4, 4, 72)])) == pytest.approx(2.0)
    # silence is not counted: note, two beats of rest, note
    assert ev.polyphony(piece([(0, 1, 60), (3, 1, 62)])) == pytest.approx(1.0)
    # overlap: 60 over beats 0-2, 64 over beats 1-3 -> (1 + 2 + 1) / 3
    assert ev.polyphony(piece([(0, 2, 60), (1, 2, 64)])) == pytest.approx(4 / 3)
    assert math.isnan(ev.polyphony(piece([])))


def test_note_length_histogram():
    h = ev.note_length_histogram(piece([(i, 1, 60) for i in range(4)]))
    assert h[ev.NOTE_LENGTHS.index(1.0)] == 1.0 and h.sum() == 1.0
    mixed = piece([(0, 2, 60), (2, 1.5, 62), (3.5, 1 / 3, 64), (4, 0.25, 65),
                   (5, 8, 67)])  # half, dotted quarter, 8th triplet, 16th, (8 beats -> whole)
    h = ev.note_length_histogram(mixed)
    for length in (2.0, 1.5, 1 / 3, 0.25, 4.0):
        assert h[ev.NOTE_LENGTHS.index(length)] == pytest.approx(0.2)
    # nearest on a log scale: 1.1 beats is a quarter, 0.9 a quarter, 0.55 an eighth
    h = ev.note_length_histogram(piece([(0, 1.1, 60), (2, 0.9, 60), (3, 0.55, 60), (4, 0, 60)]))
    assert h[ev.NOTE_LENGTHS.index(1.0)] == 0.5
    assert h[ev.NOTE_LENGTHS.index(0.5)] == 0.25
    assert h[ev.NOTE_LENGTHS.index(0.25)] == 0.25  # zero length -> shortest bin
    assert np.isnan(ev.note_length_histogram(piece([]))).all()


def test_pitch_class_transition_matrix():
    m = ev.pitch_class_transition_matrix(piece([(0, 1, 60), (1, 1, 62), (2, 1, 64)]))
    assert m[0, 2] == 0.5 and m[2, 4] == 0.5 and m.sum() == pytest.approx(1.0)
    # a C-E-G chord then a G: each pair weighs 1/3 of the one move
    m = ev.pitch_class_transition_matrix(piece([(0, 1, 60), (0, 1, 64), (0, 1, 67), (1, 1, 79)]))
    assert m[0, 7] == m[4, 7] == m[7, 7] == pytest.approx(1 / 3)
    assert m.sum() == pytest.approx(1.0)
    # onsets closer than 1/16 beat are one onset (a spread chord)
    spread = piece([(0, 1, 60), (0.02, 1, 64), (1, 1, 62)])
    assert ev.pitch_class_transition_matrix(spread)[0, 2] == pytest.approx(0.5)
    assert np.isnan(ev.pitch_class_transition_matrix(piece([(0, 1, 60), (0, 1, 64)]))).all()


# ---------------------------------------------------------------------------- rhythm metrics

def test_groove_consistency():
    bar = [(0, 1, 60), (1, 0.5, 62), (1.5, 0.5, 64), (2, 2, 65)]
    four_same = piece([(on + 4 * b, du, p) for b in range(4) for on, du, p in bar])
    assert ev.groove_consistency(four_same) == 1.0
    # bar 1: quarters (grid 0, 12, 24, 36 of 48); bar 2: halves (0, 24): 2 steps differ
    two = piece([(i, 1, 60) for i in range(4)] + [(4, 2, 60), (6, 2, 60)])
    assert ev.groove_consistency(two) == pytest.approx(1 - 2 / 48)
    # three bars: same, then different -> distances 0 and 2/48
    three = piece([(i, 1, 60) for i in range(8)] + [(8, 2, 60), (10, 2, 60)])
    assert ev.groove_consistency(three) == pytest.approx(1 - 1 / 48)
    # 3/4: bars are 36 steps; a drum onset counts as rhythm too
    waltz = piece([(0, 3, 60), (3, 3, 60)], meter=(3, 4), drums=[(4, 1, 38)])
    assert ev.groove_consistency(waltz) == pytest.approx(1 - 1 / 36)
    assert math.isnan(ev.groove_consistency(piece([(0, 1, 60), (2, 1, 62)])))  # one bar
    assert math.isnan(ev.groove_consistency(piece([])))


def test_empty_beat_rate():
    # eight beats, beat 6 (index 5) silent
    notes = [(b, 1, 60) for b in range(8) if b != 5]
    assert ev.empty_beat_rate(piece(notes)) == pytest.approx(1 / 8)
    # a held note fills its beats: a whole note then a quarter -> nothing empty
    assert ev.empty_beat_rate(piece([(0, 4, 60), (4, 1, 62)])) == 0.0
    # counts silence from tick 0: a piece starting on beat 3 of 4 has 2 empty beats in 4
    assert ev.empty_beat_rate(piece([(2, 2, 60)])) == pytest.approx(0.5)
    # a note ending mid-beat still sounds in that beat; drums sound too
    assert ev.empty_beat_rate(piece([(0, 1.5, 60)], drums=[(3, 0.25, 38)])) == pytest.approx(1 / 4)
    assert math.isnan(ev.empty_beat_rate(piece([])))


def test_onsets_per_second_and_mean_ioi():
    quarters = piece([(i, 1, 60) for i in range(8)])
    assert ev.onsets_per_second(quarters) == pytest.approx(2.0)  # 8 onsets in 4 s
    assert ev.mean_ioi(quarters) == pytest.approx(0.5)
    slow = piece([(i, 1, 60) for i in range(8)], qpm=60.0)
    assert ev.onsets_per_second(slow) == pytest.approx(1.0)
    assert ev.mean_ioi(slow) == pytest.approx(1.0)
    # a chord is one onset; a drum hit on its own beat is another
    chords = piece([(0, 1, 60), (0, 1, 64), (1, 1, 62), (1, 1, 65)], drums=[(2, 1, 36)])
    assert ev.onsets_per_second(chords) == pytest.approx(3 / 1.5)
    assert ev.mean_ioi(chords) == pytest.approx(0.5)
    # tempo map: 4 beats at 120 qpm (2 s) then 4 at 60 (4 s)
    mapped = piece([(i, 1, 60) for i in range(8)], qpm=[(0, 120.0), (4, 60.0)])
    assert ev.onsets_per_second(mapped) == pytest.approx(8 / 6)
    assert ev.mean_ioi(mapped) == pytest.approx((4 * 0.5 + 3 * 1.0) / 7)
    # no tempo event: MIDI's 120 qpm
    s = piece([(i, 1, 60) for i in range(4)])
    s.tempos.clear()
    assert ev.mean_ioi(s) == pytest.approx(0.5)
    assert math.isnan(ev.mean_ioi(piece([(0, 1, 60)])))
    assert math.isnan(ev.onsets_per_second(piece([])))


def test_onsets_per_second_agrees_with_the_mood_estimator():
    from melodia.music.mood_estimator import extract_features

    score = symusic.Score(str(POP909 / "002" / "002.mid"))
    assert ev.onsets_per_second(score) == pytest.approx(extract_features(score).onsets_per_second, rel=1e-6)


def test_metrics_accept_other_time_units_and_features_collects_them():
    s = scale()
    f = ev.piece_features(s)
    assert set(f) == set(ev.FEATURES) and f["scale_consistency"] == 1.0
    for name, (fn, label, unit) in ev.FEATURES.items():
        np.testing.assert_array_equal(fn(s), f[name])
        assert label and unit
    assert ev.pitch_class_entropy(s.to("quarter")) == pytest.approx(math.log2(7))
    assert ev.mean_ioi(s.to("second")) == pytest.approx(0.5)


def test_note_bars_and_excerpt():
    s = piece([(i, 1, 60 + i) for i in range(16)])
    assert ev.note_bars(s) == [0, 1920, 3840, 5760, 7680]
    waltz = piece([(i, 1, 60) for i in range(6)], meter=(3, 4))
    assert ev.note_bars(waltz) == [0, 1440, 2880]
    # the one bar rule (melodia.music.meter): a bar cut short by a time signature is a bar, and
    # the closing bar has the length of the meter in force where it starts
    changed = piece([(i, 1, 60) for i in range(9)], meter=(4, 4))
    changed.time_signatures.append(symusic.TimeSignature(int(2.5 * TPQ), 3, 4))
    assert ev.note_bars(changed) == [0, 1200, 2640, 4080, 5520]
    assert ev.note_bars(piece([])) == [0, 1920]
    ex = ev.excerpt(s, 1, 2)
    pitches = [n.pitch for n in ex.tracks[0].notes]
    assert pitches == list(range(64, 72)) and ex.tracks[0].notes[0].time == 0
    assert ex.tempos[0].time == 0 and ex.tempos[0].qpm == pytest.approx(120)
    with pytest.raises(BadInputError):
        ev.excerpt(s, 9, 2)


# ---------------------------------------------------------------------------- Yang & Lerch

def test_kde_bandwidth_and_density_by_hand():
    h = math.sqrt(2) * 2 ** -0.2
    assert ev.kde_bandwidth([0.0, 2.0]) == pytest.approx(h)
    assert ev.kde_bandwidth([0.0, 2.0], "silverman") == pytest.approx(math.sqrt(2) * 1.5 ** -0.2)
    assert ev.kde_bandwidth([1.0], "scott") == 0.0
    # f(1) = mean of two normals at distance 1 from 1: phi(1/h) / h
    phi = math.exp(-0.5 / h ** 2) / math.sqrt(2 * math.pi)
    assert ev.gaussian_kde([0.0, 2.0], [1.0])[0] == pytest.approx(phi / h)
    assert ev.gaussian_kde([0.0], [0.0], bandwidth=1.0)[0] == pytest.approx(1 / math.sqrt(2 * math.pi))
    grid = np.linspace(-20, 20, 4001)
    assert np.trapezoid(ev.gaussian_kde([0.0, 2.0, 3.0], grid), grid) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(BadInputError):
        ev.kde_bandwidth([1.0, 2.0], "nope")


def test_overlap_area_and_kl():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 200)
    assert ev.overlap_area(a, a) == pytest.approx(1.0, abs=1e-6)
    assert ev.overlap_area(a, a + 100) < 1e-6
    assert ev.overlap_area([0, 1, 2, 3], [100, 101, 102, 103]) < 1e-6
    # two unit normals one apart overlap by 2 * Phi(-1/2) = 0.6171
    assert ev.overlap_area([0.0], [1.0], bandwidth=1.0) == pytest.approx(0.617075, abs=1e-4)
    # and their KL divergence is d^2 / 2 = 0.5
    assert ev.kl_divergence([0.0], [1.0], bandwidth=1.0) == pytest.approx(0.5, abs=1e-3)
    assert ev.kl_divergence(a, a) == pytest.approx(0.0, abs=1e-9)
    assert ev.overlap_area([2.0, 2.0], [2.0]) == 1.0  # one value in both: no spread to estimate
    assert ev.overlap_area([0.0, 0.0], [1.0, 1.0]) < 1e-6
    assert math.isnan(ev.overlap_area([], [1.0]))
    assert math.isnan(ev.overlap_area([np.nan], [1.0]))


def test_pairwise_distances():
    assert ev.pairwise_distances(np.array([0.0, 1.0, 3.0])).tolist() == [1.0, 3.0, 2.0]
    inter = ev.pairwise_distances(np.array([0.0, 1.0]), np.array([3.0]))
    assert inter.tolist() == [3.0, 2.0]
    vecs = np.array([[0.0, 0.0], [3.0, 4.0]])
    assert ev.pairwise_distances(vecs).tolist() == [5.0]
    mats = np.zeros((2, 12, 12))
    mats[1, 0, 0] = 1.0
    assert ev.pairwise_distances(mats, mats[:1]).tolist() == [0.0, 1.0]


def test_compare_feature_identical_and_far_sets():
    rng = np.random.default_rng(1)
    real = rng.normal(5, 1, 48)
    same = ev.compare_feature(real, real)
    assert same["overlap"] > 0.9 and same["value_overlap"] == pytest.approx(1.0)
    assert same["real_mean"] == same["generated_mean"] == pytest.approx(real.mean())
    assert same["intra_real_mean"] == same["intra_generated_mean"]
    far = ev.compare_feature(real, real + 50)
    assert far["overlap"] < 0.01 and far["value_overlap"] < 0.01 and far["kl"] > 1
    assert far["inter_mean"] == pytest.approx(50, abs=1)
    # NaN pieces are left out
    part = ev.compare_feature(list(real) + [math.nan], real)
    assert part["n_real"] == 48
    # vector features: means per dimension, no value overlap
    vec = ev.compare_feature([np.eye(3)[i % 3] for i in range(9)], [np.eye(3)[0]] * 9)
    assert vec["real_mean"] == pytest.approx([1 / 3] * 3) and vec["generated_mean"] == [1.0, 0.0, 0.0]
    assert "value_overlap" not in vec and 0 <= vec["overlap"] <= 1


def test_compare_sets_on_pieces():
    real = [ev.piece_features(scale(C_MAJOR[i:] + C_MAJOR[:i])) for i in range(6)]
    chromatic = [ev.piece_features(scale(range(60 + i, 72 + i))) for i in range(6)]
    res = ev.compare_sets(real, chromatic)
    assert set(res) == set(ev.FEATURES)
    assert res["scale_consistency"]["real_mean"] == 1.0
    assert res["scale_consistency"]["generated_mean"] == pytest.approx(7 / 12)
    assert res["scale_consistency"]["value_overlap"] < 0.01
    assert ev.compare_sets(real, real)["pitch_class_entropy"]["value_overlap"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- mood control / validity

def _estimate(mood: str, valence: float, arousal: float, major: bool = True, ops: float | None = 3.0):
    from melodia.music.keys import KeyEstimate
    from melodia.music.mood_estimator import MoodEstimate, MoodFeatures

    key = KeyEstimate("C major" if major else "A minor", 0 if major else 9,
                      "major" if major else "minor", 0.8, 0.2 if major else -0.2)
    f = MoodFeatures(key=key, note_count=10, onset_count=8, duration_s=4.0, duration_beats=8.0,
                     onsets_per_beat=1.0, onsets_per_second=ops, tempo_qpm=None if ops is None else 120.0,
                     tempo_known=ops is not None, pitch_mean=64.0, pitch_std=3.0, velocity_mean=80.0)
    return MoodEstimate(mood, valence, arousal, f)


def test_mood_control_summary():
    requested = ["happy", "happy", "sad", "calm"]
    estimates = [_estimate("happy", 0.5, 0.5), _estimate("tense", -0.5, 0.4, major=False, ops=5.0),
                 _estimate("sad", -0.3, -0.2, major=False, ops=None), None]
    s = ev.mood_control_summary(requested, estimates)
    assert s["quadrant_accuracy"] == 0.5
    assert s["valence_accuracy"] == 0.5   # happy/happy yes, happy/tense no, sad/sad yes, none no
    assert s["arousal_accuracy"] == 0.75  # tense is aroused like happy
    assert s["columns"] == ["happy", "tense", "sad", "calm", "none"]
    assert s["confusion"] == [[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1]]
    happy = s["per_mood"]["happy"]
    assert happy["n"] == 2 and happy["accuracy"] == 0.5 and happy["major_share"] == 0.5
    assert happy["onsets_per_second"] == pytest.approx(4.0) and happy["pitch_mean"] == 64.0
    assert s["per_mood"]["sad"]["onsets_per_second"] is None  # tempo unknown
    assert s["per_mood"]["calm"]["major_share"] is None and "tense" not in s["per_mood"]
    with pytest.raises(BadInputError):
        ev.mood_control_summary(["joy"], [None])


def test_mood_control_with_the_estimator_on_made_up_pieces():
    from melodia.music.mood_estimator import MoodEstimator

    fast_major = piece([(i * 0.25, 0.25, C_MAJOR[i % 7] + 12) for i in range(64)]
                       + [(b * 4, 4, p) for b in range(4) for p in (48, 52, 55)], qpm=150.0)
    slow_minor = piece([(i * 2, 2, [57, 60, 64, 62, 60, 59, 57, 56][i % 8] - 12) for i in range(8)]
                       + [(b * 4, 4, p) for b in range(4) for p in (45, 48, 52)], qpm=56.0)
    est = MoodEstimator()
    s = ev.mood_control_summary(["happy", "sad"], [est.estimate(fast_major), est.estimate(slow_minor)])
    assert s["quadrant_accuracy"] == 1.0 and s["confusion"][0][0] == s["confusion"][2][2] == 1
    assert s["per_mood"]["happy"]["onsets_per_second"] > s["per_mood"]["sad"]["onsets_per_second"]


@pytest.fixture(scope="module")
def tok():
    from melodia.tokenizer import MelodiaTokenizer

    return MelodiaTokenizer.new()


@pytest.fixture(scope="module")
def bpe_tok():
    """A tokenizer with BPE learnt on the POP909 excerpt (bars never merged across bars)."""
    from melodia.tokenizer import MelodiaTokenizer, split_bars

    t = MelodiaTokenizer.new()
    remi = t.remi
    seqs = []
    for i in range(1, 5):
        seq = remi.encode(symusic.Score(str(POP909 / f"00{i}" / f"00{i}.mid")), encode_ids=False)
        seqs.append(np.asarray((seq[0] if isinstance(seq, list) else seq).ids))
    bars = [[remi._ids_to_bytes(b.tolist(), as_one_str=True) for b in split_bars(s, remi.vocab["Bar_None"])]
            for s in seqs]
    remi.train(vocab_size=len(remi) + 200, model="BPE", iterator=bars)
    return t


def test_bar_count_and_check_sequence(tok, bpe_tok):
    two_bars = piece([(i, 1, C_MAJOR[i % 7]) for i in range(8)])
    for t in (tok, bpe_tok):
        ids = t.encode_piece(two_bars, "calm", "C major")
        assert ev.bar_count(t, ids) == 2
        rec, score = ev.check_sequence(t, ids, bars=2)
        assert rec["valid"] and rec["exact_bars"] and rec["errors"] == 0.0 and rec["notes"] == 8
        assert score.note_num() == 8
        assert not ev.check_sequence(t, ids, bars=3)[0]["exact_bars"]
    song = symusic.Score(str(POP909 / "003" / "003.mid"))  # raw POP909: 2/4 bars
    head = song.clip(0, 16 * 2 * TPQ, clip_end=True)
    ids = bpe_tok.encode_piece(head, "happy", "C major")
    assert ev.bar_count(bpe_tok, ids) == 16
    assert len(ids) < len(tok.encode_piece(head))  # BPE merged tokens, bars still counted
    # a Pitch with no Velocity/Duration and a Position after it: token-type errors
    bad = [tok.remi.vocab[x] for x in ("Bar_None", "Pitch_60", "Pitch_62", "Position_3", "Position_1")]
    rec, _ = ev.check_sequence(tok, [1] + bad + [2], bars=1)
    assert rec["errors"] > 0 and not rec["valid"] and rec["bars"] == 1


def test_validity_summary():
    recs = [{"valid": True, "exact_bars": True, "decoded": True, "errors": 0.0},
            {"valid": True, "exact_bars": False, "decoded": True, "errors": 0.0},
            {"valid": False, "exact_bars": True, "decoded": True, "errors": 0.2},
            {"valid": False, "exact_bars": False, "decoded": False, "errors": None}]
    s = ev.validity_summary(recs)
    assert s == {"n": 4, "valid_share": 0.5, "exact_bars_share": 0.5, "decoded_share": 0.75,
                 "mean_error_rate": pytest.approx(0.2 / 3)}
    assert ev.validity_summary([])["valid_share"] is None


# ---------------------------------------------------------------------------- likelihood

@pytest.fixture(scope="module")
def tiny_model(tok):
    from melodia.model import build_model

    return build_model("tiny", vocab_size=tok.vocab_size, seed=0).eval()


def test_likelihood_by_hand_and_windows(tok, tiny_model):
    import torch
    import torch.nn.functional as F

    song = ev.excerpt(symusic.Score(str(POP909 / "001" / "001.mid")), 0, 48)
    short = song.clip(0, 4 * 4 * TPQ, clip_end=True)
    row = {"mood": "calm", "key": "E major", "tags": ["unknown_tag"]}
    ids = tok.encode_piece(short, "calm", "E major")
    assert len(ids) < 512
    res = ev.likelihood(tiny_model, tok, [(row, short)])
    with torch.no_grad():
        logits = tiny_model(input_ids=torch.tensor([ids])).logits[0]
    nats = F.cross_entropy(logits[2:-1], torch.tensor(ids[3:]), reduction="sum").item()  # after MOOD, KEY
    assert res["tokens"] == len(ids) - 3 and res["notes"] == short.note_num()
    assert res["nats_per_token"] == pytest.approx(nats / (len(ids) - 3), rel=1e-4)
    assert res["bits_per_note"] == pytest.approx(nats / math.log(2) / short.note_num(), rel=1e-4)
    assert res["perplexity"] == pytest.approx(math.exp(res["nats_per_token"]))

    # a whole song in windows of 128: every music token and the EOS predicted once
    res = ev.likelihood(tiny_model, tok, [(row, song)], max_len=128)
    music = tok.encode_score(song)
    assert res["tokens"] == len(music) + 1 and math.isfinite(res["nats_per_token"])
    windows = ev.likelihood_windows(tok, [1, tok.mood_id("calm"), tok.key_id("E major")], music, 128, {})
    assert all(len(w) <= 128 and w[:3] == [1, tok.mood_id("calm"), tok.key_id("E major")] for w, _ in windows)
    assert sum((w[f:] for w, f in windows), []) == music + [2]
    bar = tok.remi.vocab["Bar_None"]
    assert sum(w[3] == bar for w, _ in windows[1:]) >= len(windows[1:]) - 1  # cut at bar lines

    # the token budget takes whole pieces only
    res = ev.likelihood(tiny_model, tok, [(row, short), (row, short), (row, short)], max_tokens=1)
    assert res["pieces"] == 1 and res["tokens"] == len(ids) - 3
    assert ev.likelihood(tiny_model, tok, [])["nats_per_token"] is None


# ---------------------------------------------------------------------------- the whole report

def _corpus(root: Path) -> Path:
    """A corpus folder (manifest.jsonl + pieces/) of 24-bar (2/4) openings of the POP909
    excerpt's songs: 2 test, 1 valid, 1 train."""
    from melodia.fileio import write_jsonl
    from melodia.music.mood_estimator import MoodEstimator

    rows = []
    (root / "pieces").mkdir(parents=True, exist_ok=True)
    for i, split in zip(range(1, 5), ("test", "test", "valid", "train")):
        score = symusic.Score(str(POP909 / f"00{i}" / f"00{i}.mid"))
        score = ev.excerpt(score, 8, 24)
        est = MoodEstimator().estimate(score)
        score.dump_midi(str(root / "pieces" / f"00{i}.mid"))
        rows.append({"id": f"00{i}", "file": f"pieces/00{i}.mid", "split": split, "mood": est.mood,
                     "key": est.features.key.name, "tags": []})
    write_jsonl(root / "manifest.jsonl", rows)
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tok, tiny_model):
    from melodia.model import save_model_dir

    root = tmp_path_factory.mktemp("model")
    tok_path = tok.save(root / "tok" / "tokenizer.json")
    return save_model_dir(tiny_model, root / "model", tok_path, {"max_len": 256})


def _stand_in_generator(tok, corpus: Path):
    """Real POP909 bars encoded with the requested mood: a stand-in for melodia.generate."""
    songs = [symusic.Score(str(corpus / "pieces" / f"00{i}.mid")) for i in range(1, 5)]
    calls = []

    def generate(mood: str, n: int, seed: int, bars: int) -> list[list[int]]:
        calls.append((mood, n, seed, bars))
        out = []
        for k in range(n):
            song = songs[(k + seed) % 4]
            ex = ev.excerpt(song, 2 * k, bars)
            out.append(tok.encode_piece(ex, mood))
        bar = tok.remi.vocab["Bar_None"]
        last = max(i for i, x in enumerate(out[-1]) if x == bar)
        out[-1] = out[-1][:last] + [2]  # one cut short: a bar fewer
        return out
    return generate, calls


def _png_size(path: Path) -> tuple[int, int]:
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(str(path))
    return img.shape[1], img.shape[0]


def test_evaluate_writes_a_report_whose_pictures_open(tmp_path, tok, model_dir):
    corpus = _corpus(tmp_path / "C")
    gen, calls = _stand_in_generator(tok, corpus)
    out = tmp_path / "report"
    r = ev.evaluate(model_dir, corpus, n=4, seed=3, out_dir=out, bars=4, max_tokens=300,
                    samples_per_mood=2, generate_fn=gen)
    assert [c[0] for c in calls] == ["any", "happy", "tense", "sad", "calm"]
    assert all(c[1] == 4 and c[3] == 4 for c in calls)

    lk = r["likelihood"]
    assert lk["split"] == "test" and lk["pieces"] == 1 and lk["tokens"] >= 300
    assert math.isfinite(lk["nats_per_token"]) and lk["bits_per_note"] > 0 and lk["window"] == 256
    v = r["validity"]
    assert v["n"] == 20 and v["exact_bars_share"] == pytest.approx(15 / 20)
    assert r["validity_by_mood"]["happy"]["exact_bars_share"] == 0.75
    rg = r["real_vs_generated"]
    assert rg["n_real"] == 4 and rg["real_pieces"] == 2 and rg["n_generated"] == 4
    assert set(rg["features"]) == set(ev.FEATURES)
    mc = r["mood_control"]
    assert mc["n"] == 16 and sum(map(sum, mc["confusion"])) == 16
    assert set(mc["reference"]) == {"real", "unconditional"}

    report = json.loads((out / "report.json").read_text())  # strict JSON: no NaN
    assert report["seconds"] == r["seconds"] and "timings" in report
    md = (out / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", md)
    pngs = [link for link in links if link.endswith(".png")]
    assert len(pngs) == 4 + 8 and len([x for x in links if x.endswith(".mid")]) == 8
    for link in links:
        assert (out / link).is_file(), link
    for link in pngs:
        w, h = _png_size(out / link)
        assert w >= 600 and h >= 300
    assert "## Mood control" in md and "nats/token" in md


def test_evaluate_errors_are_named(tmp_path, tok, model_dir):
    corpus = _corpus(tmp_path / "C")
    gen, _ = _stand_in_generator(tok, corpus)
    with pytest.raises(BadInputError, match="n must be"):
        ev.evaluate(model_dir, corpus, n=1, out_dir=tmp_path / "o", generate_fn=gen)
    with pytest.raises(MelodiaError, match="model directory not found"):
        ev.evaluate(tmp_path / "nope", corpus, n=2, out_dir=tmp_path / "o", generate_fn=gen)
    with pytest.raises(BadInputError, match="not a corpus"):
        ev.evaluate(model_dir, tmp_path, n=2, out_dir=tmp_path / "o", generate_fn=gen)
    with pytest.raises(BadInputError, match="give --corpus"):
        ev.evaluate(model_dir, None, n=2, out_dir=tmp_path / "o", generate_fn=gen)

    def short(mood, n, seed, bars):
        return gen(mood, n, seed, bars)[:-1]
    with pytest.raises(MelodiaError, match="returned 1 sequences"):
        ev.evaluate(model_dir, corpus, n=2, out_dir=tmp_path / "o", bars=2, max_tokens=10,
                    generate_fn=short)


def test_corpus_defaults_to_the_one_the_model_was_trained_on(tmp_path):
    corpus = _corpus(tmp_path / "C")
    shards = tmp_path / "T"
    shards.mkdir()
    (shards / "index.json").write_text(json.dumps({"corpus": str(corpus)}))
    assert ev.corpus_from_meta(tmp_path, {"corpus": {"data": str(shards)}}) == corpus
    with pytest.raises(BadInputError, match="give --corpus"):
        ev.corpus_from_meta(tmp_path, {"corpus": {"data": str(tmp_path / "gone")}})


@pytest.mark.slow
def test_evaluate_with_the_real_generator(tmp_path, model_dir):
    pytest.importorskip("melodia.generate")
    corpus = _corpus(tmp_path / "C")
    r = ev.evaluate(model_dir, corpus, n=2, bars=2, max_tokens=50, samples_per_mood=1,
                    out_dir=tmp_path / "r")
    assert r["validity"]["n"] == 10
    assert r["validity"]["valid_share"] == 1.0 and r["validity"]["exact_bars_share"] == 1.0
    assert r["real_vs_generated"]["n_generated"] == 2 and (tmp_path / "r" / "report.md").is_file()


def test_cli_arguments(tmp_path, monkeypatch, capsys):
    p = argparse.ArgumentParser()
    ev.add_evaluate_arguments(p)
    a = p.parse_args(["--model", "M", "--corpus", "C", "--out", "R"])
    assert (a.model, a.corpus, a.n, a.seed, a.bars, a.out, a.max_tokens) == ("M", "C", 64, 0, 8, "R", 50_000)
    seen = {}

    def fake(model, corpus, **kw):
        seen.update(kw, model=model, corpus=corpus)
        return {"likelihood": {"nats_per_token": 1.5, "bits_per_note": 7.0}, "seconds": 3.0,
                "validity": {"valid_share": 1.0, "exact_bars_share": 0.5},
                "mood_control": {"quadrant_accuracy": 0.25}}
    from melodia.evaluate import run

    monkeypatch.setattr(run, "evaluate", fake)  # cli_evaluate calls the run module's evaluate
    assert ev.cli_evaluate(p.parse_args(["--corpus", "C", "--out", "R", "--n", "8", "--max-tokens", "0",
                                         "--quiet"])) == 0
    assert seen["n"] == 8 and seen["max_tokens"] is None and seen["model"] is None and not seen["progress"]
    out = capsys.readouterr().out
    assert "1.500 nats/token" in out and "mood accuracy 25.0%" in out


def test_import_is_cheap():
    import subprocess
    import sys

    code = ("import sys, melodia.evaluate; "
            "print(any(m in sys.modules for m in ('torch', 'matplotlib', 'miditok', 'symusic')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_groove_consistency_with_an_onset_in_the_final_bar_start():
    import symusic

    from melodia.evaluate import groove_consistency

    s = symusic.Score(480)
    s.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    t = symusic.Track("x", program=0)
    for bar in range(3):
        t.notes.append(symusic.Note(bar * 1920, 480, 60, 80))
    s.tracks.append(t)
    assert groove_consistency(s) == 1.0  # three identical bars, the last one starting at its onset


def test_report_names_folders_without_build_paths(tmp_path, monkeypatch):
    from melodia.evaluate import shown_path
    from melodia.model import DEFAULT_MODEL_DIR

    (tmp_path / "runs" / "a").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert shown_path(DEFAULT_MODEL_DIR) == "default"
    assert shown_path(tmp_path / "runs" / "a") == "runs/a" and shown_path(Path("runs/a")) == "runs/a"
    elsewhere = tmp_path.parent
    assert shown_path(elsewhere) == str(elsewhere)  # outside the working directory: as given
