"""Tags at the command line: a model fine-tuned on sub-folders ``jazzy/`` and ``film/`` takes
``--tag`` (generate, --continue, infill), takes ``--mood jazzy`` as that tag, and ``melodia
info --model`` lists its moods, tags and styles; ``melodia corpus build`` prints the tags it
found, with counts (issue 22, item 3).

The model is the tiny test model fine-tuned two steps on made-up pieces in two folders: real
MIDI, real tokens, the real sampler; the tests check the control tokens the model read.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import symusic
from conftest import make_piece

from melodia.cli import main


def _tagged_folder(root: Path, per_folder: int = 4) -> Path:
    for i in range(per_folder):
        make_piece(root / "jazzy" / f"a{i}.mid", key_pc=i, seed=i, bars=4, qpm=90)
        make_piece(root / "film" / f"b{i}.mid", key_pc=(5 * i) % 12, minor=True, seed=50 + i, bars=4, qpm=70)
    return root


@pytest.fixture(scope="module")
def tagged_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model fine-tuned (2 steps) on a folder with sub-folders jazzy/ and film/."""
    root = tmp_path_factory.mktemp("tagged")
    src = _tagged_folder(root / "mine")
    assert main(["train", "--corpus", str(src), "--from", str(tiny_model_dir), "--out", str(root / "run"),
                 "--steps", "2", "--batch-size", "2", "--seq-len", "128", "--threads", "1", "--log-every", "100"]) == 0
    return root / "run" / "model"


@pytest.fixture
def read_controls(monkeypatch) -> list[list[str]]:
    """The control tokens (MOOD_, KEY_, TAG_ …) of every conditional prefix the sampler feeds the model."""
    from melodia.generate.sampler import Generator

    seen: list[list[str]] = []
    real = Generator.controls

    def spy(self, req):
        cond, uncond = real(self, req)
        seen.append([self.tok.controls[i - self.tok.base_size] for i in cond if i >= self.tok.base_size])
        return cond, uncond

    monkeypatch.setattr(Generator, "controls", spy)
    return seen


def _notes(path: Path) -> int:
    return symusic.Score(str(path)).note_num()


def test_corpus_build_prints_the_tags_and_moods_it_found_with_counts(tmp_path, capsys):
    src = _tagged_folder(tmp_path / "mine", per_folder=3)
    make_piece(src / "jazzy" / "a3.mid", seed=98, bars=4)
    for i in (0, 1):
        make_piece(src / f"loose{i}.mid", seed=99 + i, bars=4)  # no folder: no tag
    (src / "labels.csv").write_text("file,mood,tags\nfilm/b0.mid,,piano\n", encoding="utf-8")
    assert main(["corpus", "build", str(src), "--out", str(tmp_path / "C"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "\ntags: jazzy 4 (44%), film 3 (33%), piano 1 (11%)\n" in out
    moods = next(line for line in out.splitlines() if line.startswith("moods: "))
    assert sum(int(part.split()[1]) for part in moods[7:].split(", ")) == 9  # every piece has a mood, counted
    report = json.loads((tmp_path / "C" / "report.json").read_text())
    assert report["tags"] == {"jazzy": 4, "film": 3, "piano": 1}
    # a folder with no tags says so
    plain = tmp_path / "plain"
    make_piece(plain / "x.mid", seed=7, bars=4)
    assert main(["corpus", "build", str(plain), "--out", str(tmp_path / "C2"), "--workers", "1"]) == 0
    assert "\ntags: none\n" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [["--tag", "jazzy", "--tag", "film"], ["--tag", "jazzy, Film"]])
def test_generate_tag_reaches_the_model(tmp_path, tagged_model, read_controls, flags):
    assert main(["generate", "--model", str(tagged_model), *flags, "--mood", "calm", "--bars", "2", "--seed", "1",
                 "--out", str(tmp_path)]) == 0
    assert read_controls and all(c[0] == "MOOD_calm" and c[-2:] == ["TAG_jazzy", "TAG_film"] for c in read_controls)
    assert _notes(tmp_path / "calm-1.mid") > 0


def test_mood_that_is_a_tag_of_the_model_is_used_as_the_tag(tmp_path, tagged_model, read_controls, capsys):
    assert main(["generate", "--model", str(tagged_model), "--mood", "jazzy", "--bars", "2", "--seed", "3",
                 "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "melodia: jazzy is a tag of this model, not a mood: generating with tag jazzy and mood any" in err
    assert read_controls[-1][0] == "MOOD_any" and read_controls[-1][-1] == "TAG_jazzy"
    assert "TAG_film" not in read_controls[-1]
    assert _notes(tmp_path / "jazzy-3.mid") > 0
    # with no mood, the file is named after the tag
    assert main(["generate", "--model", str(tagged_model), "--tag", "film", "--bars", "1", "--seed", "3",
                 "--out", str(tmp_path)]) == 0
    assert _notes(tmp_path / "film-3.mid") > 0 and read_controls[-1][0] == "MOOD_any"


def test_unknown_tag_or_word_is_one_line_naming_what_the_model_knows(tmp_path, tagged_model, capsys):
    assert main(["generate", "--model", str(tagged_model), "--tag", "polka", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "melodia: error: unknown tag 'polka'; this model knows film, jazzy"
    assert main(["generate", "--model", str(tagged_model), "--mood", "polka", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("melodia: error: unknown mood 'polka'") and err.endswith("also knows the tags film, jazzy")
    assert not list(tmp_path.iterdir())


def test_continue_and_infill_take_tags(tmp_path, tagged_model, read_controls, capsys):
    clip = make_piece(tmp_path / "clip.mid", bars=4, seed=5)
    assert main(["generate", "--model", str(tagged_model), "--continue", str(clip), "--tag", "film", "--bars", "1",
                 "--seed", "2", "--out", str(tmp_path / "c"), "--name", "more"]) == 0
    assert read_controls[-1][-1] == "TAG_film"
    assert _notes(tmp_path / "c" / "more.mid") >= _notes(clip)
    assert main(["infill", str(clip), "--model", str(tagged_model), "--bars", "2", "--mood", "jazzy", "--seed", "2",
                 "--out", str(tmp_path / "i"), "--name", "fill"]) == 0
    assert read_controls[-1][0] == "MOOD_any" and read_controls[-1][-1] == "TAG_jazzy"
    assert "jazzy is a tag of this model" in capsys.readouterr().err
    assert _notes(tmp_path / "i" / "fill.mid") > 0


def test_info_model_lists_its_moods_tags_and_styles(tagged_model, tiny_model_dir, capsys):
    assert main(["info", "--model", str(tagged_model)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"model {tagged_model}: tiny preset" in "\n".join(lines)
    assert "  moods: happy, tense, sad, calm" in lines
    assert "  tags: film, jazzy" in lines
    controls = json.loads((tagged_model / "tokenizer.json").read_text())["melodia"]["controls"]
    styles = [c[len("STYLE_"):] for c in controls if c.startswith("STYLE_")]  # the corpus's styles, if any
    assert f"  styles: {', '.join(styles) or 'none'}" in lines
    assert main(["info", "--model", str(tiny_model_dir)]) == 0
    assert "  tags: none" in capsys.readouterr().out.splitlines()
    assert main(["info", "--model", str(tiny_model_dir / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_composer_mood_or_tag(tagged_model):
    from melodia.api import Composer
    from melodia.errors import BadInputError

    c = Composer.load(tagged_model, device="cpu")
    assert c.tags == ["film", "jazzy"]
    assert c.mood_or_tag("jazzy") == (None, ["jazzy"])
    assert c.mood_or_tag("Jazzy", ["film", "jazzy"]) == (None, ["film", "jazzy"])
    assert c.mood_or_tag("melancholic", ["Film"]) == ("melancholic", ["film"])
    assert c.mood_or_tag(None) == (None, [])
    with pytest.raises(BadInputError, match="unknown tag 'rock'"):
        c.mood_or_tag(None, ["rock"])
