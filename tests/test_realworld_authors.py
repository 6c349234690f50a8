"""The authors' real-world protocol (docs/findings/realworld-authors.md): every `authors/` default
against their code, the
`authors-cpu/` knobs, and the mechanisms that can go wrong (end regulariser weights, restart choice,
last-row metric, target selection, augmentation, resumed training, MNIST-1D generation).

Their code: repository YoniSlutzky98/imp-bias-ssm-poison, folder "real-world experiments/".
"""

from dataclasses import fields, replace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicitbias.datasets.views import ImageView, augment_image
from implicitbias.experiments import realworld as rw
from implicitbias.tasks import classifier_poisoning as cp
from implicitbias.poison import BrewConfig, allocate_top_groups, craft_poisons
from implicitbias.poison.groups import TargetGroup, craft_groups

# The authors' values, written out here (not read from the library), each with where it is in their code.
THEIRS = {
    "iterations": 250,  # forest/options.py: --attackiter default 250
    "restarts": 8,  # forest/options.py: --restarts default 8
    "brew_lr": 0.1 * 500 / 512,  # options.py --tau 0.1, --pbatch 500; witch_base.py _initialize_brew "Rule 2"
    "brew_step": "fixed",  # witch_base.py: tau0 = tau * (pbatch / 512) / ensemble, not scaled by eps
    "brew_init": "randn",  # options.py: --init default 'randn'; kettle.py initialize_poison
    "restart_choice": "last_iteration",  # witch_base.py _brew: scores[trial] = target_losses of the last step
    "target_select": "top_correct",  # witch_base.py _reorder_targets_by_loss (options.py --split_targets_by_loss)
    "group_size": 50,  # options.py: --targets_per_group default 50
    "brew_augment": True,  # options.py: --paugment action='store_false' (on); witch_base.py kettle.augment
    "brew_dropout": False,  # witch_base.py _reorder_targets_by_loss: victim.eval() switches dropout off again
    "reg_factor": 1e-7,  # options.py: --reg_factor default 0.0000001
    "penalty": 0.0,  # no such penalty in their code
    "mode": "duplicate",  # README.md command: --duplicate_poison_training
    "redraw_clean": True,  # kettle.py create_duplicated_poison_dataset: np.random.choice(clean_ids, ...)
    "poison_frac": 0.5,  # options.py --budget 0.2 poisons + --train_budget 0.2 clean, of 50,000
    "d_model": 128,  # forest/victims/models.py: s4/mamba2/lru(width=128)
    "n_layers": 4,  # models.py: n_layers=4
    "dropout": 0.1,  # models.py: dropout=0.1
    "norm_position": "post",  # s4model.py / lrumodel.py: prenorm=False; mamba2model.py: norm(mamba(x) + x)
    "readout": "mean",  # s4model.py, lrumodel.py, mamba2model.py: x.mean(dim=1)
    "epochs": 100,  # optimization_strategy.py: S4Strategy/Mamba2Strategy/LRUStrategy epochs = 100
    "batch_size": 64,  # optimization_strategy.py: batch_size = 64
    "decay": "all",  # training.py get_optimizers: torch.optim.AdamW(params, ...) over every parameter
    "schedule": "cosine_epochs",  # training.py: CosineAnnealingLR(optimizer, defs.epochs, eta_min=defs.lr / 100)
    "min_lr_frac": 0.01,  # training.py: eta_min = defs.lr / 100
    "grad_clip": 0.0,  # optimization_strategy.py: privacy = dict(clip=None, ...)
    "augment": True,  # optimization_strategy.py: augmentations = True; training.py run_step kettle.augment
    "retrain": "extended",  # victim_single.py _iterate with --continue_training_to_loss
    "max_extra_epochs": 0,  # victim_single.py: max_additional_epochs = max_epoch * 2 (our 0 means 2 x epochs)
    "fit_tol": 0.001,  # victim_single.py: tolerance = 0.001
    "standardize": "channel",  # forest/data/datasets.py: Normalize(data_mean, data_std) per channel
}
PER_MODEL = {
    # (lr, weight_decay): optimization_strategy.py S4Strategy, LRUStrategy, Mamba2Strategy
    "s4d": {"lr": 0.01, "weight_decay": 1e-2, "ssm_lr": 0.001,  # s4model.py S4D(..., lr=0.001)
            "d_state": 32,  # s4d.py S4D(d_state=64): C of shape (H, N // 2) complex -> 32 modes
            "stem_stride": 0},
    "lru": {"lr": 0.001, "weight_decay": 5e-2, "ssm_lr": 0.0,
            "d_state": 64,  # lru.py LRU(d_model, d_state=64)
            "stem_stride": 0},
    "mamba2": {"lr": 0.003, "weight_decay": 5e-2, "ssm_lr": 0.0,
               "d_state": 16,  # mamba2.py Mamba2Config d_state = 16
               "stem_stride": 4,  # mamba2model.py: Conv2d(d_model // 2, d_model, kernel_size=4, stride=4)
               "headdim": 64, "chunk_size": 32},  # mamba2.py Mamba2Config headdim = 64, chunk_size = 32
}
PER_DATASET = {
    # their eps 16/255 of the pixel range (options.py --eps 16); counts as fractions of CIFAR-10's:
    # --targets 3000 and --split_targets_by_loss 1000 of 10,000 test images; 0.4 x the training pool
    "digits": {"eps": 16 / 255 * 16.0, "clip": True, "n_pool": 1400, "n_train": 560, "n_targets": 119,
               "n_high_targets": 40},
    "mnist1d": {"eps": 16 / 255 * rw.RAW_RANGES["mnist1d"], "clip": False, "n_pool": 4000, "n_train": 1600,
                "n_targets": 300, "n_high_targets": 100},
    # ItalyPowerDemand (UCR, 1,096 sequences pooled): 800 training, 296 test
    "italypower": {"eps": 16 / 255 * 5.6872202, "clip": False, "n_pool": 800, "n_train": 320,
                   "n_targets": 89, "n_high_targets": 30},
}


@pytest.mark.parametrize("model", ["s4d", "lru", "mamba2"])
@pytest.mark.parametrize("dataset", ["digits", "mnist1d", "italypower"])
def test_authors_presets_hold_their_values(model, dataset):
    cfg = rw.PRESETS[f"authors/{model}/{dataset}"]
    want = {**THEIRS, **PER_MODEL[model], **PER_DATASET[dataset]}
    for name, value in want.items():
        got = getattr(cfg, name)
        # constants typed twice (e.g. 16 / 255 * 16): float64 products of a few factors, approx's rel 1e-6
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, (name, got, value)
    assert cfg.model == model and cfg.dataset == dataset and len(cfg.seeds) >= 5


@pytest.mark.parametrize("model", ["s4d", "lru", "mamba2"])
def test_paper_table2_preset_is_their_cifar_run_and_needs_only_the_data(model, tmp_path):
    """``implicitbias run realworld --preset authors/<model>/cifar10 --set data_dir=DIR`` is the paper's
    Table 2 at the authors' full settings: their counts (20,000 training images of 50,000, 3,000 targets,
    1,000 high-loss), eps 16/255 and their S4/LRU scan; without ``data_dir`` it is one line, exit 2."""
    cfg = rw.PRESETS[f"authors/{model}/cifar10"]
    want = {**THEIRS, **PER_MODEL[model], "eps": 16 / 255, "clip": True, "n_pool": 50_000, "n_train": 20_000,
            "n_targets": 3000, "n_high_targets": 1000, "scan": "channel_major"}
    for name, value in want.items():
        got = getattr(cfg, name)
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, (name, got, value)
    if model != "s4d":
        return
    from typer.testing import CliRunner

    from implicitbias import cli

    res = CliRunner().invoke(cli.app, ["run", "realworld", "--preset", "authors/s4d/cifar10",
                                       "--runs-dir", str(tmp_path)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "needs data_dir" in res.stderr and "--set data_dir=" in res.stderr


def test_authors_cpu_changes_only_the_listed_knobs():
    assert rw.AUTHORS_CPU == {"d_model": 32, "n_layers": 2, "epochs": 30, "restarts": 1}
    for model in ("s4d", "lru", "mamba2"):
        for dataset in ("digits", "mnist1d", "italypower"):
            full, cpu = rw.PRESETS[f"authors/{model}/{dataset}"], rw.PRESETS[f"authors-cpu/{model}/{dataset}"]
            names = [f.name for f in fields(rw.Config)]
            changed = {n: getattr(cpu, n) for n in names if getattr(cpu, n) != getattr(full, n)}
            assert changed == rw.AUTHORS_CPU


def test_our_presets_keep_our_original_protocol():
    base = rw.Config()
    for name in ("brew_step", "brew_init", "restart_choice", "target_select", "retrain", "schedule", "norm_position"):
        assert getattr(base, name) == {"brew_step": "eps", "brew_init": "uniform", "restart_choice": "final",
                                       "target_select": "median", "retrain": "rounds", "schedule": "warmup_cosine",
                                       "norm_position": "pre"}[name]
    assert (base.reg_factor, base.dropout, base.n_pool, base.redraw_clean, base.augment) == (0.0, 0.0, 0, False, False)
    assert rw.PRESETS["s4d/digits/mean"] == base


# ---------------------------------------------------------------------------------------------
# the end regulariser, the last-row metric, the image behind a sequence
# ---------------------------------------------------------------------------------------------


def test_end_regulariser_weights_by_hand():
    f = 1e-7
    # closed forms f * (rows left); the weights are float32: within eps32 of them, under approx's rel
    # 1e-6 and rtol 1e-6 (an off-by-one row is off by >= 1/8 relative)
    w = cp.reg_weights(ImageView("row", 1, 8, 8), f)  # digits: step t is row t // 8
    assert w.shape == (64, 1)
    for t in (0, 7, 8, 30, 55, 56, 63):
        assert w[t, 0] == pytest.approx(f * (8 - t // 8 - 1))
    w = cp.reg_weights(ImageView("row", 1, 40, 1), f)  # MNIST-1D: every step is a row
    np.testing.assert_allclose(w[:, 0], f * (40 - np.arange(40) - 1), rtol=1e-6)
    w = cp.reg_weights(ImageView("channel_major", 3, 32, 32, 3), f)  # stored value 3t + c is in row (v % 1024) // 32
    for t, c in ((0, 0), (10, 2), (341, 1), (700, 0), (1023, 2)):
        v = 3 * t + c
        assert w[t, c] == pytest.approx(f * (32 - (v % 1024) // 32 - 1))
    w = cp.reg_weights(ImageView("row", 3, 32, 32), f)
    assert np.all(w[-32:] == 0) and w[0, 2] == pytest.approx(31 * f)


def test_last_row_ratio_by_hand():
    v = ImageView("row", 1, 8, 8)
    d = np.zeros((3, 64, 1))
    d[0, 56:, 0] = 0.3  # all in the last row -> 1
    d[1] = 1.0  # uniform -> sqrt(8 / 64)
    # d[2] = 0: counts 0, as in their np.divide(..., where=image_norms != 0)
    # closed forms in float64 (approx's rel 1e-6 >> eps64)
    assert v.last_row_ratio(d) == pytest.approx((1 + np.sqrt(8 / 64) + 0) / 3)
    cm = ImageView("channel_major", 3, 32, 32, 3)
    d = np.zeros((1, 1024, 3))
    d.reshape(1, -1)[0, 1024 - 32 : 1024] = 1.0  # the red plane's last row: stored values 992..1023
    assert cm.last_row_ratio(d) == pytest.approx(1.0)


def test_augmentation_shift_and_flip_by_hand():
    img = jnp.arange(64.0).reshape(1, 8, 8)
    ms = ImageView("row", 1, 8, 8).max_shift()
    assert ms == (1.0, 1.0)
    # closed forms on integer pixels: whole shifts and flips are exact, the half shift a mean of two
    # neighbours (exact in binary); assert_allclose's rtol 1e-7 (atol 1e-5: float32 interpolation weights
    # of a 40-step shift, ~eps32 * 40 = 5e-6)
    out = np.asarray(augment_image(img, jnp.array([1.0, 0.0, 0.0]), ms))  # +1 column, -1 row, no flip
    want = np.zeros((8, 8))
    want[1:, :7] = np.asarray(img[0])[:7, 1:]
    np.testing.assert_allclose(out[0], want)
    out = np.asarray(augment_image(img, jnp.array([0.5, 0.5, 0.9]), ms))  # no shift, mirrored rows
    np.testing.assert_allclose(out[0], np.asarray(img[0])[:, ::-1])
    out = np.asarray(augment_image(img, jnp.array([0.75, 0.5, 0.0]), ms))  # half a column: the mean of neighbours
    np.testing.assert_allclose(out[0, :, :7], (np.asarray(img[0])[:, :7] + np.asarray(img[0])[:, 1:]) / 2)
    seq = ImageView("row", 1, 40, 1)  # MNIST-1D: time shift only, the flip is the identity
    assert seq.max_shift() == (5.0, 0.0)
    x = jnp.arange(40.0).reshape(1, 40, 1)
    out = np.asarray(augment_image(x, jnp.array([0.3, 0.6, 0.9]), seq.max_shift()))  # 1 step later in time
    np.testing.assert_allclose(out[0, :39, 0], np.arange(1.0, 40.0), atol=1e-5)
    assert out[0, 39, 0] == 0


# ---------------------------------------------------------------------------------------------
# targets, restarts, the regulariser inside the brew
# ---------------------------------------------------------------------------------------------


def test_top_correct_targets_by_hand():
    losses = np.array([0.1, 2.0, 0.5, 3.0, 0.9, 1.5, 0.2, 4.0])
    correct = np.array([1, 0, 1, 1, 1, 1, 1, 0], bool)
    groups = allocate_top_groups(losses, correct, n_poisons=11, seed=3, n_high=3, group_size=2)
    # correct by decreasing loss: 3 (3.0), 5 (1.5), 4 (0.9), 2 (0.5), 6 (0.2), 0 (0.1); wrong: 7 (4.0), 1 (2.0)
    assert [g.name for g in groups] == ["high_0", "high_1", "low_0", "low_1", "low_2"]
    assert [list(g.targets) for g in groups] == [[3, 5], [4], [2, 6], [0, 7], [1]]
    perm = np.random.default_rng(3).permutation(11)
    high, low = perm[:5], perm[5:]  # int(11 * 0.5) = 5 for the high side, split 3 + 2; the rest 2 + 2 + 2
    want = [high[:3], high[3:], low[:2], low[2:4], low[4:]]
    for g, p in zip(groups, want):
        np.testing.assert_array_equal(g.poisons, np.sort(p))
    # n_high covering every target, or no correct target: one group with every poison (their "Invalid target split")
    assert [g.name for g in allocate_top_groups(losses, correct, 4, n_high=8, group_size=2)] == ["all"]
    assert [g.name for g in allocate_top_groups(losses, correct, 4, n_high=7, group_size=0)] == ["high_0", "low_0"]
    assert [g.name for g in allocate_top_groups(losses, np.zeros(8, bool), 4, n_high=2)] == ["all"]


class _Lin(eqx.Module):
    w: jax.Array

    def __call__(self, x):
        return x.reshape(-1) @ self.w


def _loss(model, x, y):
    logits = jax.vmap(model)(x)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.size), y])


@pytest.fixture(scope="module")
def toy():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    model = _Lin(jax.random.normal(k[0], (16, 3)))
    x_p = jax.random.normal(k[1], (6, 16, 1))
    y_p = jnp.array([0, 1, 2, 0, 1, 2])
    direction = jax.tree_util.tree_map(jnp.negative, eqx.filter_jit(eqx.filter_grad(_loss))(model, x_p[::-1], y_p))
    return model, x_p, y_p, direction


# one compiled brew for the restart and regulariser tests (reg_weights is traced)
BREW = BrewConfig(eps=0.5, iterations=8, restarts=3, init="randn", step="fixed", lr=0.2, select="last_iteration",
                  reg_weights=np.zeros((16, 1), np.float32))


def test_restart_choice_by_the_last_iteration(toy):
    model, x_p, y_p, direction = toy
    res = craft_poisons(model, _loss, x_p, y_p, direction, jax.random.PRNGKey(1), BREW)
    scores = np.asarray(res.restart_objectives)  # every restart's objective in its last iteration
    assert scores.shape == (3,) and int(res.best_restart) == int(np.argmin(scores))
    # the same float64 objective recorded twice (<= 1 ulp apart): approx's rel 1e-6. The final value
    # differs from it by the last sign-Adam step's change (1.1e-4 here), 1e5 times the abs 1e-9.
    assert scores[int(res.best_restart)] == pytest.approx(float(res.history[-1]))  # before the last step
    assert float(res.objective) != pytest.approx(float(res.history[-1]), abs=1e-9)  # not the final value


def test_joint_restarts_keep_one_restart_for_all_groups(toy):
    model, x_p, y_p, direction = toy
    groups = [TargetGroup("a", np.array([0]), np.array([0, 1, 2, 3])),
              TargetGroup("b", np.array([1]), np.array([4, 5]))]
    cfg = replace(BREW, iterations=4, reg_weights=None)
    dfn = lambda m, xt, yt, t: direction
    key = jax.random.PRNGKey(5)
    out = craft_groups(model, _loss, x_p, y_p, x_p, y_p, groups, key, cfg, direction_fn=dfn, joint_restarts=True)
    r = int(np.argmin(out.restart_scores))
    scores = [float(res.restart_objectives[0]) for res in out.results]
    assert out.restart_scores[r] == pytest.approx((4 * scores[0] + 2 * scores[1]) / 6)  # float64, rel 1e-6
    one = replace(cfg, restarts=1)
    for g, kg, res in zip(groups, jax.random.split(key, 2), out.results):  # restart r of group g: fold_in(k_g, r)
        alone = craft_poisons(model, _loss, x_p[g.poisons], y_p[g.poisons], direction, jax.random.fold_in(kg, r), one)
        # float64 (the toy's arrays): the joint and the lone brew differ only by batching, i.e. by a few
        # eps64 in the gradients, so the signs fed to Adam agree unless a gradient entry is within
        # ~1e-15 of 0; rtol 1e-6 then holds the deltas (a wrong restart index changes them by O(eps))
        np.testing.assert_allclose(np.asarray(alone.delta), np.asarray(res.delta), rtol=1e-6)


def test_end_regulariser_enters_the_gradient_before_the_sign(toy):
    model, x_p, y_p, direction = toy
    w = np.zeros((16, 1), np.float32)
    w[:8] = 1e6  # a huge weight on the first 8 steps: 2 delta w dominates the matching gradient there
    brew = lambda weights: np.abs(np.asarray(craft_poisons(model, _loss, x_p, y_p, direction, jax.random.PRNGKey(2),
                                                           replace(BREW, reg_weights=weights)).delta))
    d, d0 = brew(w), brew(BREW.reg_weights)
    # effects: a weight 1e6 dominates the matching gradient by orders, so the factor 0.5 is no rounding size
    assert d[:, :8].mean() < 0.5 * d0[:, :8].mean()  # pulled toward zero where weighted
    assert d[:, 8:].mean() > 0.5 * d0[:, 8:].mean()  # not where the weight is 0


# ---------------------------------------------------------------------------------------------
# training: the per-epoch cosine and resuming
# ---------------------------------------------------------------------------------------------


def test_epoch_cosine_is_pytorchs_cosine_annealing_per_epoch():
    from implicitbias.models.training import epoch_cosine

    f = epoch_cosine(0.01, 1e-4, 10, steps_per_epoch=7)
    for step in (0, 6, 7, 34, 69):
        e = step // 7
        # the closed form; the schedule may be float32 (within eps32 = 1.2e-7 relative), approx's rel 1e-6
        assert float(f(jnp.asarray(step))) == pytest.approx(1e-4 + (0.01 - 1e-4) * (1 + np.cos(np.pi * e / 10)) / 2)


class _Tiny(eqx.Module):
    head: eqx.nn.Linear

    def __call__(self, x, key=None):
        return self.head(jnp.tanh(x).mean(0))


@pytest.mark.slow  # two compilations of the training loop (~5 s); runs with `make test-all`
def test_training_resumes_where_it_stopped():
    """1 + 1 epochs from a saved state equal 2 epochs in one call (schedule, optimizer state, per-epoch
    keys carried)."""
    from implicitbias.models.training import TrainConfig, fit_epochs

    model = _Tiny(eqx.nn.Linear(1, 10, key=jax.random.PRNGKey(0)))
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (16, 8, 1)), np.float32)
    y = np.arange(16) % 10
    tc = TrainConfig(epochs=2, batch_size=8, schedule="cosine_epochs", schedule_epochs=3, min_lr_frac=0.01,
                     grad_clip=None, decay="all")
    key = jax.random.PRNGKey(4)
    a, _, st = fit_epochs(model, x, y, tc, key, n_epochs=1)
    a, ha, st = fit_epochs(a, x, y, tc, key, n_epochs=1, state=st)
    b, hb, _ = fit_epochs(model, x, y, tc, key, n_epochs=2)
    assert st.epochs_done == 2
    # float32 rounding bound: resuming may reorder a few float32 operations (the carried state vs the
    # loop's), <= a few ulp per update over 4 updates of a 10-class head, ~10 eps32 = 1.2e-6 relative;
    # rel 1e-5 and atol 1e-6 on parameters of size ~0.3; a reset schedule or optimizer state changes
    # the second epoch's updates at the size of the updates themselves (lr ~ 1e-2), far above that.
    assert float(ha["loss"][-1]) == pytest.approx(float(hb["loss"][-1]), rel=1e-5)
    for u, v in zip(jax.tree_util.tree_leaves(eqx.filter(a, eqx.is_inexact_array)),
                    jax.tree_util.tree_leaves(eqx.filter(b, eqx.is_inexact_array))):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# MNIST-1D
# ---------------------------------------------------------------------------------------------


def test_mnist1d_is_generated_with_pinned_arguments_and_no_global_rng_leak():
    from implicitbias.datasets import load_mnist1d
    from implicitbias.datasets.mnist1d import RAW_RANGE

    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    ds = load_mnist1d(n_train=500, seed=1)
    assert np.random.random() == before  # the package seeds NumPy's global generator; we restore it
    assert ds.x_train.shape == (500, 40, 1) and ds.x_test.shape == (1000, 40, 1)
    assert np.bincount(ds.y_train).min() >= 45  # stratified
    full = load_mnist1d()
    raw = full.x_train * full.meta["std"] + full.meta["mean"]
    # float32 data standardised and undone: a few eps32 (~4e-7) relative of the range; rel 1e-5
    assert float(np.ptp(raw)) == pytest.approx(RAW_RANGE, rel=1e-5)
    assert full.x_train.shape == (4000, 40, 1) and sorted(set(full.y_test.tolist())) == list(range(10))


# ---------------------------------------------------------------------------------------------
# a UCR set (ItalyPowerDemand, shipped inside sktime)
# ---------------------------------------------------------------------------------------------


def test_italypower_is_the_pooled_archive_resplit_per_seed():
    from implicitbias.datasets import load_ucr
    from implicitbias.datasets.ucr import RAW_RANGES, _read

    cfg = rw.PRESETS["authors-cpu/s4d/italypower"]
    a, b = cfg.load(0), cfg.load(1)
    assert a.x_train.shape == (800, 24, 1) and a.x_test.shape == (296, 24, 1)
    assert not np.array_equal(a.y_train, b.y_train) or not np.array_equal(a.x_train, b.x_train)  # seeds re-split
    assert sorted(set(a.y_train.tolist())) == [0, 1] and np.bincount(a.y_train).min() >= 390  # stratified
    raw = np.concatenate([_read("ItalyPowerDemand", "TRAIN")[0], _read("ItalyPowerDemand", "TEST")[0]])
    # the archive's float64 values and the constant typed from them: rel 1e-12 (4.5e3 eps64)
    assert float(np.ptp(raw)) == pytest.approx(RAW_RANGES["ItalyPowerDemand"], rel=1e-12)
    assert raw.shape[0] == cfg.facts.total == 1096
    assert cfg.view == ImageView("row", 1, 24, 1) and cfg.model_config.n_classes == 2
    # the standardised rows undo to the archive's rows (train-only statistics), train and test disjoint
    def rows(x):
        back = (x * a.meta["std"] + a.meta["mean"])[:, :, 0]
        return np.abs(back[:, None, :] - raw[None, :, :, 0]).max(-1).argmin(1), np.abs(
            back[:, None, :] - raw[None, :, :, 0]).max(-1).min(1)
    i_tr, d_tr = rows(a.x_train)
    i_te, d_te = rows(a.x_test)
    # float32 standardisation undone: ~3 eps32 max|raw| (max |raw| = 3.3) = 1.2e-6 < 1e-5, while any two
    # archive rows differ by >= 0.086 (max over steps)
    assert d_tr.max() < 1e-5 and d_te.max() < 1e-5
    assert len(set(i_tr.tolist()) | set(i_te.tolist())) == 1096
    assert load_ucr("ItalyPowerDemand", split_seed=0, n_train=800).x_train.shape == (800, 24, 1)


def test_italypower_config_errors_name_the_limit():
    base = rw.PRESETS["authors-cpu/s4d/italypower"]
    with pytest.raises(ValueError, match="n_pool must be <= 1094"):
        replace(base, n_pool=1095)
    with pytest.raises(ValueError, match="n_targets must be <= the test set size 296"):
        replace(base, n_targets=297)
    with pytest.raises(ValueError, match="pixel range"):
        replace(base, clip=True)


@pytest.mark.slow  # about 30 s of CPU (four compiled trainings); the fast suite runs the digits pipeline
def test_italypower_tiny_run_end_to_end():
    """The authors' protocol runs end to end on the UCR set (two classes, length 24): poisons keep their
    labels and stay within the budget, and every variant is evaluated on the 296 test sequences."""
    tiny = replace(rw.PRESETS["authors-cpu/s4d/italypower"], d_model=8, d_state=4, n_layers=1, epochs=2,
                   iterations=3, n_targets=20, n_high_targets=6, group_size=3, max_extra_epochs=1, seeds=(0,))
    out = cp.run_seed(tiny, 0)
    eps, _, _ = cp.budget(tiny, out.data.meta)
    assert out.record["arrays"]["poison_idx"].size == tiny.n_poisons == 160
    for name in ("poisoned", "uniform"):
        delta = out.record["arrays"][f"delta_{name}"]
        assert delta.shape == (160, 24, 1)
        ps = out.sets[name]
        assert int(np.asarray(ps.is_poison).sum()) == 160 and np.asarray(ps.x).shape[0] == 320 + 160
    d_p, d_u = out.record["arrays"]["delta_poisoned"], out.record["arrays"]["delta_uniform"]
    # budget: float32 clip (eps32 / 2 relative); used: an effect (sign-Adam ends on the box's face);
    # norms: float32 rescaling over 24 entries, <= 24 eps32 = 3e-6 relative < rtol 1e-5
    assert 0.5 * eps < np.abs(d_p).max() <= eps * (1 + 1e-5)  # the brew moved, within the ℓ∞ budget
    np.testing.assert_allclose(np.linalg.norm(d_u.reshape(160, -1), axis=1),
                               np.linalg.norm(d_p.reshape(160, -1), axis=1), rtol=1e-5)  # same-norm control
    for v in rw.VARIANTS:
        assert 0.0 <= out.record[v]["test_acc"] <= 1.0
