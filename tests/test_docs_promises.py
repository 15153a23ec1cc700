"""What the README and docs/ tell a new user holds: the quick start makes an environment first,
and each default part has one role name everywhere (issue 22: docs/daw.md called program 1 both
"accompaniment" and "counter-melody")."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the shipped model's default parts, in order (its melodia.json "default_programs")
ROLES = ("melody", "counter-melody", "accompaniment")


def test_shipped_default_programs_are_the_three_documented_parts():
    meta = json.loads((ROOT / "melodia" / "weights" / "default" / "melodia.json").read_text())
    assert meta["default_programs"] == [0, 1, 2]


def test_every_program_role_phrase_in_the_docs_agrees():
    pattern = re.compile(r"program\s+([0-2])\s+(melody|counter-melody|accompaniment)")
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for prog, role in pattern.findall(doc.read_text()):
            found.append((doc.name, int(prog), role))
            assert ROLES[int(prog)] == role, f"{doc.name}: program {prog} called {role!r}, not {ROLES[int(prog)]!r}"
    assert found, "no 'program N role' phrase left in the docs: the test would check nothing"


def test_quick_start_makes_an_environment_first():
    """Issue 22: the README gave no venv advice and said "where that CPU wheel is at hand"."""
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("## ", 1)[0]
    lines = [ln for ln in quick.split("```bash", 1)[1].split("```", 1)[0].splitlines() if ln.strip()]
    assert lines[0].startswith("python3 -m venv .venv && . .venv/bin/activate")
    assert lines[1].startswith("pip install torch==2.13.0 .")
    assert "at hand" not in quick and "CPU-only" in quick
