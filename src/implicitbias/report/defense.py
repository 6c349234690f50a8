"""The defense report section: per stored cell and detector, detection (AUROC, recall at
the true count), the flags, the extrapolation error after sanitising and retraining beside the
clean and poisoned cells, the cost of defending a clean set; the training-time defenses; the
real-world detectors with paired differences (95% t-intervals; p-values Holm-corrected over every
real-world comparison of the section, as the real-world section); a figure of the ROC curves (mean over seeds)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..experiments.defense import NAME, PRESETS
from ..core.stats import holm, t_interval, t_test_pvalue
from .common import (
    NOT_JUDGED,
    Summary,
    figure_link,
    g3,
    latest_runs,
    listing,
    points_ci_holm,
    preset_overrides,
    pyplot,
    save_figure,
    tally,
)

FIGURE = "roc.png"
FPR_GRID = np.linspace(0.0, 1.0, 51)


def _median(v) -> float | None:
    v = [x for x in v if x is not None and math.isfinite(x)]
    return float(np.median(v)) if v else None


def _within(defended, clean, factor: float = 2.0) -> int:
    return int(sum(1 for d, c in zip(defended, clean) if d is not None and c is not None and d <= factor * c))


def _above(a, b) -> int:
    """Seeds where ``a > b`` (seeds with a missing value, e.g. a diverged run, not counted)."""
    return int(sum(1 for x, y in zip(a, b) if x is not None and y is not None and x > y))


def _cost(defended, clean) -> float | None:
    """Mean error of the defended clean set over the mean clean error (finite seeds of both)."""
    pairs = [(d, c) for d, c in zip(defended, clean) if d is not None and c is not None
             and math.isfinite(d) and math.isfinite(c)]
    if not pairs:
        return None
    return float(np.mean([d for d, _ in pairs]) / np.mean([c for _, c in pairs]))


def _nan(fn, values) -> float:
    """``fn`` over the values stored as numbers (a stored NaN comes back as None)."""
    v = np.asarray([np.nan if x is None else x for x in values], float)
    return float(fn(v)) if np.isfinite(v).any() else float("nan")


def mean_roc(fprs, tprs) -> np.ndarray:
    """The per-seed ROC curves averaged vertically on :data:`FPR_GRID` (the upper envelope of each
    step curve at every false-positive rate). ``(51,)``."""
    curves = []
    for f, t in zip(fprs, tprs):
        f, t = np.asarray(f, float), np.asarray(t, float)
        curves.append([float(t[f <= x].max()) if np.any(f <= x) else 0.0 for x in FPR_GRID])
    return np.mean(curves, axis=0) if curves else np.zeros_like(FPR_GRID)


def rows(runs) -> list[dict]:
    """One row per stored cell and detector (and per training-time defense, ``detector`` =
    ``train:<name>``), with per-seed lists and summaries."""
    out = []
    for r in latest_runs(runs):
        m = r.metrics
        preset = r.preset or "custom"
        overrides = preset_overrides(r, PRESETS)
        base = {"experiment": NAME, "preset": preset, "overrides": overrides, "kind": m.get("kind"),
                "cell": m.get("cell"), "seeds": m["seeds"], "run": r.path.name,
                "compute_seconds": m.get("compute_seconds")}
        if m.get("kind") == "realworld":
            out.extend(_realworld_rows(base, m))
            continue
        clean, pois = m["error_clean"], m["error_poisoned"]
        base.update(error_clean=clean, error_poisoned=pois, fits_clean=m["fits_clean"],
                    fits_poisoned=m["fits_poisoned"], n_special=m.get("n_special"), n_rows=m.get("n_rows"))
        for name, d in m["detectors"].items():
            out.append({
                **base, "detector": name, "auroc": d["auroc"], "recall": d["recall"],
                "n_flagged": d["n_flagged"], "n_special_flagged": d["n_special_flagged"],
                "n_flagged_clean": d["n_flagged_clean"], "error_defended": d["error_defended"],
                "fits_defended": d["fits_defended"], "error_clean_defended": d["error_clean_defended"],
                "auroc_min": _nan(np.nanmin, d["auroc"]), "auroc_mean": _nan(np.nanmean, d["auroc"]),
                "recall_mean": _nan(np.nanmean, d["recall"]),
                "seeds_within_2x_clean": _within(d["error_defended"], clean),
                "clean_cost": _cost(d["error_clean_defended"], clean),
                "roc": mean_roc(d["roc_fpr"], d["roc_tpr"]).tolist(),
            })
        for name, d in (m.get("training") or {}).items():
            out.append({
                **base, "detector": f"train:{name}", "auroc": None, "error_defended": d["error_defended"],
                "fits_defended": d["fits_defended"], "error_clean_defended": d["error_clean_defended"],
                "fits_clean_defended": d["fits_clean_defended"],
                "seeds_within_2x_clean": _within(d["error_defended"], clean),
                "clean_cost": _cost(d["error_clean_defended"], clean),
            })
    order = {name: i for i, name in enumerate(PRESETS)}
    out.sort(key=lambda row: (bool(row["overrides"]), order.get(row["preset"], len(order)), row["preset"]))
    apply_holm(out)
    return out


def _realworld_rows(base: dict, m: dict) -> list[dict]:
    out = []
    for name, d in m["detectors"].items():
        row = {**base, "detector": name, "auroc": d["auroc"], "recall": d["recall"], "n_flagged": d["n_flagged"],
               "n_poison_flagged": d["n_poison_flagged"], "n_poisons": m["n_poisons"],
               "auroc_min": _nan(np.nanmin, d["auroc"]), "auroc_mean": _nan(np.nanmean, d["auroc"]),
               "recall_mean": _nan(np.nanmean, d["recall"]),
               "roc": mean_roc(d["roc_fpr"], d["roc_tpr"]).tolist()}
        for k in ("error_clean", "error_poisoned", "error_defended", "error_clean_defended",
                  "target_error_clean", "target_error_poisoned", "target_error_defended"):
            if k in d or k in m:
                row[k] = d.get(k, m.get(k))
        for a, b, label in (("error_defended", "error_poisoned", "defended_minus_poisoned"),
                            ("error_defended", "error_clean", "defended_minus_clean"),
                            ("error_clean_defended", "error_clean", "clean_cost")):
            if a in row and b in row and row[a] is not None:
                diff = np.asarray(row[a], float) - np.asarray(row[b], float)
                row[f"{label}_mean"], row[f"{label}_ci"] = t_interval(diff)
                # nothing flagged in any seed: the defended model is the undefended one, no test to count
                row[f"{label}_p"] = t_test_pvalue(diff) if np.any(diff != 0) else None
        if row.get("defended_minus_poisoned_p", 0) is None:  # nothing removed: defended - clean is the cell's
            row["defended_minus_clean_p"] = None              # poisoned - clean, counted once below
        diff = np.asarray(m["error_poisoned"], float) - np.asarray(m["error_clean"], float)
        row["poisoned_minus_clean_mean"], row["poisoned_minus_clean_ci"] = t_interval(diff)
        row["poisoned_minus_clean_p"] = t_test_pvalue(diff)
        out.append(row)
    return out


# the real-world comparisons of the section; poisoned - clean is one per cell (the first row of each)
HOLM_KEYS = ("defended_minus_poisoned", "defended_minus_clean", "clean_cost")


def apply_holm(rows: list[dict]) -> None:
    """Holm-adjusted p-values (``<key>_p_holm``) over every real-world comparison of the rows, in place:
    per detector :data:`HOLM_KEYS`, per cell poisoned - clean once; ``holm_family``: their number."""
    slots = []
    seen = set()
    for r in rows:
        if r.get("kind") != "realworld":
            continue
        slots += [(r, k) for k in HOLM_KEYS if r.get(f"{k}_p") is not None]
        if r["preset"] not in seen:
            seen.add(r["preset"])
            slots.append((r, "poisoned_minus_clean"))
    adj = holm([r[f"{k}_p"] for r, k in slots])
    for (r, k), a in zip(slots, adj):
        r[f"{k}_p_holm"] = float(a)
    for r in rows:
        if r.get("kind") == "realworld":
            r["holm_family"] = len(slots)
            first = next(x for x in rows if x["preset"] == r["preset"])
            r.setdefault("poisoned_minus_clean_p_holm", first.get("poisoned_minus_clean_p_holm"))


def figures(runs, rows: list[dict], fig_dir: Path) -> list[Path]:
    """ROC curves (mean over seeds) of every detector, one panel per stored cell."""
    cells = list(dict.fromkeys(r["preset"] for r in rows if "roc" in r))
    if not cells:
        return []
    n = len(cells)
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig, axes = pyplot().subplots(nrows, cols, figsize=(4.6 * cols, 4.2 * nrows), squeeze=False)
    for ax, cell in zip(axes.flat, cells):
        for r in rows:
            if r["preset"] == cell and "roc" in r:
                ax.plot(FPR_GRID, r["roc"], label=f"{r['detector']} ({r['auroc_mean']:.2f})", lw=1.2)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls=":")
        ax.set_title(cell, fontsize=9)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.legend(fontsize=6, loc="lower right")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return [save_figure(fig, Path(fig_dir) / FIGURE)]


def markdown(rows: list[dict], out_dir: Path) -> str:
    """Per cell: a table of every detector and training-time defense, then the ROC figure."""
    out = []
    cells = list(dict.fromkeys(r["preset"] for r in rows))
    for cell in cells:
        rs = [r for r in rows if r["preset"] == cell]
        r0 = rs[0]
        label = cell + "".join(f" {k}={v}" for k, v in r0["overrides"].items())
        if r0.get("kind") == "realworld":
            out += _realworld_markdown(label, rs)
            continue
        S = len(r0["seeds"])
        out += [
            f"**{label}** ({S} seeds, {r0['n_special']} special of {r0['n_rows']} rows; median extrapolation error "
            f"clean {g3(_median(r0['error_clean']))}, poisoned {g3(_median(r0['error_poisoned']))}; "
            f"poisoned > clean in {_above(r0['error_poisoned'], r0['error_clean'])}/{S} seeds)",
            "",
            "| detector | AUROC min / mean | recall at true count | flagged (specials) per seed, mean | "
            "median error defended | seeds within 2x clean | clean set: flagged, error cost |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rs:
            if r["auroc"] is None:
                out.append(
                    f"| {r['detector']} | - | - | - | {g3(_median(r['error_defended']))} | "
                    f"{r['seeds_within_2x_clean']}/{S} | -, {g3(r['clean_cost'])}x |"
                )
                continue
            out.append(
                f"| {r['detector']} | {r['auroc_min']:.3f} / {r['auroc_mean']:.3f} | {r['recall_mean']:.2f} | "
                f"{np.mean(r['n_flagged']):.1f} ({np.mean(r['n_special_flagged']):.1f}) | "
                f"{g3(_median(r['error_defended']))} | {r['seeds_within_2x_clean']}/{S} | "
                f"{np.mean(r['n_flagged_clean']):.1f}, {g3(r['clean_cost'])}x |"
            )
        out.append("")
    out.append(
        "AUROC and recall need no threshold (recall: share of the special rows among the top scores, as many "
        "as there are special rows). The defender's own removal never knows that number: share scores "
        "flag above the config's share_threshold (default 0.05; the threshold0.5/ presets: 0.5; real-world "
        "tail scores: tail_threshold, 0.5), activation clustering its smaller cluster if at most 35% of the set, "
        "every other detector "
        "its largest score gap if that gap is at least half the range. 'within 2x clean': seeds whose error "
        "after removal and retraining from the same initialisation is at most twice the clean cell's; 'clean "
        "set ... cost': the detector run on the clean set, its flags removed, mean error over the clean mean "
        "(1x when nothing is flagged). `train:*` rows: training-time defenses on the poisoned (and clean) set."
    )
    out.append("")
    link = figure_link(out_dir, Path(out_dir) / "figures" / NAME / FIGURE, "ROC curves, mean over seeds")
    if link:
        out.append(link)
    return "\n".join(out) + "\n"


def _realworld_markdown(label: str, rs: list[dict]) -> list[str]:
    r0 = rs[0]
    S = len(r0["seeds"])
    out = [
        f"**{label}** (real-world, {S} seeds, {r0['n_poisons']} poisons added beside their clean copies; "
        f"test error clean {100 * np.mean(r0['error_clean']):.2f}%, "
        f"poisoned {100 * np.mean(r0['error_poisoned']):.2f}%, "
        f"poisoned - clean {points_ci_holm(r0, 'poisoned_minus_clean')} pp)",
        "",
        "| detector | AUROC min / mean | recall at true count | flagged (poisons) per seed | "
        "test error defended - poisoned (pp, 95% t, Holm p) | defended - clean | clean-set cost |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rs:
        out.append(
            f"| {r['detector']} | {r['auroc_min']:.3f} / {r['auroc_mean']:.3f} | {r['recall_mean']:.2f} | "
            f"{np.mean(r['n_flagged']):.1f} ({np.mean(r['n_poison_flagged']):.1f}) | "
            f"{points_ci_holm(r, 'defended_minus_poisoned')} | {points_ci_holm(r, 'defended_minus_clean')} | "
            f"{points_ci_holm(r, 'clean_cost')} |"
        )
    out += ["", f"Holm's correction over the {r0.get('holm_family', 0)} real-world comparisons of this section "
            "(per detector its three differences where its flags changed the training set in some seed, per cell "
            "poisoned - clean); `random` scores every row "
            "uniformly at random (the control: AUROC 1/2 in expectation).", ""]
    return out


CLAIM = "Removing the special rows before training restores generalization (beyond the paper: the talk's outlook)"
THEORY_DETECTOR = "nongreedy_share"  # the theory-guided detector the section's default flag rule is for


def summary(rows: list[dict]) -> Summary:
    """The summary line: per seed of every synthetic cell, whether the theory-guided detector's
    removal and retraining ends within 2x of the clean error (the section's 'within 2x clean'
    column). The talk gives no number: theirs is ``-``. Real-world cells are named, not judged."""
    results, ours = [], []
    for r in rows:
        if r.get("kind") == "realworld" or r["detector"] != THEORY_DETECTOR:
            continue
        results += [None if d is None or c is None else d <= 2.0 * c
                    for d, c in zip(r["error_defended"], r["error_clean"])]
        star = " *" if r["overrides"] else ""
        ours.append(f"{r['preset']}{star} AUROC {r['auroc_mean']:.2f}, within 2x clean "
                    f"{r['seeds_within_2x_clean']}/{len(r['seeds'])}")
    text = f"{THEORY_DETECTOR}: " + listing(ours) if ours else ""
    real = list(dict.fromkeys(r["preset"] for r in rows if r.get("kind") == "realworld"))
    if real:
        text += ("; " if text else "") + f"real-world cells, not judged here (see the section): {', '.join(real)}"
    verdict, held, judged = tally(results)
    why = (f"{THEORY_DETECTOR}'s removal ends within 2x of the clean error in {held} of {judged} seeds"
           if verdict != NOT_JUDGED else f"needs a synthetic cell with the {THEORY_DETECTOR} detector")
    return Summary(CLAIM, text or "-", "-", verdict, why)
