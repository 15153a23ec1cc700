"""A clearly A-minor clip continued is reported as A minor, not C major (issue 22, item 8):
the clip's key tells a key from its relative by the tonic at the ends, the bass and the
leading tone (keys.estimate_clip_key)."""
from __future__ import annotations

from pathlib import Path

from conftest import make_piece

GOLDEN_CLIP = Path(__file__).parent / "data" / "golden" / "clip.mid"
#: Am C G F | C G E7 Am: the bass on A at both ends, G# in the E7 bar, the melody ends on A
BARS = [("Am", [45, 57, 60, 64], [(69, 1), (72, 1), (76, 2)]), ("C", [48, 55, 60, 64], [(79, 2), (76, 1), (72, 1)]),
        ("G", [43, 55, 59, 62], [(74, 1), (79, 1), (74, 1), (71, 1)]), ("F", [41, 53, 57, 60], [(77, 1), (76, 1), (72, 2)]),
        ("C", [48, 55, 60, 64], [(79, 2), (76, 1), (72, 1)]), ("G", [43, 55, 59, 62], [(74, 1), (79, 1), (74, 1), (71, 1)]),
        ("E7", [40, 56, 59, 62], [(76, 2), (74, 1), (68, 1)]), ("Am", [45, 57, 60, 64], [(69, 4)])]


def a_minor_clip(path: Path) -> Path:
    import symusic

    s = symusic.Score(480)
    s.tempos.append(symusic.Tempo(0, qpm=100))
    s.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    mel, acc = symusic.Track("melody", program=0), symusic.Track("chords", program=1)
    for b, (_, chord, melody) in enumerate(BARS):
        acc.notes.extend(symusic.Note(b * 1920, 1920, p, 70) for p in chord)
        t = b * 1920
        for p, beats in melody:
            mel.notes.append(symusic.Note(t, beats * 480, p, 90))
            t += beats * 480
    s.tracks.extend([mel, acc])
    s.dump_midi(str(path))
    return path


def test_the_plain_key_profile_calls_it_c_major_the_clip_key_a_minor(tmp_path):
    from melodia.midifile import load_score
    from melodia.music.keys import estimate_clip_key, estimate_key, relative_cues
    from melodia.music.notes import TickNotes

    score = load_score(a_minor_clip(tmp_path / "am.mid"))
    assert estimate_key(score).name == "C major"  # the bug: C major and A minor share their notes
    assert relative_cues(9, TickNotes.of_score(score)) >= 3
    assert estimate_clip_key(score).name == "A minor"


def test_made_up_pieces_read_in_their_own_keys(tmp_path):
    from melodia.midifile import load_score
    from melodia.music.keys import KEY_NAMES, estimate_clip_key, estimate_key

    clip = load_score(GOLDEN_CLIP)  # POP909 001's first bars: the continue/infill goldens' clip
    assert estimate_clip_key(clip).name == estimate_key(clip).name == "F# major"
    wrong_before = 0
    for i in range(4):
        for minor in (False, True):
            s = load_score(make_piece(tmp_path / f"p{i}{minor}.mid", key_pc=i * 3, minor=minor, seed=i))
            key = KEY_NAMES[12 * minor + i * 3]
            assert estimate_clip_key(s).name == key
            wrong_before += estimate_key(s).name != key
    assert wrong_before == 2  # C minor read as Eb major, F# minor as A major


def test_continue_reports_a_minor(tmp_path, composer, one_torch_thread):
    from melodia.cli import main

    clip = a_minor_clip(tmp_path / "am.mid")
    piece = composer.continue_from(str(clip), bars=2, seed=1)[0]
    assert piece.key == "A minor"
    # the new bars keep to A natural minor: no C# F# (C major's notes and A minor's are the same,
    # so the scale cannot tell; the key the piece reports can)
    assert all(n.pitch % 12 in {9, 11, 0, 2, 4, 5, 7} for n in piece.notes if n.start_beat >= 32)
    assert composer.infill(str(clip), bars=(3, 4), seed=1)[0].key == "A minor"
    assert main(["generate", "--continue", str(clip), "--bars", "1", "--seed", "1", "--model",
                 str(composer.meta["path"]), "--out", str(tmp_path / "o"), "--threads", "1"]) == 0
