"""Choosing presets: a name or a prefix of names, ``--exact`` for a name that prefixes others, and
configs that overrides make equal run once."""

from dataclasses import replace

import pytest
from typer.testing import CliRunner

from implicitbias.cli import commands as cli
from implicitbias.experiments import defense, table1
from implicitbias.runtime.overrides import distinct_configs, select_presets

BEYOND = [k for k in defense.PRESETS if k == "synthetic/beyond_L6" or k.startswith("synthetic/beyond_L6/")]


def test_a_prefix_selects_every_preset_under_it_and_exact_only_the_one_named():
    assert len(BEYOND) > 1  # the case at hand: a preset whose name prefixes its variants
    assert list(select_presets(defense.PRESETS, ["synthetic/beyond_L6"])) == BEYOND
    assert list(select_presets(defense.PRESETS, ["synthetic/beyond_L6"], exact=True)) == ["synthetic/beyond_L6"]
    both = select_presets(defense.PRESETS, ["synthetic/beyond_L6", "synthetic/beyond_L6/fewer1"], exact=True)
    assert list(both) == ["synthetic/beyond_L6", "synthetic/beyond_L6/fewer1"]
    assert both["synthetic/beyond_L6"] is defense.PRESETS["synthetic/beyond_L6"]


def test_exact_refuses_a_prefix_that_is_no_preset_and_names_what_lies_under_it():
    under = "per_theorem/L7, per_theorem/L7/special, per_theorem/L9, per_theorem/L9/special"
    with pytest.raises(ValueError, match=f"presets under it: {under}; drop --exact"):
        select_presets(table1.PRESETS, ["per_theorem"], table1.NAME, exact=True)
    with pytest.raises(ValueError, match="--exact needs --preset"):
        select_presets(table1.PRESETS, None, exact=True)


def test_configs_made_equal_by_overrides_run_once_as_the_first():
    a = table1.PRESETS["beyond_theorem/L6"]
    configs = {"a": a, "b": replace(a, lr=a.lr * 2), "c": replace(a), "d": replace(a, lr=a.lr * 2)}
    kept, merged = distinct_configs(configs)
    assert list(kept) == ["a", "b"] and merged == [("c", "a"), ("d", "b")]


class _Captured(Exception):
    pass


@pytest.mark.parametrize("extra,want", [
    ([], BEYOND),
    (["--exact"], ["synthetic/beyond_L6"]),
])
def test_cli_runs_what_was_selected(monkeypatch, tmp_path, extra, want):
    seen = {}

    def capture(exp, configs, store, **kwargs):
        seen.update(configs)
        raise _Captured

    monkeypatch.setattr(cli, "run_all", capture)
    res = CliRunner().invoke(cli.app, ["run", "defense", "--preset", "synthetic/beyond_L6", *extra,
                                       "--runs-dir", str(tmp_path)])
    assert isinstance(res.exception, _Captured), res.output
    assert list(seen) == want


def test_cli_warns_when_overrides_merge_presets(monkeypatch, tmp_path):
    seen = {}

    def capture(exp, configs, store, **kwargs):
        seen.update(configs)
        raise _Captured

    monkeypatch.setattr(cli, "run_all", capture)
    # fewer1 differs from its parent in n_special and training_defenses: setting both makes them one
    res = CliRunner().invoke(cli.app, ["run", "defense", "--exact", "--preset", "synthetic/beyond_L6", "--preset",
                                       "synthetic/beyond_L6/fewer1", "--set", "n_special=1", "--set",
                                       "training_defenses=[]", "--runs-dir", str(tmp_path)])
    assert isinstance(res.exception, _Captured), res.output
    assert list(seen) == ["synthetic/beyond_L6"] and seen["synthetic/beyond_L6"].n_special == 1
    text = " ".join((res.output + (res.stderr or "")).split())
    assert "synthetic/beyond_L6/fewer1 is the same config as synthetic/beyond_L6 under these overrides" in text
