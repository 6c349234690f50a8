"""The ``realworld`` experiment: clean-label poisoning of S4D, LRU and Mamba2 sequence classifiers on
real data (docs/science.md §4). Presets and ``run`` only; the protocol, its ``Config`` and units are in
:mod:`implicitbias.tasks.classifier_poisoning`.

Presets ``<s4d|lru|mamba2>/digits/<mean|last>``: the ``Config`` defaults; ``--sweep`` varies the levers
(``scripts/sweep_realworld.py``). Presets ``authors/<model>/<dataset>``: the authors' value for every field
that differs from ours, citing their file in :func:`authors_config` (docs/findings/realworld-authors.md);
``authors-cpu/<model>/<dataset>`` change only ``AUTHORS_CPU`` (width, depth, epochs, restarts). Cost of the
presets and what the sweep found: docs/findings/realworld.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from ..core.precision import in_float64
from ..record import Record
from ..tasks.classifier_poisoning import (
    PIXEL_DATASETS,
    RAW_RANGES,
    VARIANTS,
    Config,
    collect,
    footprint_bytes,
    footprint_terms,
    run_seed,
)

__all__ = ["NAME", "PRESETS", "Config", "VARIANTS", "run", "footprint_bytes", "footprint_terms", "authors_config"]

NAME = "realworld"
log = logging.getLogger("implicitbias")

_SMALL = Config()
PRESETS: dict[str, Config] = {
    f"{model}/digits/{readout}": replace(_SMALL, model=model, readout=readout)
    for model in ("s4d", "lru", "mamba2")
    for readout in ("mean", "last")
}

# --------------------------------------------------------------------------------------------
# the authors' protocol: presets authors/<model>/<dataset> and authors-cpu/<model>/<dataset>
# --------------------------------------------------------------------------------------------

# Their code: repository YoniSlutzky98/imp-bias-ssm-poison, folder "real-world experiments/"; Table 2 is
# `python brew_poison.py --retrain_from_init --save numpy --continue_training_to_loss
#  --duplicate_poison_training --net S4|Mamba2|LRU --optimization s4|mamba2|lru` (their README.md).
# Their CIFAR-10 sizes are counts; on the smaller sets below they become the same fractions:
# clean model trained on train_budget 0.2 of the 50,000 training images (10,000) plus the
# budget 0.2 x 50,000 = 10,000 poison candidates, i.e. n_train = 0.4 x pool with half of it poisons;
# 3,000 targets = 0.3 x the test set, 1,000 high-loss targets = 0.1 x the test set.
AUTHORS_SPLITS = {
    # dataset: (training pool, test set size); digits: 1,400 of the 1,797 images for training
    "digits": (1400, 397),
    "mnist1d": (4000, 1000),
    # ItalyPowerDemand: 1,096 sequences of length 24 (the archive's 67 + 1,029 pooled and re-split per seed)
    "italypower": (800, 296),
    "cifar10": (50_000, 10_000),
}
AUTHORS_EPS = 16 / 255  # forest/options.py: --eps 16 (out of 255, of the pixel range)
AUTHORS_MODEL = {
    # model: (lr, weight_decay, d_state) -- forest/victims/optimization_strategy.py (S4Strategy, LRUStrategy,
    # Mamba2Strategy: lr, weight_decay); d_state: forest/victims/s4d.py S4D(d_state=64) -> N // 2 = 32
    # complex modes (ours counts complex modes), lru.py LRU(d_state=64), mamba2.py Mamba2Config(d_state=16)
    "s4d": (0.01, 0.01, 32),
    "lru": (0.001, 0.05, 64),
    "mamba2": (0.003, 0.05, 16),
}


def authors_config(model: str, dataset: str, **data) -> Config:
    """The authors' value for every field (docs/findings/realworld-authors.md), on ``dataset``; ``data``
    adds e.g. ``data_dir``."""
    pool, n_test = AUTHORS_SPLITS[dataset]
    lr, wd, d_state = AUTHORS_MODEL[model]
    return Config(
        model=model,
        dataset=dataset,
        **data,
        # --- data ---
        # CIFAR-10: their S4/LRU read x.view(B, h * w, C) of a (B, C, H, W) batch (s4model.py, lrumodel.py
        # forward), i.e. the stored image reinterpreted; their Mamba2 stem sees the image itself
        **({"scan": "channel_major"} if dataset == "cifar10" else {}),
        n_pool=pool,  # forest/data/kettle.py, _choose_poisons_randomly: the 50,000 training images
        n_train=round(0.4 * pool),  # kettle.py ~423 train_budget 0.2 clean + options.py budget 0.2 poisons
        poison_frac=0.5,  # the poisons are half of the clean model's training set (10,000 of 20,000)
        redraw_clean=True,  # kettle.py, create_duplicated_poison_dataset ~469: clean ids drawn anew
        mode="duplicate",  # brew_poison.py --duplicate_poison_training (create_duplicated_poison_dataset)
        standardize="channel",  # forest/data/datasets.py: per-channel mean/std normalisation
        clip=dataset in PIXEL_DATASETS,  # witch_base.py _run_trial: projection onto the [0, 1] pixel range
        eps=AUTHORS_EPS * RAW_RANGES[dataset],  # options.py --eps 16 (/255 of the range)
        # --- targets (difference 4) ---
        n_targets=round(0.3 * n_test),  # options.py --targets 3000 (of 10,000 test images)
        target_select="top_correct",  # witch_base.py, _reorder_targets_by_loss
        n_high_targets=round(0.1 * n_test),  # options.py --split_targets_by_loss 1000
        group_size=50,  # options.py --targets_per_group 50
        # --- attack (differences 1-3, 5, 6) ---
        iterations=250,  # options.py --attackiter 250
        restarts=8,  # options.py --restarts 8
        brew_step="fixed",  # witch_base.py _initialize_brew, "Rule 2": tau0 = tau * pbatch / 512 (signAdam)
        brew_lr=0.1 * 500 / 512,  # options.py --tau 0.1, --pbatch 500
        brew_init="randn",  # options.py --init randn; kettle.py initialize_poison
        restart_choice="last_iteration",  # witch_base.py _brew: argmin of the last iteration's target_losses
        brew_augment=True,  # options.py --paugment (store_false: on); witch_base.py _process_group_subset
        brew_dropout=False,  # witch_base.py: eval(dropout=True) in _initialize_brew, but _reorder_targets_by_loss
        #                      then calls victim.eval() (dropout off) and nothing switches it back on
        reg_factor=1e-7,  # options.py --reg_factor 0.0000001; witch_base.py _process_group_subset
        penalty=0.0,  # our own end penalty: not in their code
        # --- victim (differences 8, 9) ---
        d_model=128,  # forest/victims/models.py: s4/lru/mamba2(width=128, ...)
        n_layers=4,  # models.py: n_layers=4
        d_state=d_state,
        dropout=0.1,  # models.py: dropout=0.1
        norm=True,
        norm_position="post",  # s4model.py / lrumodel.py prenorm=False; mamba2model.py Mamba2Block
        readout="mean",  # s4model.py, lrumodel.py, mamba2model.py: x.mean(dim=1)
        epochs=100,  # optimization_strategy.py: epochs = 100
        batch_size=64,  # optimization_strategy.py: batch_size = 64
        lr=lr,
        weight_decay=wd,
        decay="all",  # forest/victims/training.py get_optimizers: AdamW over model.parameters()
        ssm_lr=0.001 if model == "s4d" else 0.0,  # s4model.py S4D(lr=0.001); s4d.py S4DKernel.register
        schedule="cosine_epochs",  # training.py get_optimizers: CosineAnnealingLR(epochs, eta_min=lr/100)
        min_lr_frac=0.01,  # eta_min = defs.lr / 100
        grad_clip=0.0,  # optimization_strategy.py privacy=dict(clip=None): no clipping
        augment=True,  # optimization_strategy.py augmentations=True; training.py run_step kettle.augment
        stem_stride=4 if model == "mamba2" else 0,  # mamba2model.py Mamba2Model.stem: kernel 4, stride 4
        headdim=64 if model == "mamba2" else 16,  # mamba2.py Mamba2Config(headdim=64)
        chunk_size=32 if model == "mamba2" else 16,  # mamba2.py Mamba2Config(chunk_size=32)
        # --- poisoned retraining (difference 10) ---
        retrain="extended",  # victim_single.py _iterate with --continue_training_to_loss
        max_extra_epochs=0,  # victim_single.py: max_additional_epochs = max_epoch * 2 (0 = 2 x epochs)
        fit_tol=0.001,  # victim_single.py: tolerance = 0.001
    )


# What the 2-core CPU cannot afford, and nothing else (checked by tests/test_realworld_authors.py):
AUTHORS_CPU = {
    "d_model": 32,  # width 128 -> 32 (4x narrower)
    "n_layers": 2,  # depth 4 -> 2
    "epochs": 30,  # 100 -> 30 epochs (the extended retraining then caps at 2 x 30 = 60 extra)
    "restarts": 1,  # 8 -> 1 restart (the brew is ~3/4 of a seed's time; 5 seeds x 6 presets had to fit a session)
}
AUTHORS_DATASETS = ("digits", "mnist1d", "italypower")
for _m in ("s4d", "lru", "mamba2"):
    for _d in AUTHORS_DATASETS:
        PRESETS[f"authors/{_m}/{_d}"] = authors_config(_m, _d)
        PRESETS[f"authors-cpu/{_m}/{_d}"] = replace(authors_config(_m, _d), **AUTHORS_CPU)
    # the paper's Table 2 at the authors' full settings (a GPU advised): needs --set data_dir=... (never downloaded)
    PRESETS[f"authors/{_m}/cifar10"] = authors_config(_m, "cifar10")


@in_float64
def run(config: Config) -> Record:
    """Every seed of ``config``: per-seed metrics lists and the stored perturbations. One log line
    per finished seed (logger ``implicitbias``; the CLI prints it under its progress bar).

    Recorded per seed and variant: train loss/accuracy on the set it was trained on and on the clean
    training set, test loss/accuracy (all, targets, rest), extra rounds and whether it fit, wall time;
    for perturbations: the share of ``sum |delta|^2`` in the last ``last_frac`` of the sequence, mean
    per-poison ℓ2 norm, max |delta| (model units), and the matching loss ``M`` at the clean model;
    the brew's objective/matching loss per group; times of clean training and brewing.
    """
    start = time.perf_counter()
    per = []
    for i, s in enumerate(config.seeds):
        t0 = time.perf_counter()
        per.append(run_seed(config, s).record)
        acc = "  ".join(f"{v} {100 * per[-1][v]['test_acc']:.2f}%" for v in VARIANTS)
        log.info(
            "realworld seed %d (%d/%d) done in %.0f s: test accuracy %s",
            s,
            i + 1,
            len(config.seeds),
            time.perf_counter() - t0,
            acc,
        )
    return collect(config, per, time.perf_counter() - start)

