"""The `melodia` command as a user types it: generate, overwrite refusal, continuation, help."""
from __future__ import annotations

import subprocess
import sys

import symusic
from conftest import POP909

from melodia.cli import main


def _bars(path) -> int:
    from miditok.utils import get_bars_ticks

    s = symusic.Score(str(path))
    return len(get_bars_ticks(s, only_notes_onsets=False)) if s.note_num() else 0


def test_generate_writes_midi_and_wav_with_the_bars_asked(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "x"
    args = ["generate", "--model", str(tiny_model_dir), "--mood", "melancholic", "--bars", "4", "--seed", "1",
            "--n", "2", "--out", str(out), "--wav"]
    assert main(args) == 0
    captured = capsys.readouterr()
    printed = captured.out.split()
    assert sorted(printed) == sorted(str(out / f"melancholic-1-{i}{e}") for i in (1, 2) for e in (".mid", ".wav"))
    told = captured.err.splitlines()  # what melodia chose, one line per piece
    for i in (1, 2):
        s = symusic.Score(str(out / f"melancholic-1-{i}.mid"))
        assert s.note_num() > 0 and _bars(out / f"melancholic-1-{i}.mid") == 4
        assert (out / f"melancholic-1-{i}.wav").stat().st_size > 44
        line = told[i - 1]
        assert line.startswith(f"melodia: melancholic-1-{i}: sad, ") and " minor, " in line
        assert f"{s.tempos[0].qpm:g} qpm, 4/4, 4 bars, {s.note_num()} notes" in line
    before = (out / "melancholic-1-1.mid").read_bytes()
    assert main(args) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
    assert (out / "melancholic-1-1.mid").read_bytes() == before
    assert main(args + ["--force"]) == 0
    assert (out / "melancholic-1-1.mid").read_bytes() == before  # same seed, same notes


def test_generate_continue_keeps_the_clip(tmp_path, tiny_model_dir):
    clip = symusic.Score(str(POP909 / "002" / "002.mid")).clip(0, 480 * 4 * 4)
    clip.dump_midi(str(tmp_path / "clip.mid"))
    assert main(["generate", "--model", str(tiny_model_dir), "--continue", str(tmp_path / "clip.mid"),
                 "--bars", "2", "--seed", "2", "--out", str(tmp_path / "o"), "--name", "more"]) == 0
    got = symusic.Score(str(tmp_path / "o" / "more.mid"))
    assert got.note_num() >= clip.note_num()


def test_leading_tone_flag(tmp_path, tiny_model_dir):
    assert main(["generate", "--model", str(tiny_model_dir), "--key", "A minor", "--leading-tone", "--bars", "2",
                 "--n", "2", "--seed", "4", "--out", str(tmp_path), "--name", "lt"]) == 0
    pcs = {n.pitch % 12 for i in (1, 2) for t in symusic.Score(str(tmp_path / f"lt-{i}.mid")).tracks
           if not t.is_drum for n in t.notes}
    assert pcs and pcs <= {9, 11, 0, 2, 4, 5, 7, 8}


def test_bad_values_are_one_clear_line(tmp_path, tiny_model_dir, capsys):
    assert main(["generate", "--model", str(tiny_model_dir), "--mood", "grumpy", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("melodia: error:") and "grumpy" in err
    assert main(["generate", "--model", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err


def test_a_command_imports_only_its_own_stage():
    """`melodia generate` is the start-up that is timed; importing train, serve and evaluate
    just to build their argument parsers cost it about 0.2 s."""
    code = ("import sys, contextlib, io\nfrom melodia.cli import main\n"
            "for argv in (['generate', '--help'], ['train', '--help']):\n"
            "    out = io.StringIO()\n"
            "    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
            "        main(argv)\n"
            "    print(argv[0], '--out' in out.getvalue(), '--steps' in out.getvalue(),\n"
            "          sorted(m for m in ('melodia.train', 'melodia.serve', 'melodia.evaluate') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert r.stdout.splitlines() == ["generate True False []", "train True True ['melodia.train']"]


def test_help_is_fast_and_lists_every_stage():
    r = subprocess.run([sys.executable, "-m", "melodia", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("corpus", "tokenize", "train", "generate", "render", "evaluate", "serve", "info"):
        assert cmd in r.stdout
