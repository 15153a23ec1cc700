"""Bar lines, beats and chords: the corpus puts music on its real metre, the tokens carry chords,
training rows teach infilling, and the metre figures measure it all."""
from __future__ import annotations

import json

import numpy as np
import pytest
import symusic
from conftest import POP909, make_piece

from melodia.corpus import (
    abc_pickup_onsets,
    build_corpus,
    fix_abc_pickup,
    grid_check,
    load_manifest,
    normalise,
    read_chord_markers,
    read_pop909,
)
from melodia.errors import BadInputError
from melodia.music.harmony import (
    Chord,
    NoteArrays,
    bar_lines,
    best_phase,
    chord_beat_share,
    chord_of_weights,
    chord_tone_share,
    grid_share,
    metre_figures,
    parse_chord,
    quantize_times,
    recognise_chords,
    rhythm_repetition,
)

TPQ = 480

# essenFolksong/erk10.abc X:428 (music21's corpus, BSD): a one-beat pickup (C2 at L:1/8) in 4/4
ERK10_428 = """X:428
T: ES KANN JA NICHT IMMER SO BLEIBEN
M: 4/4
L: 1/8
K: F
C2 | F2FFA2GF | cGG2z2
GA | B2BBd2cB | c4z2
"""
# oneills1850/0301-0350.abc X:335 (music21's corpus): half a beat of pickup, decorations, grace notes
ONEILL_335 = """X: 335
T:THE FOX'S SLEEP
M:C
L:1/8
K:D
B \\
| d2 d>c (cB) (AF) | A2 Bc d2 d>c | (cB) AF {A}GF TE>D | D4 z2 A2 |
"""


def _onsets(score: symusic.Score) -> list[int]:
    return sorted({n.time for t in score.tracks for n in t.notes})


# ----------------------------------------------------------------------------------- pickups
def test_music21_pickup_bwv1_6_padded_to_a_full_bar():
    import music21

    from melodia.corpus import music21_to_score

    score = music21_to_score(music21.corpus.parse("bach/bwv1.6"))
    ons = _onsets(score)
    assert score.time_signatures[0].time == 0 and score.time_signatures[0].numerator == 4
    assert ons[0] == 3 * TPQ          # the one-beat pickup ends the padded first bar
    assert ons[1] == 4 * TPQ          # the note after it starts bar 2
    # every later measure starts on a bar line: the soprano's notes per bar line
    bars = {t // (4 * TPQ) for t in ons}
    assert bars == set(range(max(bars) + 1))


@pytest.mark.parametrize("tune,pickup", [(ERK10_428, 1.0), (ONEILL_335, 0.5)])
def test_abc_pickup_puts_the_next_note_on_a_bar_line(tune, pickup):
    from melodia.sources import quiet_stderr

    with quiet_stderr():
        raw = symusic.Score.from_abc(tune)
    score, got = fix_abc_pickup(normalise(raw), tune)
    assert got == pytest.approx(pickup)
    ons = _onsets(score)
    assert ons[0] == round((4 - pickup) * TPQ)
    assert ons[1] == 4 * TPQ
    assert score.time_signatures[0].time == 0 and score.tempos[0].time == 0


def test_abc_pickup_counting():
    assert abc_pickup_onsets("X:1\nK:C\n|:CDEF|GABc|\n") == 0
    assert abc_pickup_onsets('X:1\nK:C\n"Am"!trill!{g}A [CEG]B | c4 |\n') == 3
    assert abc_pickup_onsets("X:1\nK:C\n%comment\nz2 G | c4 |\n") == 1


# ----------------------------------------------------------------------------------- POP909
def test_pop909_read_on_its_annotated_beats():
    """Song 001's first annotated beat sits 0.055 s after 0, off the MIDI's tempo grid; on its
    own beats its notes land on a sixteenth and its bass on the downbeat."""
    folder = POP909 / "001"
    first_beat = float((folder / "beat_midi.txt").read_text().split()[0])
    assert 0.05 < first_beat < 0.06
    score, key, chords = read_pop909(str(folder / "001.mid"))
    assert key == "F# major"
    assert (score.time_signatures[0].numerator, score.time_signatures[0].denominator) == (4, 4)
    notes = NoteArrays.of_score(score)
    bars = bar_lines(score)
    figs = metre_figures(notes, bars)
    assert figs["grid16"] >= 0.9
    assert figs["bass_downbeat"] >= 0.33
    # on the MIDI's own tempo grid (what melodia did before) far fewer onsets sit on a sixteenth
    raw = symusic.Score(str(folder / "001.mid"))
    raw_on = np.array([n.time for t in raw.tracks for n in t.notes]) / raw.ticks_per_quarter
    assert grid_share(raw_on) < 0.5
    # annotated chords: B major (IV of F#) comes, and they land on half beats
    assert Chord(11, "maj") in [c for _, c in chords]
    assert all((b * 2) == int(b * 2) for b, _ in chords)
    tempo = score.tempos[0].qpm
    beat_s = np.diff([float(x.split()[0]) for x in (folder / "beat_midi.txt").read_text().splitlines()[:9]])
    assert tempo == pytest.approx(60 / beat_s.mean(), rel=0.03)


def test_pop909_build_writes_chords_and_grid(tmp_path, pop909_dir):
    build_corpus([str(pop909_dir)], tmp_path / "C", workers=1, progress=False)
    rows = {r["song"]: r for r in load_manifest(tmp_path / "C")}
    r = rows["pop909:001"]
    assert r["chord_source"] == "annotated" and r["chords"] > 50
    assert r["grid16"] >= 0.9
    assert any("IV" in p for p in r["progressions"])
    score = symusic.Score(str(tmp_path / "C" / r["file"]))
    marks = read_chord_markers(score)
    assert len([c for _, c in marks if c is not None]) == r["chords"]
    stats_text = __import__("melodia.corpus", fromlist=["format_stats"]).format_stats(
        __import__("melodia.corpus", fromlist=["corpus_stats"]).corpus_stats(tmp_path / "C"))
    assert "on a sixteenth" in stats_text and "progressions" in stats_text


def test_pop909_without_beats_is_reported(tmp_path, pop909_dir):
    (pop909_dir / "002" / "beat_midi.txt").unlink()
    build_corpus([str(pop909_dir)], tmp_path / "C", workers=1, progress=False)
    report = json.loads((tmp_path / "C" / "report.json").read_text())
    assert [s["path"] for s in report["skipped"]] == ["pop909/002/002.mid"]
    assert "beat_midi.txt" in report["skipped"][0]["reason"]
    assert len(load_manifest(tmp_path / "C")) == 3


# ----------------------------------------------------------------------------------- any MIDI
def test_shifted_midi_file_is_repaired_by_the_grid_check(tmp_path):
    src = make_piece(tmp_path / "src" / "a.mid", bars=8, seed=3)
    sc = symusic.Score(str(src))
    shifted = symusic.Score(sc.ticks_per_quarter)
    shifted.tempos = sc.tempos
    shifted.time_signatures = sc.time_signatures
    for tr in sc.tracks:
        t = tr.copy()
        t.shift_time(100, inplace=True)   # 0.21 beat late: nothing on a sixteenth
        shifted.tracks.append(t)
    d = tmp_path / "midi"
    d.mkdir()
    shifted.dump_midi(str(d / "late.mid"))
    build_corpus([str(d)], tmp_path / "C", workers=1, progress=False)
    row = load_manifest(tmp_path / "C")[0]
    assert row["grid16"] == 1.0 and row["grid_shift"] > 0 and not row["off_grid"]
    fixed = symusic.Score(str(tmp_path / "C" / row["file"]))
    assert grid_share(np.array(_onsets(fixed)) / fixed.ticks_per_quarter) == 1.0


def test_unquantised_file_is_flagged_and_quantize_snaps_it(tmp_path):
    rng = np.random.default_rng(0)
    sc = symusic.Score(TPQ)
    tr = symusic.Track("played", program=0)
    for k in range(64):
        tr.notes.append(symusic.Note(int(k * 240 + rng.integers(0, 110)), 200, 60 + k % 7, 80))
    sc.tracks.append(tr)
    out, info = grid_check(sc)
    assert info["off_grid"] and not info["quantized"] and info["grid16"] < 0.5
    out, info = grid_check(sc, quantize=True)
    assert info["quantized"]
    on = np.array(_onsets(out)) / TPQ
    assert np.allclose(quantize_times(on), on)
    d = tmp_path / "m"
    d.mkdir()
    sc.dump_midi(str(d / "played.mid"))
    build_corpus([str(d)], tmp_path / "C", workers=1, progress=False)
    report = json.loads((tmp_path / "C" / "report.json").read_text())
    assert report["off_grid"] == ["m/played.mid"]
    build_corpus([str(d)], tmp_path / "Q", workers=1, progress=False, quantize=True)
    assert load_manifest(tmp_path / "Q")[0]["quantized"]


# ----------------------------------------------------------------------------------- harmony
@pytest.mark.parametrize("name,root,quality,bass", [
    ("Am", 9, "min", None), ("C/E", 0, "maj", 4), ("Cmaj7", 0, "maj7", None), ("Cm7", 0, "min7", None),
    ("Cdim", 0, "dim", None), ("Csus4", 0, "sus4", None), ("C7", 0, "7", None), ("Bb", 10, "maj", None),
    ("F#m7b5", 6, "hdim7", None), ("A:min7", 9, "min7", None), ("Gb:maj/3", 6, "maj", 10), ("C:maj6", 0, "maj", None),
])
def test_chord_names(name, root, quality, bass):
    assert parse_chord(name) == Chord(root, quality, bass)


@pytest.mark.parametrize("bad", ["H", "Cxyz", "", "C/Q"])
def test_bad_chord_names_are_named(bad):
    with pytest.raises(BadInputError, match="chord"):
        parse_chord(bad)


def test_chord_recognition_and_figures():
    # bar 1: C E G, bar 2: A C E (A minor), each held a whole bar, bass on the downbeat
    pitches = [[48, 64, 67], [45, 60, 64]]
    on, end, p = [], [], []
    for b, chord in enumerate(pitches):
        for q in chord:
            on.append(4.0 * b), end.append(4.0 * b + 4), p.append(q)
    notes = NoteArrays(np.array(on), np.array(end), np.array(p))
    bars = np.array([0.0, 4.0, 8.0])
    assert recognise_chords(notes, bars) == [(0.0, Chord(0, "maj")), (4.0, Chord(9, "min"))]
    assert chord_beat_share(notes, bars) == 1.0
    assert chord_tone_share(notes, [(0.0, Chord(0, "maj")), (4.0, Chord(9, "min"))]) == 1.0
    assert chord_tone_share(notes, [(0.0, Chord(2, "maj"))]) < 0.5
    assert chord_of_weights(np.eye(12)[[7, 11, 2, 5]].sum(0), 7) == Chord(7, "7")
    assert rhythm_repetition(np.array([0, 1, 2, 4, 5, 6.0]), bars) == 1.0
    assert rhythm_repetition(np.array([0, 1, 4.5, 6.5]), bars) == 0.0
    off = np.arange(32) * 0.5 + 0.2
    shift, share = best_phase(off)
    assert share == 1.0 and grid_share(off + shift) == 1.0 and grid_share(off) < 0.5


# ----------------------------------------------------------------------------------- tokens
def test_chord_tokens_follow_their_position_and_decode_away(tmp_path, pop909_dir):
    from melodia.shards import tokenize_corpus
    from melodia.tokenizer import MelodiaTokenizer

    build_corpus([str(pop909_dir)], tmp_path / "C", workers=1, progress=False)
    s = tokenize_corpus(tmp_path / "C", tmp_path / "T", vocab_size=600, max_len=512, workers=1, progress=False)
    tok = MelodiaTokenizer.load(tmp_path / "T" / "tokenizer.json")
    index = json.loads((tmp_path / "T" / "index.json").read_text())
    assert "C:maj" in index["chord_ids"] and set(index["fim_ids"]) == {"suffix", "middle"}
    arr = np.load(tmp_path / "T" / "train-000.npy")
    chord_ids = set(index["chord_ids"].values())
    ids = arr.tolist()
    at = [k for k, i in enumerate(ids) if i in chord_ids]
    assert len(at) > 100
    for k in at[:200]:   # right after a Position (or the Tempo behind it), never merged by BPE
        prev = tok.base_tokens(ids[k - 1])[-1]
        assert prev.startswith(("Position_", "Tempo_")), prev
    # key-normalised: POP909 001 in F# major is written on C, so its IV chord (B) reads F
    row = next(r for r in load_manifest(tmp_path / "C") if r["song"] == "pop909:001")
    score = symusic.Score(str(tmp_path / "C" / row["file"]))
    seq = tok.encode_piece(score, "happy", row["key"])
    names = [tok.id_to_token(i) for i in seq]
    assert "Chord_F:maj" in names and "Chord_B:maj" not in names
    back = tok.decode(seq)
    assert back.note_num() == score.note_num()
    got = tok.chords(seq)   # back in F# major, on the piece's beats
    assert got[:3] == [(b, c) for b, c in
                       [(t / TPQ, c) for t, c in read_chord_markers(score)][:3]]
    # decoded, the chords come back as markers a DAW shows, and a Piece lists them with lengths
    from melodia.api import Piece

    spans = Piece(back).chords
    want = [(t / TPQ, c) for t, c in read_chord_markers(score)]
    assert [c.name for c in spans[:6]] == [c.name if c else "N.C." for _, c in want[:6]]
    assert [c.start_beat for c in spans[:6]] == [b for b, _ in want[:6]]
    assert all(abs(a.start_beat + a.length_beats - b.start_beat) < 1e-6 for a, b in zip(spans, spans[1:]))
    assert s.failed == []


def test_fim_rows_rearrange_whole_bars(tmp_path):
    from shards_fixture import control_ids, write_shards

    from melodia.train import ShardData

    ids = control_ids(100)
    v = ids["vocab_size"]
    bar, fs, fm = 10, v, v + 1
    ids["vocab_size"] = v + 2
    bars = [[bar, 20 + b, 30 + b, 40 + b] for b in range(6)]
    chunk = [1, ids["mood_ids"]["happy"], ids["key_ids"]["C major"]] + [t for b in bars for t in b] + [2]
    write_shards(tmp_path, [{"tokens": chunk, "split": s, "mood": "happy", "key": "C major", "piece": "p",
                             "tags": []} for s in ("train", "valid")], ids, max_len=64)
    index = json.loads((tmp_path / "index.json").read_text())
    index.update(fim_ids={"suffix": fs, "middle": fm}, bar_ids=[bar])
    (tmp_path / "index.json").write_text(json.dumps(index))
    data = ShardData(tmp_path)
    assert data.can_fim
    rng = np.random.default_rng(0)
    for _ in range(20):
        row = data.fim_rearrange(np.asarray(chunk), rng).tolist()
        assert row[:3] == chunk[:3] and row[-1] == 2 and len(row) == len(chunk) + 2
        body = row[3:-1]
        i, j = body.index(fs), body.index(fm)
        pre, suf, mid = body[:i], body[i + 1:j], body[j + 1:]
        assert pre and suf and mid and all(seg[0] == bar for seg in (pre, suf, mid))
        assert pre + mid + suf == [t for b in bars for t in b]
    x, y = data.batch("train", [0] * 8, 64, fim=1.0, rng=np.random.default_rng(1))
    assert (x == fs).any() and not (y == fs).any() and not (y == fm).any()


# ----------------------------------------------------------------------------------- chords asked for
def test_chords_asked_for_are_written_exactly_and_only(composer):
    from melodia.music.harmony import parse_progression

    pieces = composer.generate(mood="happy", bars=6, chords="Am:2 F:2 C G", n=3, seed=4, dynamics="flat")
    want = [(b, c.name) for b, _, c in parse_progression("Am:2 F:2 C G", 4, 6)]
    for p in pieces:
        assert p.bars == 6 and len(p.notes) > 0
        assert [(c.start_beat, c.name) for c in p.chords] == want
        assert p.key == "A minor"          # no key given: it follows from the chords
        # every note is a tone of the chord in force, but for the melody's off-beat notes
        spans = [(c.start_beat, c.start_beat + c.length_beats, parse_chord(c.name).pitch_classes) for c in p.chords]
        melody = min(n.program for n in p.notes)
        for n in p.notes:
            tones = next(t for a, b, t in spans if a <= n.start_beat < b)
            if n.program != melody or n.start_beat == int(n.start_beat):
                assert n.pitch % 12 in tones, (n, p.chords)
    with pytest.raises(BadInputError, match="'Hm7'"):
        composer.generate(chords="C Hm7", bars=2)
    with pytest.raises(BadInputError, match="chord"):
        composer.generate(chords="", bars=2)


def test_key_of_a_progression():
    from melodia.music.harmony import key_of_chords

    assert key_of_chords([parse_chord(c) for c in "C G Am F".split()]) == "C major"
    assert key_of_chords([parse_chord(c) for c in "Am Dm E Am".split()]) == "A minor"


def test_phrases_open_on_the_tonic_and_chords_stay_in_key(composer):
    pieces = composer.generate(mood="sad", key="D minor", bars=9, n=2, seed=6, dynamics="flat")
    for p in pieces:
        at = {c.start_beat: c.name for c in p.chords}
        assert at[0.0] == "Dm" and at[16.0] == "Dm" and at[32.0] == "Dm"   # bars 1, 5 and the last (9)
        scale = {2, 4, 5, 7, 9, 10, 0}   # D natural minor
        assert all(parse_chord(c.name).pitch_classes <= scale for c in p.chords if c.name != "N.C.")
    from melodia.generate import GenerationConfig

    gen, tok = composer._gen, composer.tokenizer
    tonic = tok.chord_id(parse_chord("Cm"))   # D minor is read on C
    planned = gen.prepare(GenerationConfig(mood="sad", key="D minor", bars=9))[3][0].plan
    assert planned == ((1, 0, tonic), (5, 0, tonic), (9, 0, tonic))
    assert gen.prepare(GenerationConfig(mood="sad", key="D minor", bars=9, tonic_frame=False))[3][0].plan == ()
    free = gen.generate(GenerationConfig(mood="sad", key="D minor", bars=9, n=2, seed=6, tonic_frame=False))
    assert all(tok.count_errors(ids) == 0 for ids in free)


def test_note_arrays_in_ticks_and_seconds():
    from melodia.music.notes import TickNotes, onset_groups

    s = symusic.Score(TPQ)
    s.tempos.append(symusic.Tempo(0, qpm=120))
    s.tempos.append(symusic.Tempo(2 * TPQ, qpm=60))
    tr = symusic.Track("x", program=5)
    tr.notes.append(symusic.Note(0, TPQ, 60, 80))
    tr.notes.append(symusic.Note(2 * TPQ + 10, TPQ, 64, 70))
    drums = symusic.Track("d", program=0, is_drum=True)
    drums.notes.append(symusic.Note(TPQ, 10, 36, 100))
    s.tracks.extend([tr, drums])
    n = TickNotes.of_score(s)
    assert n.pitched.tolist() == [True, True, False] and n.p_pitch.tolist() == [60, 64]
    assert n.end.tolist() == [TPQ, 3 * TPQ + 10, TPQ + 10] and n.velocity.tolist() == [80, 70, 100]
    assert n.seconds(np.array([0, TPQ, 2 * TPQ, 3 * TPQ])).tolist() == [0.0, 0.5, 1.0, 2.0]
    beats = NoteArrays.of_score(s)
    assert np.array_equal(beats.onset, n.p_time / TPQ) and beats.program.tolist() == [5, 5]
    # onsets closer than a sixteenth of a beat are one onset
    assert onset_groups(np.array([0, 10, TPQ, TPQ + 40]), TPQ)[0].tolist() == [0, TPQ, TPQ + 40]
