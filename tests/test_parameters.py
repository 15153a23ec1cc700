"""Parameters declared once: :class:`GenerationConfig`'s fields are the one list of what a request
can say. Every field the API takes (``Composer.generate``, ``continue_from``, ``infill``) must be
reachable from the CLI and from the server, unless the CLI's or the server's ``LEFT_OUT`` names
it with a reason; and what they restate (defaults, limits) must agree with the config.
"""
from __future__ import annotations

import argparse
import inspect
from dataclasses import fields

import pytest

from melodia import cli, request
from melodia.api import Composer
from melodia.errors import BadInputError
from melodia.generate import DYNAMICS, MAX_BARS, MAX_N, GenerationConfig

CONFIG = {f.name: f for f in fields(GenerationConfig)}


def _api_fields(*methods: str) -> set[str]:
    """The GenerationConfig fields the given Composer methods take."""
    params = set()
    for m in methods:
        params |= set(inspect.signature(getattr(Composer, m)).parameters)
    return params & set(CONFIG)


def _flags(command: str) -> dict[str, argparse.Action]:
    parser = cli.build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices[command]._actions}


@pytest.mark.parametrize("command, methods", [("generate", ("generate", "continue_from")), ("infill", ("infill",))])
def test_every_api_field_has_a_cli_flag(command, methods):
    flags = _flags(command)
    left_out = {**cli.LEFT_OUT, **(cli.INFILL_LEFT_OUT if command == "infill" else {})}
    missing = sorted(f for f in _api_fields(*methods) if cli.FLAG_OF.get(f, f) not in flags and f not in left_out)
    assert not missing, f"`melodia {command}` has no flag for {missing}: add one, or list it in cli.LEFT_OUT with a reason"


def test_every_api_field_is_a_server_field():
    reachable = _api_fields("generate", "continue_from", "infill")
    missing = sorted(f for f in reachable if f not in request.FIELDS and f not in request.LEFT_OUT)
    assert not missing, f"the server takes no {missing}: add it to request.FIELDS, or to request.LEFT_OUT with a reason"


def test_left_out_lists_are_true_and_give_reasons():
    flags = {**_flags("generate"), **_flags("infill")}
    for name, why in cli.LEFT_OUT.items():
        assert name in CONFIG and why.strip(), name
        assert cli.FLAG_OF.get(name, name) not in flags, f"{name} has a flag now: drop it from cli.LEFT_OUT"
    infill = _flags("infill")
    for name, why in cli.INFILL_LEFT_OUT.items():
        assert name in CONFIG and why.strip() and name not in infill, name
    for name, why in request.LEFT_OUT.items():
        assert name in CONFIG and why.strip() and name not in request.FIELDS, name
    # every server field is a GenerationConfig field or one of Composer's own
    composer = set().union(*(inspect.signature(getattr(Composer, m)).parameters
                             for m in ("generate", "continue_from", "infill")))
    assert set(request.FIELDS) <= set(CONFIG) | composer


def test_server_limits_and_defaults_are_the_configs():
    assert request.FIELDS["bars"].hi == MAX_BARS and request.FIELDS["n"].hi == MAX_N
    for name, spec in request.FIELDS.items():
        if name in CONFIG and spec.default is not None:
            assert spec.default == CONFIG[name].default, name
    lo, hi = request.TEMPO_RANGE
    GenerationConfig(tempo=lo).validate()
    GenerationConfig(tempo=hi).validate()
    for tempo in (lo - 0.01, hi + 0.01):
        with pytest.raises(BadInputError):
            GenerationConfig(tempo=tempo).validate()
    sig = inspect.signature(Composer.continue_from).parameters
    assert request.PROMPT_DEFAULTS == {k: sig[k].default for k in ("bars", "context_bars", "include_prompt")}


@pytest.mark.parametrize("command", ["generate", "infill"])
def test_cli_defaults_and_limits_are_the_configs(command):
    flags = _flags(command)
    for name in ("n", "temperature", "guidance", "leading_tone", "bars"):
        if name == "bars" and command == "infill":
            continue  # a span, not a count
        assert flags[name].default == CONFIG[name].default, name
    assert flags["chromatic"].default is (not CONFIG["in_key"].default)
    assert f"1-{MAX_N}" in flags["n"].help
    if command == "generate":
        assert f"1-{MAX_BARS}" in flags["bars"].help
    methods = ("continue_from",) if command == "generate" else ("infill",)
    for m in methods:
        sig = inspect.signature(getattr(Composer, m)).parameters
        assert flags["context_bars"].default == sig["context_bars"].default
        assert flags["dynamics"].default == sig["dynamics"].default
    assert tuple(flags["dynamics"].choices) == DYNAMICS
