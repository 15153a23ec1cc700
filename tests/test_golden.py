"""Golden outputs: fixed-seed results of the shipped model and of the corpus reader, kept as
bytes in ``tests/data/golden/``, so that a change meant to keep behaviour (a refactor) is
proved to keep it byte for byte.

Recorded on one CPU thread (``torch.set_num_threads(1)``). Float kernels differ between CPU
families, so the byte comparison runs only where torch reports the CPU capability the goldens
were recorded with (``MANIFEST.json`` → ``cpu_capability``); elsewhere it is skipped and says why.

To record them anew (only when a behaviour change is intended, and say so in the commit):
``MELODIA_GOLDEN=write python -m pytest tests/test_golden.py``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import POP909, running_server

GOLDEN = Path(__file__).parent / "data" / "golden"
WRITE = os.environ.get("MELODIA_GOLDEN") == "write"
CLIP = GOLDEN / "clip.mid"  # the prompt for --continue and infill: bars 1-8 of POP909 001, as stored by the corpus

# one CLI call each: name -> argv after `melodia`
CLI_CASES = {
    "happy": ["generate", "--mood", "happy", "--bars", "8", "--seed", "1"],
    "tense": ["generate", "--mood", "tense", "--bars", "8", "--seed", "2"],
    "sad": ["generate", "--mood", "sad", "--bars", "16", "--seed", "3"],
    "calm": ["generate", "--mood", "calm", "--bars", "8", "--seed", "4", "--key", "F major", "--tempo", "72"],
    "chords": ["generate", "--mood", "sad", "--bars", "8", "--seed", "5", "--chords", "Am F C G"],
    "form": ["generate", "--mood", "happy", "--bars", "16", "--seed", "6", "--form", "AABA"],
    "form-vary": ["generate", "--bars", "16", "--seed", "7", "--form", "AABA", "--vary",
                  "--chords", "A: C G Am F; B: F G Em Am"],
    "meter-instruments": ["generate", "--mood", "tense", "--bars", "8", "--seed", "8", "--meter", "3/4",
                          "--instruments", "piano,strings,bass"],
    "continue": ["generate", "--continue", str(CLIP), "--bars", "4", "--mood", "calm", "--seed", "9"],
    "continue-chords": ["generate", "--continue", str(CLIP), "--bars", "4", "--chords", "F G", "--seed", "10",
                        "--new-only"],
    "infill": ["infill", str(CLIP), "--bars", "3-5", "--mood", "sad", "--seed", "11"],
}
SERVER_BODY = {"mood": "happy", "bars": 4, "seed": 12, "n": 2}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability()


@pytest.fixture(scope="module")
def manifest(one_torch_thread) -> dict:
    if WRITE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        old = GOLDEN / "MANIFEST.json"  # a partial run (-k) keeps the other entries
        files = json.loads(old.read_text())["files"] if old.is_file() else {}
        return {"cpu_capability": _capability(), "files": files}
    path = GOLDEN / "MANIFEST.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: record it with MELODIA_GOLDEN=write")
    m = json.loads(path.read_text())
    if m["cpu_capability"] != _capability():
        pytest.skip(f"goldens were recorded on a {m['cpu_capability']} CPU, this one is {_capability()}: "
                    "float kernels differ, so bytes are not comparable")
    return m


def _check(manifest: dict, name: str, data: bytes) -> None:
    """Compare ``data`` with the golden ``name`` (or record it)."""
    if WRITE:
        (GOLDEN / name).write_bytes(data)
        manifest["files"][name] = _sha(data)
        return
    want = manifest["files"].get(name)
    assert want is not None, f"no golden for {name}"
    assert _sha(data) == want, f"{name} differs from tests/data/golden/{name}"


@pytest.fixture(scope="module", autouse=True)
def _save_manifest(manifest):
    yield
    if WRITE:
        (GOLDEN / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _make_clip(tmp: Path) -> None:
    from melodia.corpus import build_corpus, load_manifest

    if CLIP.is_file():
        return
    src = tmp / "src"
    shutil.copytree(POP909 / "001", src / "001")
    build_corpus([str(src)], tmp / "C", workers=1, progress=False)
    row = load_manifest(tmp / "C")[0]
    from melodia.evaluate import excerpt
    from melodia.midifile import load_score

    score = excerpt(load_score(tmp / "C" / row["file"]), 0, 8)
    score.dump_midi(str(CLIP))


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_output_is_byte_identical(case, manifest, tmp_path):
    from melodia.cli import main

    if WRITE:
        _make_clip(tmp_path)
    _check(manifest, "clip.mid", CLIP.read_bytes())
    out = tmp_path / "out"
    rc = main(CLI_CASES[case] + ["--out", str(out), "--name", case, "--threads", "1"])
    assert rc == 0
    _check(manifest, f"{case}.mid", (out / f"{case}.mid").read_bytes())


def test_server_generate_json_is_byte_identical(manifest):
    import urllib.request

    from melodia import Composer

    with running_server(Composer.load(device="cpu")) as srv:
        req = urllib.request.Request(srv.url + "/generate", data=json.dumps(SERVER_BODY).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            body = json.loads(r.read())
    body.pop("elapsed_s")
    _check(manifest, "server-generate.json", json.dumps(body, sort_keys=True).encode())


def test_corpus_tokens_are_byte_identical(manifest, tmp_path):
    """Three POP909 songs through the corpus reader (bar lines, chords) and the shipped tokenizer."""
    import numpy as np

    from melodia.api import DEFAULT_MODEL_DIR, Piece
    from melodia.corpus import build_corpus, load_manifest
    from melodia.evaluate import metre_harmony
    from melodia.midifile import load_score
    from melodia.tokenizer import MelodiaTokenizer

    src = tmp_path / "src"
    for song in ("001", "002", "003"):
        shutil.copytree(POP909 / song, src / song)
    build_corpus([str(src)], tmp_path / "C", workers=1, progress=False)
    tok = MelodiaTokenizer.load(DEFAULT_MODEL_DIR / "tokenizer.json")
    rows = sorted(load_manifest(tmp_path / "C"), key=lambda r: r["path"])
    assert len(rows) == 3
    for i, row in enumerate(rows):
        score = load_score(tmp_path / "C" / row["file"])
        _check(manifest, f"corpus-{i}.mid", score.dumps_midi())
        ids = tok.encode_piece(score, mood=row.get("mood") or "any", key=row.get("key"))
        _check(manifest, f"corpus-{i}.tokens", np.asarray(ids, dtype=np.uint16).tobytes())
        piece = Piece(score)
        figures = {"metre_harmony": metre_harmony(score), "bars": piece.bars,
                   "chords": [c.to_dict() for c in piece.chords]}
        _check(manifest, f"corpus-{i}.figures.json", json.dumps(figures, sort_keys=True).encode())
