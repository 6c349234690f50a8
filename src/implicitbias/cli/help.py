"""Help that lists what there is to choose from, generic over the experiment registry.

``implicitbias --help`` ends with the experiments (:func:`overview`); ``implicitbias run
EXPERIMENT --help`` adds the experiment's presets and its ``Config`` fields with their types and
defaults (:func:`experiment_help`), read from ``PRESETS`` and the dataclass: a new experiment shows
up here without any change to the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import typing

from rich.markup import escape
from typer.core import TyperCommand

from .. import experiments
from ..core.validate import field_help

_ARGS = "implicitbias.run.args"


def summary(exp) -> str:
    """The first sentence of an experiment module's docstring (one line)."""
    doc = (getattr(exp, "__doc__", None) or "").strip()
    para = " ".join(doc.split("\n\n", 1)[0].split())
    cut = para.find(". ")
    return para if cut < 0 else para[: cut + 1]


def overview() -> str:
    """The experiments, one line each (the epilog of ``implicitbias --help``; Rich markup)."""
    lines = ["[b]Experiments[/b] (implicitbias run EXPERIMENT --help lists its presets and config fields):"]
    for name, exp in experiments.EXPERIMENTS.items():
        lines.append(escape(f"• {name} ({len(exp.PRESETS)} presets): {summary(exp)}"))
    return "\n".join(lines)


def type_name(typ) -> str:
    """A field type as a user types its value: ``int``, ``float``, ``a|b`` (a Literal), ``list of int``."""
    origin = typing.get_origin(typ)
    if origin is typing.Literal:
        return "|".join(map(str, typing.get_args(typ)))
    if origin is tuple:
        args = [a for a in typing.get_args(typ) if a is not Ellipsis]
        inner = type_name(args[0]) if args else "values"
        return f"list of {inner.replace('list of ', 'lists of ', 1)}"
    return getattr(typ, "__name__", str(typ))


def value_text(value) -> str:
    """A config value as ``--set`` takes it: ``true``, ``0.001``, ``[0,1]``, ``''`` (empty string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float):
        return repr(value) if len(repr(value)) <= 10 else f"{value:.6g}"
    if value == "":
        return "''"
    return str(value)


def _listed(values: list[str], limit: int = 3) -> str:
    return ", ".join(values[:limit]) + (", ..." if len(values) > limit else "")


def fields_table(exp) -> list[tuple[str, str, str, str]]:
    """``(field, type, default, description)`` rows of the experiment's ``Config``: the dataclass default,
    and the other values presets give the field (a field without a default: the presets' values); the
    fields that some preset sets to another value than the default come first, each group in the
    Config's order."""
    hints = typing.get_type_hints(exp.Config)
    described = field_help(exp.Config)
    changed, unchanged = [], []
    for f in dataclasses.fields(exp.Config):
        used = list(dict.fromkeys(value_text(getattr(p, f.name)) for p in exp.PRESETS.values()))
        if f.default is not dataclasses.MISSING:
            default = value_text(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = value_text(f.default_factory())
        else:
            default = None
        if default is None:
            text = used[0] if len(used) == 1 else f"(per preset: {_listed(used)})"
            others = used[1:]
        else:
            others = [v for v in used if v != default]
            text = default + (f" (presets also: {_listed(others)})" if others else "")
        row = (f.name, type_name(hints.get(f.name, f.type)), text, described[f.name])
        (changed if others else unchanged).append(row)
    return changed + unchanged


def experiment_help(exp) -> str:
    """Presets and config fields of one experiment, as plain text."""
    presets = exp.PRESETS
    lines = [f"Experiment {exp.NAME}: {summary(exp)}", ""]
    lines.append(f"Presets ({len(presets)}; --preset NAME or a prefix of names, repeatable; --exact: names only; "
                 "default: all):")
    width = max(map(len, presets), default=0)
    for name, cfg in presets.items():
        seeds = getattr(cfg, "seeds", None)
        extra = f"  seeds {value_text(tuple(seeds))}" if seeds is not None else ""
        lines.append(f"  {name:{width}s}{extra}")
    rows = fields_table(exp)
    lines += ["", "Config fields (--set FIELD=VALUE, --sweep FIELD=V1,V2,...; DEFAULT: the Config's default, and the "
              "values presets set; the fields presets change come first):"]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines.append(f"  {'FIELD':{w0}s}  {'TYPE':{w1}s}  DEFAULT")
    for n, t, d, h in rows:
        lines.append(f"  {n:{w0}s}  {t:{w1}s}  {d}")
        if h:
            lines.append(f"  {'':{w0}s}  {'':{w1}s}    {h}")
    return "\n".join(lines)


class RunCommand(TyperCommand):
    """``run``'s command: its ``--help`` names the experiments and, after ``run EXPERIMENT``, lists
    that experiment's presets and fields (below the usual options)."""

    def parse_args(self, ctx, args):
        ctx.meta[_ARGS] = list(args)  # --help is handled while parsing, before EXPERIMENT is stored
        return super().parse_args(ctx, args)

    def _experiment_name(self, ctx) -> str | None:
        try:
            opts, _, _ = self.make_parser(ctx).parse_args(args=list(ctx.meta.get(_ARGS, [])))
        except Exception:  # a malformed command line: fall back to the general help
            return None
        name = opts.get("experiment")
        return name if isinstance(name, str) else None

    def format_help(self, ctx, formatter) -> None:
        super().format_help(ctx, formatter)  # Rich prints the usual help itself; the text below follows it
        name = self._experiment_name(ctx)
        known = ", ".join(experiments.EXPERIMENTS)
        if name in experiments.EXPERIMENTS:
            text = experiment_help(experiments.EXPERIMENTS[name])
        elif name:
            text = f"unknown experiment {name!r}; known: {known}"
        else:
            text = f"Experiments: {known} (implicitbias run EXPERIMENT --help lists its presets and config fields)"
        formatter.write(text + "\n")
