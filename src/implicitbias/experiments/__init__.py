"""The experiment registry. Adding an experiment = a module here + one line below; no CLI change."""

from __future__ import annotations

from types import ModuleType

from . import chains, dynamics, realworld, table1

EXPERIMENTS: dict[str, ModuleType] = {table1.NAME: table1, dynamics.NAME: dynamics, chains.NAME: chains,
                                 realworld.NAME: realworld}


def get(name: str) -> ModuleType:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def select_presets(experiment: ModuleType, patterns: list[str] | None) -> dict[str, object]:
    """Presets named exactly by a pattern, or lying under it (``per_theorem`` selects all of its cells)."""
    presets = experiment.PRESETS
    if not patterns:
        return dict(presets)
    out = {}
    for pat in patterns:
        pat = pat.strip().rstrip("/")
        hits = {k: v for k, v in presets.items() if k == pat or k.startswith(pat + "/")}
        if not hits:
            raise ValueError(f"unknown preset {pat!r} for {experiment.NAME}; known: {', '.join(presets)}")
        out.update(hits)
    return out
