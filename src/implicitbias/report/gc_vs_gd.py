"""The G&C vs GD report section: generalisation loss of Guess & Check, gradient descent and chance
against width and against depth, per seed and as median with interquartile range over seeds (the
authors' ``common/plotting.py`` draws medians with IQR bars)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..experiments.gc_vs_gd import NAME, PRESETS
from .common import (
    NOT_JUDGED,
    Summary,
    figure_link,
    fmt,
    g3,
    latest_runs,
    listing,
    preset_overrides,
    pyplot,
    save_figure,
    tally,
)


def _family(preset: str) -> str:
    """``width``, ``depth-tanh``, ...: the preset's name before its last ``/`` (its sweep)."""
    return preset.split("[", 1)[0].rsplit("/", 1)[0] if "/" in preset else preset


def _axis(family: str) -> str:
    return "depth" if family.startswith("depth") else "width"


def rows(runs) -> list[dict]:
    """One JSON-able row per stored config (its latest run): the sweep point, G&C / GD / chance (means
    over seeds, G&C over seeds with at least one accepted sample) and every per-seed value."""
    out = []
    for r in latest_runs(runs):
        m, c = r.metrics, r.config
        preset = r.preset or "custom"
        overrides = preset_overrides(r, PRESETS)
        out.append({
            "experiment": NAME, "preset": preset, "sweep": _family(preset),
            "overrides": {k: v for k, v in overrides.items() if k not in ("width", "depth")},
            "width": m["width"], "depth": m["depth"], "activation": c["activation"], "rank": c["rank"],
            "n_measurements": c["n_measurements"], "prior": c["prior"], "normalize": c["normalize"],
            "eps_train": m["eps_train"], "samples": m["samples"], "seeds": m["seeds"],
            "gc_error": m["gc_error"], "gd_error": m["gd_error"], "chance": m["chance"],
            "accepted": m["accepted"], "gc_seeds_with_accepts": m["gc_seeds_with_accepts"],
            "gc_error_per_seed": m["gc_error_per_seed"], "gd_error_per_seed": m["gd_error_per_seed"],
            "chance_per_seed": m["chance_per_seed"], "gd_train_loss_per_seed": m["gd_train_loss_per_seed"],
            "gd_diverged": m["gd_diverged"], "gc_min_train_loss": m["gc_min_train_loss"],
            "gd_optimizer": m["gd_optimizer"], "gd_lr": c["gd_lr"], "gd_epochs": c["gd_epochs"],
            "gd_init_scale": c["gd_init_scale"],
            "gc_samples_per_second": m["gc_samples_per_second"], "wall_seconds": r.meta.get("wall_seconds"),
        })
    out.sort(key=lambda row: (row["sweep"], bool(row["overrides"]), repr(sorted(row["overrides"].items())),
                              row[_axis(row["sweep"])]))
    return out


def _groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows of one sweep with the same overrides, keyed by a label (``width``, ``width eps_train=0.04``)."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        label = r["sweep"] + "".join(f" {k}={v}" for k, v in sorted(r["overrides"].items()))
        out.setdefault(label, []).append(r)
    return out


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)


def _finite(xs) -> np.ndarray:
    a = np.array([np.nan if x is None else x for x in xs], float)
    return a[np.isfinite(a)]


def _median_iqr(xs) -> tuple[float, float, float]:
    a = _finite(xs)
    if not a.size:
        return np.nan, np.nan, np.nan
    return tuple(float(v) for v in np.percentile(a, [50, 25, 75]))  # type: ignore[return-value]


def figures(runs, rows: list[dict], fig_dir: Path) -> list[Path]:
    """One figure per sweep: generalisation loss against width or depth, G&C, GD and chance as
    median with IQR bars over seeds and every seed's value as a dot; linear scale on the left (the
    authors' plots), log scale on the right (GD's losses are orders of magnitude below)."""
    paths = []
    for label, group in _groups(rows).items():
        axis = _axis(group[0]["sweep"])
        x = np.array([r[axis] for r in group], float)
        fig, axes = pyplot().subplots(1, 2, figsize=(12, 4))
        for ax, scale in zip(axes, ("linear", "log")):
            for key, name, style in (("gc_error_per_seed", "G&C", "o-"), ("gd_error_per_seed", "GD", "s--"),
                                     ("chance_per_seed", "chance (prior)", "^:")):
                stats = np.array([_median_iqr(r[key]) for r in group])
                ax.errorbar(x, stats[:, 0], yerr=[stats[:, 0] - stats[:, 1], stats[:, 2] - stats[:, 0]], fmt=style,
                            capsize=3, label=name)
                color = ax.lines[-1].get_color()
                for xi, r in zip(x, group):
                    vals = _finite(r[key])
                    ax.scatter(np.full(vals.size, xi), vals, s=8, alpha=0.35, color=color)
            ax.set_yscale(scale)
            if axis == "width":
                ax.set_xscale("log", base=2)
            ax.set_xticks(x, [str(int(v)) for v in x])
            ax.set_xlabel(axis)
            ax.set_ylabel("generalisation loss")
            ax.grid(alpha=0.3, which="both")
        axes[0].legend(fontsize=8, loc="center right")
        opt = "GroupRMSprop" if group[0]["gd_optimizer"] == "group_rmsprop" else "plain GD"
        fig.suptitle(f"{label}: {group[0]['activation']}, rank {group[0]['rank']}, eps_train {group[0]['eps_train']}, "
                     f"{group[0]['samples']:,} G&C samples/seed, GD = {opt}; median and IQR over seeds, dots: seeds",
                     fontsize=9)
        fig.tight_layout()
        paths.append(save_figure(fig, Path(fig_dir) / f"gen_vs_{axis}_{_slug(label)}.png"))
    return paths


def _seeds_text(xs) -> str:
    return ", ".join("-" if x is None else f"{x:.3g}" for x in xs)


def markdown(rows: list[dict], out_dir: Path) -> str:
    """Per sweep: a table (G&C, GD, chance: mean over seeds and median; accepted samples per seed)
    and the figure."""
    out = []
    fig_dir = Path(out_dir) / "figures" / NAME
    for label, group in _groups(rows).items():
        axis = _axis(group[0]["sweep"])
        r0 = group[0]
        out.append(f"### {label}\n")
        out.append(f"{r0['activation']}, rank {r0['rank']}, {r0['n_measurements']} measurements, prior {r0['prior']}"
                   f"{' (normalised)' if r0['normalize'] else ''}, eps_train {r0['eps_train']}, "
                   f"{r0['samples']:,} G&C samples per seed; GD: {r0['gd_optimizer']}, lr {r0['gd_lr']}, "
                   f"{r0['gd_epochs']:,} epochs.\n")
        out.append(f"| {axis} | G&C mean | G&C median | GD mean | GD median | chance | accepted per seed "
                   "| G&C per seed | GD per seed |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in group:
            gc_med, gd_med = _median_iqr(r["gc_error_per_seed"])[0], _median_iqr(r["gd_error_per_seed"])[0]
            out.append(
                f"| {r[axis]} | {fmt(r['gc_error'])} | {fmt(None if np.isnan(gc_med) else gc_med)} | "
                f"{fmt(r['gd_error'])} | {fmt(None if np.isnan(gd_med) else gd_med)} | {fmt(r['chance'])} | "
                f"{', '.join(str(a) for a in r['accepted'])} | {_seeds_text(r['gc_error_per_seed'])} | "
                f"{_seeds_text(r['gd_error_per_seed'])} |"
            )
        out.append("")
        link = figure_link(Path(out_dir), fig_dir / f"gen_vs_{axis}_{_slug(label)}.png", f"{label}: loss vs {axis}")
        if link:
            out.append(link + "\n")
    out.append("G&C: mean generalisation loss of the accepted samples per seed, then over seeds with at least one "
               "accepted sample ('-': none accepted). Chance: mean over all prior samples. Generalisation loss: "
               "mean squared error on an orthonormal basis of the measurements' complement.\n")
    return "\n".join(out)


CLAIM = "GD generalizes at every width; Guess & Check degrades to chance with width, improves with depth"


def _ends(lo: dict, hi: dict, key: str) -> str:
    """``key`` at a sweep's first and last point (``a → b``), or at its one point."""
    return g3(lo[key]) if lo is hi else f"{g3(lo[key])} → {g3(hi[key])}"


def summary(rows: list[dict]) -> Summary:
    """The summary line, from the section's means over seeds: at every stored point GD's loss below
    G&C's, and per sweep of two or more points G&C at the widest point above G&C at the narrowest
    (depth: at the deepest below the shallowest). The authors plot figures, no numbers: theirs is ``-``."""
    results, ours, trends = [], [], 0
    for group in _groups(rows).values():
        axis = _axis(group[0]["sweep"])
        results += [None if r["gc_error"] is None or r["gd_error"] is None else r["gd_error"] < r["gc_error"]
                    for r in group]
        lo, hi = group[0], group[-1]
        if len(group) > 1:
            trends += 1
            results.append(None if lo["gc_error"] is None or hi["gc_error"] is None else
                           (hi["gc_error"] > lo["gc_error"]) if axis == "width" else (hi["gc_error"] < lo["gc_error"]))
        span = f"{lo[axis]}" if len(group) == 1 else f"{lo[axis]}-{hi[axis]}"
        star = " *" if group[0]["overrides"] else ""
        gc = _ends(lo, hi, "gc_error") if any(r["gc_error"] is not None for r in group) else "no sample accepted"
        ours.append(f"{group[0]['sweep']}{star} ({axis} {span}): G&C {gc}, GD {_ends(lo, hi, 'gd_error')}, "
                    f"chance {_ends(lo, hi, 'chance')}")
    verdict, held, judged = tally(results)
    rule = ("GD below G&C at each point" + (f"; G&C worse at the wider (better at the deeper) end of {trends} "
            "sweep(s)" if trends else "; no sweep of two or more points: the trend is not judged"))
    why = (f"{held} of {judged} orderings hold ({rule})" if verdict != NOT_JUDGED else
           f"G&C accepted no sample at any of the {len(rows)} points: nothing to compare")
    return Summary(CLAIM, "generalisation loss (mean over seeds): " + listing(ours), "-", verdict, why)
