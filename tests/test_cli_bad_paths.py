"""Issue 22 item 5: no traceback reaches the user from any CLI subcommand.

Every subcommand is run against bad paths: an output that is an existing file, an output
folder under a file (``FILE/sub``: it fails for root too, where permission bits do not), a
missing input, an input that is not MIDI (or not the folder it should be), and a full disk.
Each answer is one ``melodia: error: …`` line on stderr naming the path, exit status 2 (the
status of every melodia error; ``corpus build --strict`` with skipped files is 1), nothing
written, and no traceback.
"""
from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

symusic = pytest.importorskip("symusic")

from conftest import make_piece  # noqa: E402

from melodia import fileio  # noqa: E402
from melodia.cli import build_parser, main  # noqa: E402
from melodia.errors import MelodiaError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def paths(tmp_path) -> dict[str, Path]:
    d = {"FILE": tmp_path / "taken", "NOTMIDI": tmp_path / "notes.mid", "MISSING": tmp_path / "missing.mid",
         "EMPTY": tmp_path / "empty", "CLIP": make_piece(tmp_path / "clip.mid", bars=4)}
    d["FILE"].write_text("mine")
    d["NOTMIDI"].write_text("these are not the notes you are looking for")
    d["EMPTY"].mkdir()
    d["SUB"] = d["FILE"] / "sub"
    d["OUT"] = tmp_path / "out"
    return d


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_error_line(err: str, *words: str) -> str:
    lines = err.splitlines()
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("melodia: error: "), err
    for w in words:
        assert w in lines[0], (w, err)
    return lines[0]


#: (argv with placeholders, the word the error line must name); every subcommand, every kind of bad path
CASES = {
    # an output that is an existing file, or a folder under one
    "corpus build --out FILE": (["corpus", "build", "CLIP", "--out", "FILE", "--quiet"], "FILE"),
    "corpus build --out FILE/sub": (["corpus", "build", "CLIP", "--out", "SUB", "--quiet"], "FILE"),
    "tokenize --out FILE/sub": (["tokenize", "--corpus", "EMPTY", "--out", "SUB"], "FILE"),
    "train --out FILE/sub": (["train", "--data", "EMPTY", "--out", "SUB"], "FILE"),
    "generate --out FILE": (["generate", "--mood", "calm", "--out", "FILE"], "FILE"),
    "generate --out FILE/sub": (["generate", "--mood", "calm", "--out", "SUB"], "FILE"),
    "infill --out FILE/sub": (["infill", "CLIP", "--bars", "2", "--out", "SUB"], "FILE"),
    "render --out FILE": (["render", "CLIP", "--out", "FILE"], "FILE"),
    "render --out FILE/sub": (["render", "CLIP", "--png", "--out", "SUB"], "FILE"),
    "evaluate --out FILE/sub": (["evaluate", "--out", "SUB"], "FILE"),
    # a missing input
    "corpus build MISSING": (["corpus", "build", "MISSING", "--out", "OUT", "--quiet", "--workers", "1"], "MISSING"),
    "corpus stats MISSING": (["corpus", "stats", "MISSING"], "MISSING"),
    "tokenize --corpus MISSING": (["tokenize", "--corpus", "MISSING", "--out", "OUT", "--quiet"], "MISSING"),
    "tokenize --check MISSING": (["tokenize", "--check", "--out", "MISSING"], "MISSING"),
    "train --data MISSING": (["train", "--data", "MISSING", "--out", "OUT"], "MISSING"),
    "train --corpus MISSING": (["train", "--corpus", "MISSING", "--from", "default", "--out", "OUT"], "MISSING"),
    "generate --model MISSING": (["generate", "--model", "MISSING", "--out", "OUT"], "MISSING"),
    "generate --continue MISSING": (["generate", "--continue", "MISSING", "--out", "OUT"], "MISSING"),
    "infill MISSING": (["infill", "MISSING", "--bars", "2", "--out", "OUT"], "MISSING"),
    "infill --model MISSING": (["infill", "CLIP", "--bars", "2", "--model", "MISSING", "--out", "OUT"], "MISSING"),
    "render MISSING": (["render", "MISSING", "--out", "OUT"], "MISSING"),
    "render --soundfont MISSING": (["render", "CLIP", "--wav", "--soundfont", "MISSING", "--out", "OUT"], "MISSING"),
    "evaluate --model MISSING": (["evaluate", "--model", "MISSING", "--out", "OUT", "--quiet"], "MISSING"),
    "serve --model MISSING": (["serve", "--model", "MISSING", "--port", "0", "--no-warmup", "--quiet"], "MISSING"),
    "info --model MISSING": (["info", "--model", "MISSING"], "MISSING"),
    # an input that is not MIDI, or not the folder it should be
    "corpus stats FILE": (["corpus", "stats", "NOTMIDI"], "NOTMIDI"),
    "tokenize --corpus NOTMIDI": (["tokenize", "--corpus", "NOTMIDI", "--out", "OUT"], "NOTMIDI"),
    "train --data NOTMIDI": (["train", "--data", "NOTMIDI", "--out", "OUT"], "NOTMIDI"),
    "generate --model NOTMIDI": (["generate", "--model", "NOTMIDI", "--out", "OUT"], "NOTMIDI"),
    "generate --model EMPTY": (["generate", "--model", "EMPTY", "--out", "OUT"], "EMPTY"),
    "generate --continue NOTMIDI": (["generate", "--continue", "NOTMIDI", "--out", "OUT"], "NOTMIDI"),
    "infill NOTMIDI": (["infill", "NOTMIDI", "--bars", "2", "--out", "OUT"], "NOTMIDI"),
    "infill a folder": (["infill", "EMPTY", "--bars", "2", "--out", "OUT"], "EMPTY"),
    "render NOTMIDI": (["render", "NOTMIDI", "--out", "OUT"], "NOTMIDI"),
    "render a folder": (["render", "EMPTY", "--out", "OUT"], "EMPTY"),
    "render --soundfont NOTMIDI": (["render", "CLIP", "--wav", "--soundfont", "NOTMIDI", "--out", "OUT"], "NOTMIDI"),
    "evaluate --model NOTMIDI": (["evaluate", "--model", "NOTMIDI", "--out", "OUT", "--quiet"], "NOTMIDI"),
    "serve --model NOTMIDI": (["serve", "--model", "NOTMIDI", "--port", "0", "--no-warmup", "--quiet"], "NOTMIDI"),
}


def test_the_cases_cover_every_subcommand():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = set(sub.choices) - {"corpus"} | {"corpus build", "corpus stats"}
    covered = {" ".join(argv[:2]) if argv[0] == "corpus" else argv[0] for argv, _ in CASES.values()}
    assert commands <= covered, commands - covered


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_path_is_one_line_and_exit_2(case, paths, capsys):
    argv, named = CASES[case]
    argv = [str(paths[a]) if a in paths else a for a in argv]
    before = _files(paths["FILE"].parent)
    assert main(argv) == 2
    _one_error_line(capsys.readouterr().err, str(paths[named]))
    assert _files(paths["FILE"].parent) == before  # no file written, none changed


#: inputs a new user got wrong that were found only after the model loaded (seconds), or after
#: the piece was generated (a --soundfont), or after evaluate made its --out: (argv, the path
#: the line names, the problem it names)
BEFORE_THE_MODEL = {
    "generate --continue MISSING": (["generate", "--continue", "MISSING", "--out", "OUT"], "MISSING", "no such file"),
    "generate --continue a folder": (["generate", "--continue", "EMPTY", "--out", "OUT"], "EMPTY", "is a directory"),
    "generate --continue NOTMIDI": (["generate", "--continue", "NOTMIDI", "--out", "OUT"], "NOTMIDI", "not a MIDI"),
    "generate --wav --soundfont MISSING": (["generate", "--mood", "calm", "--wav", "--soundfont", "MISSING", "--out",
                                            "OUT"], "MISSING", "SoundFont not found"),
    "generate --wav --soundfont a folder": (["generate", "--wav", "--soundfont", "EMPTY", "--out", "OUT"], "EMPTY",
                                            "not a file"),
    "generate --wav --soundfont NOTMIDI": (["generate", "--wav", "--soundfont", "NOTMIDI", "--out", "OUT"], "NOTMIDI",
                                           "not a SoundFont"),
    "generate --continue --wav --soundfont MISSING": (["generate", "--continue", "CLIP", "--wav", "--soundfont",
                                                       "MISSING", "--out", "OUT"], "MISSING", "SoundFont not found"),
    "infill --wav --soundfont MISSING": (["infill", "CLIP", "--bars", "2", "--wav", "--soundfont", "MISSING", "--out",
                                          "OUT"], "MISSING", "SoundFont not found"),
    "generate --soundfont without --wav": (["generate", "--mood", "calm", "--soundfont", "MISSING", "--out", "OUT"],
                                           "MISSING", "add --wav"),
    "infill --soundfont without --wav": (["infill", "CLIP", "--bars", "2", "--soundfont", "MISSING", "--out", "OUT"],
                                         "MISSING", "add --wav"),
    "evaluate --corpus MISSING": (["evaluate", "--corpus", "MISSING", "--out", "OUT", "--quiet"], "MISSING",
                                  "not a corpus folder"),
    "evaluate --corpus EMPTY": (["evaluate", "--corpus", "EMPTY", "--out", "OUT", "--quiet"], "EMPTY",
                                "no manifest.jsonl"),
    "evaluate --corpus NOTMIDI": (["evaluate", "--corpus", "NOTMIDI", "--out", "OUT", "--quiet"], "NOTMIDI",
                                  "not a corpus folder"),
}


def _refuse_model_loads(monkeypatch) -> None:
    """Loading any model fails the test: a bad input must be one line before that work."""
    from melodia.api import Composer

    run = importlib.import_module("melodia.evaluate.run")

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(Composer, "load", refuse)
    monkeypatch.setattr(run, "load_model_dir", refuse)


@pytest.mark.parametrize("case", list(BEFORE_THE_MODEL))
def test_a_bad_input_is_found_before_the_model_loads(case, paths, capsys, monkeypatch):
    """Each was one line and exit 2 only after loading the model (and, for --soundfont, after
    generating; evaluate made its empty --out folder first): now before, making nothing."""
    _refuse_model_loads(monkeypatch)
    argv, named, problem = BEFORE_THE_MODEL[case]
    argv = [str(paths[a]) if a in paths else a for a in argv]
    before = sorted(paths["FILE"].parent.rglob("*"))
    t0 = time.perf_counter()
    assert main(argv) == 2
    took = time.perf_counter() - t0  # printed, not asserted (a shared machine): the refused load is the check
    _one_error_line(capsys.readouterr().err, str(paths[named]), problem)
    assert sorted(paths["FILE"].parent.rglob("*")) == before and not paths["OUT"].exists()  # not even --out
    print(f"\nmelodia {case}: exit 2 in {took:.2f} s")


def test_evaluate_finds_an_unknown_corpus_before_the_model_loads(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """Without --corpus, evaluate reads the corpus from the model's melodia.json: a model whose
    shards are gone was one line only after its weights loaded; now before, making nothing."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    meta = json.loads((model / "melodia.json").read_text())
    meta["corpus"] = {**(meta.get("corpus") or {}), "data": str(tmp_path / "gone")}
    (model / "melodia.json").write_text(json.dumps(meta))
    _refuse_model_loads(monkeypatch)
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(model), "--out", str(out), "--quiet"]) == 2
    _one_error_line(capsys.readouterr().err, str(model), "give --corpus")
    assert not out.exists()


def test_corpus_build_skips_a_file_that_is_not_midi_and_says_where(paths, capsys):
    """A corpus build reads folders of whatever users have: a bad file is skipped and listed
    (report.json), not an error; with --strict it is exit 1 and one line."""
    argv = ["corpus", "build", str(paths["NOTMIDI"]), "--out", str(paths["OUT"]), "--quiet", "--workers", "1"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "1 skipped" in out.out
    skipped = json.loads((paths["OUT"] / "report.json").read_text())["skipped"]
    assert [s["path"] for s in skipped] == [str(paths["NOTMIDI"])] and "not a MIDI file" in skipped[0]["reason"]
    assert main([*argv, "--strict"]) == 1
    _one_error_line(capsys.readouterr().err, "--strict", "report.json")


def test_a_folder_in_place_of_an_output_file_is_one_line(paths, capsys):
    """With --force, a folder where render writes clip.png was an IsADirectoryError traceback."""
    out = paths["OUT"]
    (out / "clip.png").mkdir(parents=True)
    assert main(["render", str(paths["CLIP"]), "--png", "--out", str(out), "--force"]) == 2
    _one_error_line(capsys.readouterr().err, str(out / "clip.png"), "cannot write")
    assert [p.name for p in out.iterdir()] == ["clip.png"] and not any((out / "clip.png").iterdir())


# --------------------------------------------------------------------------- a full disk
def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_keeps_the_old_file_and_says_so_in_one_line(paths, capsys, monkeypatch):
    out = paths["OUT"]
    out.mkdir()
    (out / "clip.png").write_bytes(b"the picture I had")
    monkeypatch.setattr(fileio.os, "fsync", _disk_full)  # the data cannot be made to stick
    assert main(["render", str(paths["CLIP"]), "--png", "--out", str(out), "--force"]) == 2
    line = _one_error_line(capsys.readouterr().err, str(out / "clip.png"), "No space left on device")
    assert line.endswith("the old file is kept")
    assert _files(out) == {"clip.png": b"the picture I had"}  # no temporary file left either


def test_a_write_that_fills_the_disk_midway(paths, capsys, monkeypatch):
    """ENOSPC from the write itself (inside atomic_write's body), for a new file and an old one."""
    real_fdopen = fileio.os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(fileio.os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    new = paths["OUT"] / "new.json"
    with pytest.raises(MelodiaError, match=r"new\.json: cannot write \(No space left on device\); nothing was "
                                           r"written"):
        fileio.write_json(new, {"a": 1})
    assert not new.parent.exists() or _files(new.parent) == {}
    old = paths["FILE"]
    with pytest.raises(MelodiaError, match="the old file is kept"):
        fileio.write_text(old, "theirs")
    assert old.read_text() == "mine" and sorted(p.name for p in old.parent.iterdir() if p.name.startswith("."))== []
    # through the CLI: one line, exit 2
    assert main(["render", str(paths["CLIP"]), "--png", "--out", str(paths["OUT"])]) == 2
    _one_error_line(capsys.readouterr().err, "clip.png", "No space left on device", "nothing was written")


def test_an_os_error_outside_fileio_is_one_line_too(paths, capsys, monkeypatch):
    """Writers that are not atomic_write (torch.save, np.save, a metrics log) can meet a full disk too."""
    from melodia import render

    def full(score, path, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(render, "save", full)
    assert main(["render", str(paths["CLIP"]), "--png", "--out", str(paths["OUT"])]) == 2
    _one_error_line(capsys.readouterr().err, str(paths["OUT"] / "clip.png"), "No space left on device")


# --------------------------------------------------------------------------- the acceptance check
def test_generate_into_a_file_is_one_line_at_once_from_a_shell(paths):
    """``melodia generate … --out FILE``: exit 2, one line, nothing written, within 2 s (the time
    is printed, not asserted: the machine is shared; test_cli checks the model is never loaded)."""
    before = _files(paths["FILE"].parent)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "melodia", "generate", "--mood", "calm", "--seed", "1",
                        "--out", str(paths["FILE"])], capture_output=True, text=True, cwd=ROOT, timeout=120)
    took = time.perf_counter() - t0
    assert r.returncode == 2 and r.stdout == "", r
    _one_error_line(r.stderr, str(paths["FILE"]), "not a folder")
    assert _files(paths["FILE"].parent) == before
    print(f"\nmelodia generate --out FILE: exit 2 in {took:.2f} s")
