"""Every number the README quotes comes from a results file (``README.claims.toml``, beside the README).

Each claim names the text the README shows, a machine-made file under ``results/`` and an expression
that reads the value from it; the value, formatted as the claim says, must be that text and appear in
the README. Between ``<!-- claims -->`` and ``<!-- /claims -->`` every number that is a measurement
(one with a decimal point or an exponent, a ratio ``12x``, a percentage, a count ``15/16``, a range
``0.32-0.66``) must be some claim's text, so a number typed by hand fails here. Integers and integer
ranges name a setup (``L=6``, ``4 seeds``, ``seeds 16-31``) and are left alone, as are the few setup
numbers the claims file lists under ``setup``."""

from __future__ import annotations

import json
import math
import re
import tomllib
from functools import cache
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
_FILE = tomllib.loads((ROOT / "README.claims.toml").read_text())
CLAIMS = _FILE["claim"]
SETUP = _FILE.get("setup", [])  # numbers of a setup written like measurements (a budget 8/255), each explained

# a measurement: a decimal or exponent number, a percentage or ratio, a count a/b, a range a-b of them
_NUM = r"\d+(?:\.\d+)?(?:e[-+]?\d+)?"
MEASUREMENT = re.compile(
    rf"(?<![\w.§#/-])(?:[-+±]\s?)?(?:{_NUM}/{_NUM}|{_NUM}(?:-{_NUM})?(?:x|%)?)(?![\w/]|\.\d)"
)


@cache
def load(name: str):
    return json.loads((ROOT / name).read_text())


def _row(data, preset: str, **match):
    rows = [r for r in data["rows"] if r.get("preset") == preset and all(r.get(k) == v for k, v in match.items())]
    assert len(rows) == 1, (preset, match, len(rows))
    return rows[0]


def value_of(claim: dict):
    """The claim's expression evaluated on its file: ``d`` is the file's JSON, ``row(preset, **k)``
    its one report row of that preset (and fields), ``rows`` all of them."""
    d = load(claim["file"])
    env = {"d": d, "rows": d.get("rows", []) if isinstance(d, dict) else d, "np": np, "math": math,
           "row": lambda preset, **k: _row(d, preset, **k), "min": min, "max": max, "len": len, "sum": sum,
           "abs": abs, "all": all, "any": any, "sorted": sorted, "round": round, "tuple": tuple, "list": list}
    return eval(claim["value"], {"__builtins__": {}, **env})  # noqa: S307 - our own file, checked in


def formatted(value, spec: str, sep: str = "-") -> str:
    """``value`` as the README writes it: a format spec (``.3g``, ``.1f``...), exponents without
    padding (``1.271e-3``); a pair or range ``(lo, hi)`` as ``lo<sep>hi`` (a range ``lo-hi`` by
    default, ``" / "`` for a without / with pair); ``count`` as ``a/b``; ``s`` for text."""
    if spec == "count":
        a, b = value
        return f"{a}/{b}"
    if isinstance(value, (tuple, list)):
        return sep.join(formatted(v, spec) for v in value)
    prefix, _, spec = spec.rpartition("|")  # "x|.1f": a suffix after the number
    text = re.sub(r"e([-+])0*(\d)", lambda m: f"e{'-' if m.group(1) == '-' else ''}{m.group(2)}",
                  format(value, spec))
    return text + prefix


def _within(number: str, text: str) -> bool:
    """``number`` occurs in a claim's ``text`` as a whole number (``0.2`` is not in ``0.218``)."""
    return re.search(rf"(?<![\d.]){re.escape(number)}(?![\d]|\.\d)", text) is not None


def _claims_regions(text: str) -> list[str]:
    return re.findall(r"<!-- claims -->(.*?)<!-- /claims -->", text, flags=re.S)


def _measurements(region: str) -> list[str]:
    region = re.sub(r"`[^`]*`", " ", region)  # commands and names in code spans
    region = re.sub(r"\]\([^)]*\)", "]", region)  # link targets
    found = [m.group(0).lstrip("+-± ").strip() for m in MEASUREMENT.finditer(region)]
    setup = set(SETUP)
    return [m for m in found if not re.fullmatch(r"\d+(-\d+)?", m) and m not in setup]


@pytest.mark.parametrize("claim", CLAIMS, ids=[c["text"] for c in CLAIMS])
def test_each_claim_is_its_results_file_value(claim):
    got = formatted(value_of(claim), claim["format"], claim.get("sep", "-"))
    assert got == claim["text"], f"{claim['file']}: {claim['value']} gives {got}, the README says {claim['text']}"
    assert claim["text"] in README, f"the README no longer shows {claim['text']!r}: remove the claim or fix the text"


def test_every_measurement_in_the_readme_is_a_claim():
    regions = _claims_regions(README)
    assert regions, "README.md has no <!-- claims --> region"
    texts = [c["text"] for c in CLAIMS]
    loose = [m for region in regions for m in _measurements(region) if not any(_within(m, t) for t in texts)]
    assert not loose, f"numbers in the README that no claim backs: {loose}"


def test_the_coverage_check_catches_a_number_typed_by_hand():
    assert _measurements("error 0.218 and 75x in 15/16 seeds, AUROC 0.32-0.66, `--set lr=0.5`, L=6") == [
        "0.218", "75x", "15/16", "0.32-0.66"]
    assert formatted(0.0012712, ".4g") == "0.001271" and formatted(1.2712e-3, ".4e") == "1.2712e-3"
    assert formatted((0.3171, 0.6882), ".3f") == "0.317-0.688" and formatted((15, 16), "count") == "15/16"
    assert formatted(75.47, "x|.0f") == "75x" and formatted((0.194, 16.61), ".4g", " / ") == "0.194 / 16.61"
    assert _within("0.218", "0.218 / 16.47") and not _within("0.2", "0.218")
