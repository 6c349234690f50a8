"""The dynamics report section and figures (docs/science.md §3): per-seed summary numbers, and per run four
stacked panels (top ``|a_i|``, effective rank, ``gamma^(0)``, loss and extrapolation error), with
and without special sequences side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..experiments import dynamics
from ..runtime.store import StoredRun
from .common import NOT_JUDGED, Summary, g3, latest_runs, listing, preset_overrides, pyplot, save_figure, tally
from .common import special_partner_key

NAME = dynamics.NAME
TOP_ENTRIES = 7  # entries of |a| drawn in the figures (docs/science.md §3)


def _panels(axes, arrays: dict[str, np.ndarray], title: str) -> None:
    """Draw one run into a column of four axes: top |a_i| (first seed), effective rank, gamma^(0),
    loss and extrapolation error (every seed, log scale)."""
    steps, abs_a = arrays["log_steps"], arrays["log_abs_a"]
    n_seeds = steps.shape[0]
    ok = steps[0] >= 0
    top = np.argsort(-np.abs(arrays["a_final"][0]))[:TOP_ENTRIES]
    for i in top:
        axes[0].plot(steps[0, ok], abs_a[0, ok, i], lw=1.2)
    axes[0].set_title(title, fontsize=9)
    axes[0].set_ylabel(f"top {TOP_ENTRIES} |a_i| (first seed)")
    colors = [f"C{k}" for k in range(n_seeds)]
    for s in range(n_seeds):
        ok = steps[s] >= 0
        axes[1].plot(steps[s, ok], arrays["log_effective_rank"][s, ok], color=colors[s], lw=1)
        axes[2].plot(steps[s, ok], arrays["log_gamma0"][s, ok], color=colors[s], lw=1)
        axes[3].semilogy(steps[s, ok], arrays["log_loss"][s, ok], color=colors[s], lw=1)
        axes[3].semilogy(steps[s, ok], arrays["log_error"][s, ok], color=colors[s], lw=1, ls="--")
    axes[1].set_ylabel("effective rank")
    axes[2].set_ylabel("gamma^(0)")
    axes[3].set_ylabel("loss (—), error (--)")
    axes[3].set_xlabel("iteration (linear to 100, then log)")
    for ax in axes:  # plateaus of 1e5 updates and jumps within 1e3 both stay visible
        ax.set_xscale("symlog", linthresh=100)


def plot_run(arrays: dict[str, np.ndarray], title: str, path: Path) -> Path:
    """One run's four panels, stacked, as a PNG (``path``)."""
    fig, axes = pyplot().subplots(4, 1, figsize=(5, 9), constrained_layout=True)
    _panels(axes, arrays, title)
    return save_figure(fig, path, dpi=80)


def plot_pair(without: dict[str, np.ndarray], with_: dict[str, np.ndarray], title: str, path: Path) -> Path:
    """Without (left) and with (right) special sequences side by side; each row shares its y axis."""
    fig, axes = pyplot().subplots(4, 2, figsize=(10, 9), sharey="row", constrained_layout=True)
    _panels(axes[:, 0], without, f"{title}: without special")
    _panels(axes[:, 1], with_, f"{title}: with special")
    return save_figure(fig, path, dpi=80)


def _latest(runs) -> dict[str, StoredRun]:
    """The latest stored run per preset name; a run with overrides is keyed ``<preset>@<hash>``."""
    return {r.preset if r.preset in dynamics.PRESETS and not preset_overrides(r, dynamics.PRESETS)
            else f"{r.preset}@{r.path.name}": r for r in latest_runs(runs)}


def figures(runs, rows, out_dir: Path) -> list[Path]:
    """Every run's figure (``<preset>.png``) and a side-by-side figure per preset with both cells
    stored (``<preset>__pair.png``), under ``out_dir``. Returns the paths written."""
    latest = _latest(runs)
    written = []
    for key, r in latest.items():
        written.append(plot_run(r.arrays(), key, out_dir / f"{_file(key)}.png"))
    for key, r in latest.items():
        partner = latest.get(f"{key}/special")
        if partner is not None:
            written.append(plot_pair(r.arrays(), partner.arrays(), key, out_dir / f"{_file(key)}__pair.png"))
    return written


def _file(key: str) -> str:
    return key.replace("/", "_").replace("@", "_")



def rows(runs) -> list[dict]:
    rows = []
    for key, r in _latest(runs).items():
        m = r.metrics
        rows.append({
            "experiment": NAME, "preset": key, "special": r.config["special"],
            "preset_name": r.preset or "custom", "overrides": preset_overrides(r, dynamics.PRESETS),
            "teacher_dim": len(r.config.get("teacher_a") or ()) or r.config.get("teacher_dim", 1),
            "L": r.config["L"], "d": r.config["d"], "seeds": m["seeds"],
            "final_effective_rank": m["final_effective_rank"], "n_above_0.1": m["n_above_0.1"],
            "n_above_0.5": m["n_above_0.5"], "jump_step": m["jump_step"], "max_abs_gamma0": m["max_abs_gamma0"],
            "top_final": m["top_final"], "half_crossing": m["half_crossing"], "reached_eps": m["reached_eps"],
            "error": m["error"], "path": str(r.path),
        })
    order = {name: i for i, name in enumerate(dynamics.PRESETS)}
    rows.sort(key=lambda row: (order.get(row["preset"], len(order)), row["preset"]))
    return rows


def markdown(rows: list[dict], out_dir: Path) -> str:
    """Summary numbers per preset and seed, and the side-by-side figures (written by :func:`figures`
    under ``out_dir/figures/dynamics``)."""
    fig_dir = Path(out_dir) / "figures" / NAME
    lst = lambda xs, f="{}": ", ".join("-" if x is None else f.format(x) for x in xs)  # None: a lost (NaN) value
    out = [
        "Per seed: final effective rank; entries of |a| above 0.1 / 0.5; update of the jump (largest entry "
        "reaches 0.5); max |gamma^(0)|; top entries at the end; update at which each reached half its final value.\n",
        "| preset | eff. rank | > 0.1 | > 0.5 | jump | max abs gamma0 | top entries (first seed) "
        "| half-crossings (first seed) | fit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fit = r["reached_eps"]
        out.append(
            f"| {r['preset']} | {lst(r['final_effective_rank'], '{:.2f}')} | {lst(r['n_above_0.1'])} | "
            f"{lst(r['n_above_0.5'])} | "
            f"{lst(r['jump_step'])} | {lst(r['max_abs_gamma0'], '{:.2g}')} | {lst(r['top_final'][0], '{:.3f}')} | "
            f"{lst(r['half_crossing'][0])} | {'yes' if all(fit) else f'{sum(fit)}/{len(fit)}'} |"
        )
    out.append("")
    for r in rows:
        pair = fig_dir / f"{_file(r['preset'])}__pair.png"
        if not r["special"] and pair.exists():
            out.append(f"### {r['preset']}\n")
            out.append(f"![{r['preset']}: without vs with special sequences]({pair.relative_to(out_dir).as_posix()})\n")
    return "\n".join(out)


CLAIM = "GD learns greedily at low rank; special sequences break it (effective rank ends higher with them)"


def _partner_key(row) -> tuple[str, str]:
    return special_partner_key(row.get("preset_name", row["preset"].split("@", 1)[0]),
                               {k: v for k, v in (row.get("overrides") or {}).items() if k != "special"})


def _mean_rank(row) -> float | None:
    ranks = [x for x in row["final_effective_rank"] if x is not None]
    return float(np.mean(ranks)) if ranks else None


def summary(rows: list[dict]) -> Summary:
    """The summary line: per pair of runs without and with special sequences (same preset cell,
    same overrides), whether the mean final effective rank is higher with them (the table's
    'eff. rank' column). The paper shows figures, no numbers: theirs is ``-``."""
    partners = {_partner_key(r): r for r in rows if r["special"]}
    ours, results, unpaired = [], [], 0
    for r in rows:
        if r["special"]:
            continue
        p = partners.get(_partner_key(r))
        if p is None:
            unpaired += 1
            continue
        without, with_ = _mean_rank(r), _mean_rank(p)
        results.append(None if without is None or with_ is None else with_ > without)
        star = " *" if r.get("overrides") else ""
        ours.append(f"{r.get('preset_name', r['preset'])}{star} {g3(without)} → {g3(with_)}")
    paired = {id(partners.get(_partner_key(r))) for r in rows if not r["special"]}
    unpaired += sum(1 for r in rows if r["special"] and id(r) not in paired)
    verdict, held, judged = tally(results)
    why = (f"effective rank higher with special sequences in {held} of {judged} pairs (the table's 'eff. rank', "
           "mean over seeds)" if verdict != NOT_JUDGED else "needs a run without and one with special sequences")
    if unpaired:
        why += f"; {unpaired} runs stored without their partner"
    return Summary(CLAIM, ("effective rank without → with: " + listing(ours)) if ours else
                   "effective rank: " + listing([f"{r['preset']} {g3(_mean_rank(r))}" for r in rows]),
                   "-", verdict, why)
