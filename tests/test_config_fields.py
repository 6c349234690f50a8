"""Configs explain themselves: every field of every experiment's Config carries a one-line
description, which ``implicitbias run EXPERIMENT --help`` prints; choice fields are ``Literal``-typed
and checked by one generic validator (``implicitbias.core.validate.require_choices``)."""

import dataclasses
import typing
from dataclasses import dataclass
from typing import Literal

import pytest
from typer.testing import CliRunner

from implicitbias import cli
from implicitbias.core.validate import described, field_help, require_choices
from implicitbias.experiments import EXPERIMENTS
from implicitbias.record import config_hash

runner = CliRunner()


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_config_field_has_a_one_line_description(name):
    helps = field_help(EXPERIMENTS[name].Config)
    missing = [f for f, h in helps.items() if not h.strip()]
    assert not missing, f"{name}: fields without a description: {missing}"
    assert all("\n" not in h for h in helps.values())


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_preset_passes_the_choice_check(name):
    for cfg in EXPERIMENTS[name].PRESETS.values():
        require_choices(cfg)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_help_prints_each_description_under_its_field(name):
    exp = EXPERIMENTS[name]
    lines = runner.invoke(cli.app, ["run", name, "--help"]).output.splitlines()
    for f, h in field_help(exp.Config).items():
        # the field's row (indented two spaces; its description is indented deeper)
        i = next(i for i, line in enumerate(lines) if line.split()[:1] == [f] and not line.startswith("   "))
        # Rich may wrap a long line: the description's first words are on the next line
        assert lines[i + 1].split()[:3] == h.split()[:3], (f, lines[i + 1])


@dataclass(frozen=True)
class _Toy:
    mode: Literal["a", "b"] = described("a", "which way")
    k: Literal[1, 2] = described(1, "how many")
    x: float = described(0.5, "a number")

    def __post_init__(self):
        require_choices(self)


def test_the_choice_check_names_the_field_and_the_choices():
    _Toy(mode="b", k=2)
    with pytest.raises(ValueError, match=r"mode must be one of \('a', 'b'\), got 'c'"):
        _Toy(mode="c")
    with pytest.raises(ValueError, match=r"k must be one of \(1, 2\), got True"):
        _Toy(k=True)  # equal to 1, but not the choice 1


def test_descriptions_are_not_part_of_the_hash():
    @dataclass(frozen=True)
    class Plain:
        mode: str = "a"
        k: int = 1
        x: float = 0.5

    assert config_hash("toy", _Toy(), "v") == config_hash("toy", Plain(), "v")
    assert typing.get_type_hints(_Toy)["mode"] == Literal["a", "b"]
    assert dataclasses.fields(_Toy)[0].metadata["help"] == "which way"
