"""Fine-tuning on a small folder, as the README says (issue 22, item 4): ``--patience`` without a
validation split is ignored with a warning instead of stopping the run, the warm-up is cut to
a tenth of the steps (with a note), a start that fails leaves no empty run folder, and the
README's "Your own music" commands run as written (on the tiny test model) through to
``melodia generate --tag``.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import symusic
from conftest import make_piece
from shards_fixture import synthetic_shards

from melodia.cli import main

REPO = Path(__file__).resolve().parents[1]
FAST = ["--preset", "tiny", "--batch-size", "4", "--lr", "1e-3", "--eval-batches", "2", "--threads", "1",
        "--device", "cpu", "--log-every", "1"]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def no_valid(tmp_path_factory) -> Path:
    """Real-format shards whose every chunk is in train (a small folder whose songs all hashed there)."""
    return synthetic_shards(tmp_path_factory.mktemp("noval") / "T", n_train=32, n_valid=0)


def test_patience_without_a_valid_split_is_ignored_with_one_warning(tmp_path, no_valid, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(no_valid), "--out", str(out), "--steps", "6", "--eval-every", "2",
                 "--patience", "3", *FAST]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "--patience" in line]
    assert warned == [f"melodia train: warning: --patience 3 ignored: {no_valid} has no validation split to watch, "
                      f"so all 6 steps run and the last weights are kept (`melodia train --corpus MIDI_DIR --from "
                      f"MODEL` holds out a tenth of the pieces)"]
    meta = json.loads((out / "model" / "melodia.json").read_text())
    assert meta["training"]["steps_done"] == 6 and meta["training"]["patience"] == 0
    assert [r["step"] for r in _metrics(out) if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_warmup_is_capped_at_a_tenth_of_the_steps_with_a_note(tmp_path, no_valid, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(no_valid), "--out", str(out), "--steps", "20", "--eval-every", "20",
                 "--ckpt-every", "10", *FAST]) == 0  # the default warm-up, 100 steps
    err = capsys.readouterr().err
    assert "melodia train: note: warm-up 100 steps is over a tenth of the 20 steps; warming up for 2 instead" in err
    lrs = {r["step"]: r["lr"] for r in _metrics(out) if "lr" in r}
    assert lrs[1] == pytest.approx(0.5e-3) and lrs[2] == pytest.approx(1e-3)  # full lr at step 2, not 100
    assert json.loads((out / "model" / "melodia.json").read_text())["training"]["warmup"] == 2
    # resuming with the same command (warm-up asked: 100) goes on with the warm-up the run had
    assert main(["train", "--data", str(no_valid), "--out", str(out), "--steps", "30", "--warmup", "100",
                 "--eval-every", "20", "--resume", *FAST]) == 0
    assert "warm-up" not in capsys.readouterr().err
    assert json.loads((out / "model" / "melodia.json").read_text())["training"]["warmup"] == 2
    # a warm-up within a tenth is kept, without a note
    assert main(["train", "--data", str(no_valid), "--out", str(tmp_path / "r2"), "--steps", "20", "--warmup", "2",
                 "--eval-every", "20", *FAST]) == 0
    assert "warm-up" not in capsys.readouterr().err


def test_a_failed_start_leaves_no_empty_run_folder(tmp_path, no_valid, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(out), *FAST]) == 2
    assert "missing" in capsys.readouterr().err and not out.exists()
    bad_init = tmp_path / "not-a-model"
    bad_init.mkdir()
    assert main(["train", "--data", str(no_valid), "--out", str(out), "--init", str(bad_init), "--steps", "2",
                 *FAST[2:]]) == 2
    assert not out.exists()
    # a folder that was there before the run stays, even empty
    out.mkdir()
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(out), *FAST]) == 2
    assert out.is_dir()
    out.rmdir()
    # a failure once the folder is made removes it while nothing is written there yet ...
    from melodia.train.loop import Run

    def boom(self, batches):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Run, "optimizer_step", boom)
    with pytest.raises(RuntimeError):
        main(["train", "--data", str(no_valid), "--out", str(out), "--steps", "4", *FAST])
    assert not out.exists()
    # ... and keeps it once it holds something (here the step-0 validation line)
    with_valid = synthetic_shards(tmp_path / "T2", n_train=16, n_valid=4)
    with pytest.raises(RuntimeError):
        main(["train", "--data", str(with_valid), "--out", str(out), "--steps", "4", *FAST])
    assert [r["step"] for r in _metrics(out)] == [0]


def _readme_commands() -> list[str]:
    """The shell lines of README's "Your own music" block (continuation lines joined)."""
    text = (REPO / "README.md").read_text(encoding="utf-8").split("## Your own music", 1)[1]
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split(" #")[0].strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_readme_fine_tuning_commands_run_as_written(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """The README's commands, with the tiny test model for the shipped one and a made-up folder
    of 16 pieces in jazzy/ and film/ for my_midi/; every flag as written."""
    commands = _readme_commands()
    assert [shlex.split(c)[:2] for c in commands] == [["melodia", "corpus"], ["melodia", "tokenize"],
                                                    ["melodia", "train"], ["melodia", "info"], ["melodia", "generate"]]
    for i in range(8):
        make_piece(tmp_path / "my_midi" / "jazzy" / f"j{i}.mid", key_pc=i, seed=i, bars=8, qpm=100)
        make_piece(tmp_path / "my_midi" / "film" / f"f{i}.mid", key_pc=i, minor=True, seed=40 + i, bars=8, qpm=66)
    monkeypatch.chdir(tmp_path)
    for command in commands:
        argv = shlex.split(command.replace("melodia/weights/default", str(tiny_model_dir)))[1:]
        if argv[0] in ("train", "generate"):
            argv += ["--threads", "1"]  # the test machine is shared; no other change
        assert main(argv) == 0, command
    out = capsys.readouterr()
    assert "tags: film 8 (50%), jazzy 8 (50%)" in out.out and "  tags: film, jazzy" in out.out
    meta = json.loads((tmp_path / "my-run" / "model" / "melodia.json").read_text())
    train_argv = shlex.split(commands[2])
    cap = max(1, int(train_argv[train_argv.index("--steps") + 1]) // 10)  # README's --steps, default warm-up
    assert meta["training"]["warmup"] == cap and f"warming up for {cap} instead" in out.err
    assert meta["tags"].keys() == {"film", "jazzy"}
    piece = symusic.Score(str(tmp_path / "out" / "jazzy.mid"))
    assert piece.note_num() > 0
