"""Reports over the store: rows from each experiment's ``report_rows(runs)``, printed as Markdown
or JSON. Generic: it never names an experiment."""

from __future__ import annotations

import math

from . import experiments
from .store import Store


def collect(store: Store) -> list[dict]:
    """All report rows of every registered experiment with stored runs."""
    rows: list[dict] = []
    for name, exp in experiments.EXPERIMENTS.items():
        runs = list(store.runs(name))
        if runs and hasattr(exp, "report_rows"):
            rows.extend(exp.report_rows(runs))
    return rows


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.3e}"


def markdown(rows: list[dict]) -> str:
    """A Markdown table per experiment: mean ± std, per-seed values, the paper's numbers."""
    if not rows:
        return "No stored runs yet: try `implicitbias run table1`.\n"
    out = []
    for exp in dict.fromkeys(r["experiment"] for r in rows):
        out.append(f"## {exp}\n")
        out.append("| preset | special | error mean ± std | per seed | paper | authors' re-run | with/without | ordering | all fit |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in (r for r in rows if r["experiment"] == exp):
            name = r["preset"] + ("".join(f" {k}={v}" for k, v in r["overrides"].items()) if r["overrides"] else "")
            fit = r.get("reached_eps")
            fit_s = "-" if fit is None else ("yes" if all(fit) else f"{sum(fit)}/{len(fit)}")
            ratio = r.get("ratio_with_over_without")
            order = r.get("ordering_holds")
            out.append(
                f"| {name} | {'yes' if r['special'] else 'no'} | {_fmt(r['mean'])} ± {_fmt(r['std'])} | "
                f"{', '.join(_fmt(v) for v in r['per_seed'])} | {_fmt(r.get('paper'))} | {_fmt(r.get('authors_rerun'))} | "
                f"{'-' if ratio is None else f'{ratio:.1f}x'} | {'-' if order is None else ('holds' if order else 'FAILS')} | {fit_s} |")
        out.append("")
    out.append("'paper': the paper's headline number for the setting (mean over 4 seeds); 'authors' re-run': the "
               "authors' procedure re-run per size (SPEC §2a). 'all fit': seeds that reached the train-loss threshold "
               "(per-Theorem: solver reached t_final).\n")
    return "\n".join(out)
