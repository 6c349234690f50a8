"""The teacher-student task of docs/science.md §1-3 as a library: data, teachers, initialisations, the
training loss, trajectory logs, and the GD and gradient-flow runs behind Table 1 and the dynamics.

A :class:`Config` is one cell (one setting, one size, without or with special sequences), all its
seeds. :func:`run` trains every seed in one batch (``jax.vmap``) and returns a
:class:`~implicitbias.record.Record` with per-seed metrics and logged trajectories.

* ``per_theorem``    (docs/science.md §2a) gradient flow on ``a`` only, ``B = C = 1``;
* ``beyond_theorem`` (docs/science.md §2b) GD with the adaptive learning rate on ``a, B, C``;
* ``ssm_in_nn``      (docs/science.md §2c) SSM -> ReLU MLP, Adam; relative L2 error on length-40 inputs.

Details the paper leaves open follow the authors' code (docs/authors-procedure.md); each is a field:
* per-Theorem init: ``sort_desc(sd_A U[0,1)^d)`` from NumPy's legacy ``RandomState(seed)``;
* ``data_rng``: ``"numpy"`` the authors' stream (``RandomState(seed)``, baseline rows row by row,
  then special rows; network test inputs from ``RandomState(seed + 12)``), ``"jax"`` seed-derived keys;
* ``init_rng``: ``"keras"`` prefixes of TensorFlow's ``stateless_normal(seed=[seed, 0])``
  (:mod:`implicitbias.core.keras_init`: ``B`` and ``C`` share values, ``C`` in reversed draw order,
  ``diag(A)`` every ``(d+1)``-th value, first and last network layers equal), ``"jax"`` independent keys;
* ``sort_C``: False takes ``C <- |C|`` unsorted, as docs/science.md writes; True sorts it descending;
* ``optimizer="keras_adam"`` (network): epsilon 1e-7 added to ``sqrt(v)`` before bias correction;
* ``full_kernel``: the adaptive rate sees the gradient of ``A`` as a full ``(d, d)`` matrix, projected
  onto its diagonal after each update (:class:`~implicitbias.core.ssm.FullKernelSSM`).

Why each, and what it changed (measured): ``docs/findings/table1.md``.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field, replace
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from ..core import flow, metrics, sequences
from ..core.precision import in_float64
from ..core.optim import Optimizer, StopRule, runtime_lr_optimizer
from ..record import Record
from ..core.ssm import DiagonalSSM, FullKernelSSM, SSMNet, network_teacher, per_theorem_teacher, unit_teacher
from ..core.stats import mean_std
from ..core.train import train_batched
from ..core.validate import check_finite, described, require, require_choices, require_finite, require_seeds

Setting = Literal["per_theorem", "beyond_theorem", "ssm_in_nn"]
LAST_LOGGED = -1  # Config.measure_at: read the error where the authors' notebooks read it (last_logged_update)


def last_logged_update(extra_steps: int, log_every: int) -> int:
    """The post-optimum update after which the authors' notebooks read the error they print.

    Their ``common/train.py`` prints the post-optimum logging callback's last entry
    (``ext_losses[-1]``); that callback records at 0-based epochs ``e`` with ``e % log_period == 0``,
    after update ``e + 1`` of the phase. The last such ``e`` below ``extra_steps`` gives
    ``log_every * floor((extra_steps - 1) / log_every) + 1``: 1401 of 1500, 4901 of 5000 extra
    updates. ``extra_steps = 0`` (no post-optimum phase) reads at the hit: 0.
    """
    if extra_steps < 0 or log_every <= 0:
        raise ValueError(f"need extra_steps >= 0 and log_every > 0, got {extra_steps}, {log_every}")
    return 0 if extra_steps == 0 else log_every * ((extra_steps - 1) // log_every) + 1


@dataclass(frozen=True)
class Config:
    """One teacher-student cell (one setting, one size, without or with special sequences), all seeds:
    a Table 1 or dynamics preset, or any variant of one (docs/science.md §1-3)."""

    setting: Setting = field(
        metadata={"help": "which Table 1 setting: per_theorem (§2a), beyond_theorem (§2b) or ssm_in_nn (§2c)"}
    )
    special: bool = field(metadata={"help": "add the special sequences to the training set"})
    L: int = field(metadata={"help": "training sequence length (>= 3)"})
    d: int = field(metadata={"help": "student state dimension (>= 2)"})
    seeds: tuple[int, ...] = field(metadata={"help": "seeds, one run each, trained together in one batch"})
    sd_A: float = field(
        metadata={"help": "init scale of a: U[0, sd_A) per Theorem, std of N(0, sd_A) in the GD settings"}
    )
    diff: float = field(metadata={"help": "the init's near tie: a[1] = a[0] - diff (and B[1] = B[0] - diff)"})
    # GD settings (§2b, §2c)
    sd_BC: float = described(1e-3, "GD settings: std of the N(0, sd_BC) init of B and C")
    warm_init: float = described(
        0.1, "GD settings: warm start added to a and B after the init (the network presets: 0.001)"
    )
    sort_C: bool = described(
        False, "GD settings: sort C = |C| descending; False leaves it unsorted, as docs/science.md writes"
    )
    optimizer: Optimizer = described("adaptive_gd", "GD settings: the optimiser (core.optim.OPTIMIZERS)")
    lr: float = described(0.01, "GD settings: learning rate (adaptive_gd: its base rate lr0)")
    eps: float = described(0.01, "the train loss at or below which a run counts as fitted")
    extra_steps: int = described(1500, "GD settings: updates after the fit (train loss <= eps)")
    # the update after the fit at which "error" is read (docs/science.md §2; README "What each cell measures"):
    # LAST_LOGGED (-1) = the authors' point, last_logged_update(extra_steps, log_every); "error_end" is at extra_steps
    measure_at: int = described(
        LAST_LOGGED, "update after the fit at which error is read: -1 the authors' last logged one, or 0..extra_steps"
    )
    max_steps: int = described(1_000_000, "GD settings: most updates a run may take")
    stall_tol: float = described(
        0.0, "opt-in early stop of runs frozen above eps (relative loss change per log chunk, see StopRule); 0 = off"
    )
    data_rng: Literal["numpy", "jax"] = described(
        "numpy", "GD-setting data: numpy the authors' RandomState stream, jax seed-derived jax.random keys"
    )
    init_rng: Literal["keras", "jax"] = described(
        "keras", "GD-setting init: keras the authors' TensorFlow stream, jax independent jax.random keys"
    )
    full_kernel: bool = described(
        True, "adaptive_gd: hold A as a full (d, d) matrix projected onto its diagonal, as the authors' Keras code"
    )
    dtype: Literal["float64", "float32"] = described(
        "float64", "GD settings: floating-point precision; float32 is the authors' (TensorFlow's)"
    )
    init_jitter: float = described(
        0.0, "GD settings: relative N(0, init_jitter) perturbation of every initial parameter; 0 = none"
    )
    # with it, copies of a rounding cloud can run in batches of the cell's own size and share its compiled program
    jitter_index: tuple[int, ...] = described(
        (), "perturbation stream of each seed under init_jitter; empty = its position in seeds"
    )
    n_baseline: int = described(8, "GD settings: number of baseline sequences")
    baseline_stop: int = described(
        2, "GD settings: baseline sequences have N(0,1) entries at positions 0:baseline_stop"
    )
    n_special: int = described(10, "GD settings: number of special sequences")
    special_positions: tuple[int, ...] = described((), "positions of the special sequences' mass; empty = (L-2,)")
    extra_sequences: tuple[tuple[float, ...], ...] = described(
        (), "your own training inputs (length L each), labelled by the teacher"
    )
    # the teacher (docs/science.md §1): empty = the setting's teacher (§2a: a* = (1, 0), B* = C* = (1, sqrt(d-1));
    # §2b, §2c: a* = B* = C* = 1); teacher_B, teacher_C empty with teacher_a given = ones
    teacher_a: tuple[float, ...] = described((), "teacher's diagonal a* (|a*_i| <= 1); empty = the setting's teacher")
    teacher_B: tuple[float, ...] = described(
        (), "teacher's B* (length of teacher_a); empty = ones, or the setting's teacher"
    )
    teacher_C: tuple[float, ...] = described(
        (), "teacher's C* (length of teacher_a); empty = ones, or the setting's teacher"
    )
    # standalone-SSM variants of docs/science.md §3 (defaults give Table 1)
    # train_BC=False: only a moves; with full_kernel the gradients of the fixed B, C still enter the adaptive
    # rate, as in the authors' fix_B_C
    train_BC: bool = described(True, "beyond_theorem: train B and C; False holds the student's B = C = 1 fixed")
    tie_init: bool = described(True, "the init's near tie a[1] = a[0] - diff (and B[1] = B[0] - diff); False: no tie")
    # SSM inside a network (§2c)
    m: int = described(0, "ssm_in_nn: width of the ReLU layers")
    depth: int = described(0, "ssm_in_nn: number of ReLU layers")
    sd_D: float = described(0.0, "ssm_in_nn: std of the N(0, sd_D) init of the MLP weights")
    n_test: int = described(2000, "ssm_in_nn: number of N(0,1) test sequences of the relative L2 error")
    test_length: int = described(40, "ssm_in_nn: length of the test sequences (>= L)")
    # per Theorem (§2a)
    t_final: float = described(1e11, "per_theorem: gradient-flow time at which the run ends and error is read")
    rtol: float = described(1e-8, "per_theorem: relative tolerance of the ODE solver")
    atol: float = described(1e-12, "per_theorem: absolute tolerance of the ODE solver")
    # measurement and logging
    horizon: int = described(40, "impulse-response entries h_k compared with the teacher's (>= L)")
    error_from: int = described(1, "first k of h_k in the error; 2 when B = C = 1 are held fixed (h_1 = d cannot move)")
    log_every: int = described(100, "GD settings: updates between trajectory-log entries")

    def __post_init__(self):
        require_choices(self)  # setting, optimizer, data_rng, init_rng, dtype: their Literal values
        require(
            math.isfinite(self.init_jitter) and self.init_jitter >= 0,
            f"init_jitter must be >= 0, got {self.init_jitter}",
        )
        require(
            not self.jitter_index or (len(self.jitter_index) == len(self.seeds) and min(self.jitter_index) >= 0),
            f"jitter_index must hold one index >= 0 per seed ({len(self.seeds)}), got {self.jitter_index}",
        )
        require(self.L >= 3, f"L must be >= 3, got {self.L}")
        require(self.d >= 2, f"d must be >= 2 (the init ties entries 0 and 1), got {self.d}")
        require_seeds(self.seeds)
        for name in ("sd_A", "diff", "sd_BC", "warm_init", "lr", "eps", "stall_tol", "sd_D", "t_final", "rtol", "atol"):
            require_finite(name, getattr(self, name))
        require(self.sd_A > 0, f"sd_A must be > 0, got {self.sd_A}")
        require(self.diff >= 0, f"diff must be >= 0, got {self.diff}")
        require(self.horizon >= self.L, f"horizon must be >= L ({self.L}), got {self.horizon}")
        require(1 <= self.error_from <= self.horizon, f"error_from must be in 1..{self.horizon}, got {self.error_from}")
        require(self.log_every > 0, f"log_every must be > 0, got {self.log_every}")
        require(
            self.measure_at == LAST_LOGGED or 0 <= self.measure_at <= self.extra_steps,
            f"measure_at must be -1 (the authors' last logged update) or in 0..extra_steps ({self.extra_steps}), "
            f"got {self.measure_at}",
        )
        for pos in self.special_positions:
            require(0 <= pos < self.L, f"special_positions must lie in 0..{self.L - 1}, got {pos}")
        for i, seq in enumerate(self.extra_sequences):
            require(len(seq) == self.L, f"extra_sequences[{i}] has length {len(seq)}, expected L={self.L}")
            require(all(math.isfinite(v) for v in seq), f"extra_sequences[{i}] contains NaN or inf")
        if self.setting == "per_theorem":
            require(
                self.dtype == "float64" and self.init_jitter == 0,
                "dtype and init_jitter apply to the GD settings; per_theorem is gradient flow in float64",
            )
            require(self.t_final > 0, f"t_final must be > 0, got {self.t_final}")
            require(self.eps > 0, f"eps must be > 0 (the train loss that counts as fitted), got {self.eps}")
            require(self.rtol > 0 and self.atol > 0, "rtol and atol must be > 0")
        else:
            require(self.sd_BC > 0, f"sd_BC must be > 0, got {self.sd_BC}")
            require(self.lr > 0, f"lr must be > 0, got {self.lr}")
            require(self.n_baseline > 0, f"n_baseline must be > 0, got {self.n_baseline}")
            require(self.n_special > 0, f"n_special must be > 0, got {self.n_special}")
            require(
                1 <= self.baseline_stop <= self.L, f"baseline_stop must be in 1..{self.L}, got {self.baseline_stop}"
            )
            self.stop_rule()  # validates eps, extra_steps, max_steps, stall_tol
        self._validate_teacher()
        require(self.train_BC or self.setting == "beyond_theorem", "train_BC=False applies to beyond_theorem only")
        if self.setting == "ssm_in_nn":
            require(self.m > 0, f"m must be > 0, got {self.m}")
            require(self.depth > 0, f"depth must be > 0, got {self.depth}")
            require(self.sd_D > 0, f"sd_D must be > 0, got {self.sd_D}")
            require(self.n_test > 0 and self.test_length >= self.L, "n_test must be > 0 and test_length >= L")

    def _validate_teacher(self) -> None:
        """Teacher fields: ``teacher_B``/``teacher_C`` need ``teacher_a``; given ones share its length
        (``d*``); every value finite; ``|a*_i| <= 1`` (a stable teacher: ``h*_k`` stays bounded over
        any horizon, so the extrapolation error measures the student, not the teacher's blow-up)."""
        a, B, C = self.teacher_a, self.teacher_B, self.teacher_C
        require(bool(a) or not (B or C), "teacher_B and teacher_C need teacher_a (the teacher's diagonal)")
        for name, v in (("teacher_B", B), ("teacher_C", C)):
            require(
                not v or len(v) == len(a), f"{name} must have the length of teacher_a ({len(a)}), got {len(v)} values"
            )
        for name, v in (("teacher_a", a), ("teacher_B", B), ("teacher_C", C)):
            require(
                all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v),
                f"{name} must hold finite numbers, got {v}",
            )
        require(all(abs(x) <= 1 for x in a), f"teacher_a must satisfy |a*_i| <= 1 (a stable teacher), got {a}")

    @property
    def teacher_dim(self) -> int:
        """``d*``: the number of entries of the teacher's diagonal (1 for the settings' default
        teachers of §2b/§2c, 2 for §2a's ``a* = (1, 0)``)."""
        if self.teacher_a:
            return len(self.teacher_a)
        return 2 if self.setting == "per_theorem" else 1

    @property
    def uses_full_kernel(self) -> bool:
        """Whether the run holds ``A`` as a full matrix. Only the adaptive learning rate sees the
        difference (its gradient norm); Adam and plain GD move ``diag(A)`` identically either way,
        so they keep the cheaper diagonal model."""
        return self.full_kernel and self.optimizer == "adaptive_gd" and self.setting != "per_theorem"

    @property
    def measured_update(self) -> int:
        """Updates after the fit (train loss <= eps) at which the reported ``error`` is read."""
        if self.measure_at == LAST_LOGGED:
            return last_logged_update(self.extra_steps, self.log_every)
        return self.measure_at

    def stop_rule(self) -> StopRule:
        return StopRule(self.eps, self.extra_steps, self.max_steps, self.stall_tol, self.measured_update)

    @property
    def positions(self) -> tuple[int, ...]:
        return self.special_positions or (self.L - 2,)


STAIRCASE_TEACHER = (0.99, 0.8, 0.5, 0.3)  # docs/science.md §3: a* = STAIRCASE_TEACHER[:d*], B* = C* = 1


def special_pair(name: str, without: Config) -> dict[str, Config]:
    """Presets ``name`` (``without``) and ``name/special`` (the same config with special sequences)."""
    return {name: without, f"{name}/special": replace(without, special=True)}


# --------------------------------------------------------------------------------------------
# data and initialisation
# --------------------------------------------------------------------------------------------


def task_keys(seed: int) -> dict[str, jax.Array]:
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    return dict(baseline=k[0], special=k[1], init=k[2], mlp=k[3], test=k[4])


def training_inputs(config: Config, seed: int) -> jax.Array:
    """The training inputs ``X: (N, L)`` of one seed: baseline, then special, then extra sequences.

    The baseline rows depend only on the seed, so a cell with special sequences trains on the very
    same baseline data as the cell without, plus the special rows.
    """
    X = _training_rows(config, seed)
    check_finite("training inputs", X)
    return X


def _training_rows(config: Config, seed: int) -> jax.Array:
    """``training_inputs`` without the host-side check."""
    if config.setting == "per_theorem":
        rows = [sequences.impulses(config.L, [0])]  # constrains h_L
        if config.special:
            rows.append(sequences.impulses(config.L, config.positions))  # e.g. L-2: constrains h_2
    elif config.data_rng == "numpy":
        rows = list(
            sequences.numpy_gaussian_rows(
                seed,
                [(config.n_baseline, range(config.baseline_stop))]
                + ([(config.n_special, config.positions)] if config.special else []),
                config.L,
            )
        )
    else:
        keys = task_keys(seed)
        rows = [sequences.baseline_sequences(keys["baseline"], config.n_baseline, config.L, config.baseline_stop)]
        if config.special:
            rows.append(sequences.special_sequences(keys["special"], config.n_special, config.L, config.positions))
    if config.extra_sequences:
        rows.append(jnp.asarray(config.extra_sequences, jnp.float64))
    return jnp.concatenate(rows)


def held_out_inputs(config: Config, seed: int) -> jax.Array:
    """The SSM-in-NN test inputs ``(n_test, test_length)``, ``N(0,1)`` (docs/science.md §2c): the authors'
    ``RandomState(seed + 12)`` stream, or a ``jax.random`` key (``data_rng="jax"``)."""
    shape = (config.n_test, config.test_length)
    if config.data_rng == "numpy":
        return jnp.asarray(np.random.RandomState(seed + 12).normal(0.0, 1.0, shape))
    return jax.random.normal(task_keys(seed)["test"], shape)


def padded_rows(config: Config) -> int:
    """Rows of the GD-setting data arrays: the rows of the cell *with* special sequences.

    A cell without them gets zero rows in their place: a zero input has output 0 and teacher label
    0 (no biases anywhere), so it adds exactly nothing to the loss, its gradient or ``gamma``; the
    loss divides by the true row count ``data['n']``. Both cells then share one compiled program.
    """
    return config.n_baseline + config.n_special + len(config.extra_sequences)


def teacher_ssm(config: Config) -> DiagonalSSM:
    """The teacher SSM ``(a*, B*, C*)``: the config's ``teacher_*`` fields, or the setting's default."""
    if config.teacher_a:
        a = jnp.asarray(config.teacher_a, jnp.float64)
        ones = jnp.ones_like(a)
        B = jnp.asarray(config.teacher_B, jnp.float64) if config.teacher_B else ones
        C = jnp.asarray(config.teacher_C, jnp.float64) if config.teacher_C else ones
        return DiagonalSSM(a, B, C)
    return per_theorem_teacher(config.d) if config.setting == "per_theorem" else unit_teacher()


def teacher(config: Config):
    """The labelling function: the teacher SSM, inside docs/science.md §2c's network teacher for ``ssm_in_nn``."""
    if config.setting == "ssm_in_nn":
        return network_teacher(config.m, config.depth, ssm=teacher_ssm(config))
    return teacher_ssm(config)


def per_theorem_init(config: Config, seed: int) -> np.ndarray:
    """``a_0 = sort_desc(sd U[0,1)^d)``, ``a_0[1] = a_0[0] - diff`` (docs/science.md §2a); NumPy legacy stream."""
    a = np.sort(config.sd_A * np.random.RandomState(seed).rand(config.d))[::-1].copy()
    a[1] = a[0] - config.diff
    return a


def keras_init(config: Config, seed: int):
    """The authors' initialisation of seed ``seed`` (Keras 2.4 seeded initializers, module docstring):
    a :class:`DiagonalSSM`, or an :class:`SSMNet` for ``ssm_in_nn``. Values are float32 draws, as
    TensorFlow stores them."""
    from ..core.keras_init import seeded_normal

    d = config.d
    a = np.sort(np.abs(np.diag(seeded_normal((d, d), seed, config.sd_A)).astype(np.float64)))[::-1].copy()
    z = np.abs(seeded_normal((d,), seed, config.sd_BC).astype(np.float64))  # B (1, d) and C (d, 1) alike
    B = np.sort(z)[::-1].copy()
    C = B.copy() if config.sort_C else z[::-1].copy()
    if config.tie_init:
        # entries 0 and 1 tied; the authors' dim3/dim4 flags add near-ties 1.01 diff, 1.05 diff
        for i, f in list(zip((1, 2, 3), (1.0, 1.01, 1.05)))[: max(1, config.teacher_dim - 1)]:
            a[i], B[i] = a[0] - f * config.diff, B[0] - f * config.diff
    a, B, C = (np.float32(v).astype(np.float64) for v in (a + config.warm_init, B + config.warm_init, C))
    if not config.train_BC:
        B = C = np.ones(d)
    ssm = DiagonalSSM(jnp.asarray(a), jnp.asarray(B), jnp.asarray(C))
    if config.setting != "ssm_in_nn":
        return ssm
    m = config.m
    first = seeded_normal((m,), seed, config.sd_D).astype(np.float64)  # Keras kernel (1, m)
    hidden = seeded_normal((m, m), seed, config.sd_D).astype(np.float64).T  # Keras (in, out) -> (out, in)
    layers = (jnp.asarray(first[:, None]),) + (jnp.asarray(hidden),) * (config.depth - 1)
    return SSMNet(ssm, layers, jnp.asarray(first))  # the head (Keras (m, 1)) draws the same m values


def ssm_init(config: Config, key: jax.Array) -> DiagonalSSM:
    """docs/science.md §2b init: ``|N(0, sd)|`` sorted descending, entries 0 and 1 tied up to ``diff``, warm start."""
    ka, kb, kc = jax.random.split(key, 3)
    desc = lambda v: jnp.sort(v)[::-1]
    a = desc(jnp.abs(config.sd_A * jax.random.normal(ka, (config.d,))))
    B = desc(jnp.abs(config.sd_BC * jax.random.normal(kb, (config.d,))))
    C = jnp.abs(config.sd_BC * jax.random.normal(kc, (config.d,)))
    C = desc(C) if config.sort_C else C
    if config.tie_init:
        a, B = a.at[1].set(a[0] - config.diff), B.at[1].set(B[0] - config.diff)
    a, B = a + config.warm_init, B + config.warm_init
    if not config.train_BC:
        B = C = jnp.ones_like(a)
    return DiagonalSSM(a, B, C)


def mlp_init(config: Config, key: jax.Array, ssm: DiagonalSSM) -> SSMNet:
    """MLP weights ``N(0, sd_D)``: ``(m,1)``, ``depth-1`` times ``(m,m)``, head ``(m,)`` (docs/science.md §2c)."""
    keys = jax.random.split(key, config.depth + 1)
    shapes = [(config.m, 1)] + [(config.m, config.m)] * (config.depth - 1)
    layers = tuple(config.sd_D * jax.random.normal(k, s) for k, s in zip(keys[:-1], shapes))
    return SSMNet(ssm, layers, config.sd_D * jax.random.normal(keys[-1], (config.m,)))


# --------------------------------------------------------------------------------------------
# GD settings: loss, logging, measurement
# --------------------------------------------------------------------------------------------


def train_loss(model, data) -> jax.Array:
    """``L_train``: mean squared error over the ``data['n']`` real rows (padding rows add 0)."""
    return jnp.sum((model(data["X"]) - data["y"]) ** 2) / data["n"]


def train_loss_a_only(model, data) -> jax.Array:
    """``_loss`` with ``B`` and ``C`` held fixed: their gradients are exactly zero, so GD, the
    adaptive learning rate (zero norms) and Adam (zero moments) never move them."""
    frozen = DiagonalSSM(model.a, jax.lax.stop_gradient(model.B), jax.lax.stop_gradient(model.C))
    return train_loss(frozen, data)


def ssm_of(model) -> DiagonalSSM:
    return model.ssm if isinstance(model, SSMNet) else model


def gamma0(model, data) -> jax.Array:
    """``gamma^(0)`` of docs/science.md §1 with ``xi`` the derivative of what follows the SSM."""
    ssm = ssm_of(model)
    z = ssm(data["X"])
    if isinstance(model, SSMNet):
        f, xi = jax.jvp(model.features, (z,), (jnp.ones_like(z),))  # features act row-wise
    else:
        f, xi = z, jnp.ones_like(z)
    return metrics.gamma_coefficients(data["y"] - f, xi, data["X"], n=data["n"])[0]


def generalization_error(model, data, horizon: int, error_from: int) -> jax.Array:
    """docs/science.md §2c's relative L2 error for a network; otherwise the extrapolation error over
    ``h_k``, ``k = error_from..horizon`` (``data["h_star"]`` holds the teacher's entries for those k)."""
    if isinstance(model, SSMNet):
        return metrics.relative_l2_error(model(data["X_test"]), data["y_test"])
    ssm = ssm_of(model)
    return metrics.extrapolation_error(ssm.impulse_response(horizon)[error_from - 1 :], data["h_star"])


@functools.cache
def trajectory_log(horizon: int, error_from: int):
    def log(model, data):
        a = ssm_of(model).a
        return {
            "loss": train_loss(model, data),
            "error": generalization_error(model, data, horizon, error_from),
            "abs_a": jnp.abs(a),
            "effective_rank": metrics.effective_rank(a),
            "gamma0": gamma0(model, data),
        }

    return log


def initial_model(config: Config, seed: int):
    """The model a GD-setting seed starts from, before any ``init_jitter``: a :class:`DiagonalSSM`
    (an :class:`SSMNet` for ``ssm_in_nn``) from the Keras stream or from ``jax.random`` keys."""
    if config.init_rng == "keras":
        return keras_init(config, seed)
    keys = task_keys(seed)
    model = ssm_init(config, keys["init"])
    return mlp_init(config, keys["mlp"], model) if config.setting == "ssm_in_nn" else model


def gd_batch(config: Config):
    """Stacked (over seeds) initial models and data for the GD settings.

    Built eagerly, seed by seed: each primitive compiles once per shape and is reused by every
    later cell, which costs less than compiling one fused program per cell.
    """
    tch = teacher(config)
    rows = padded_rows(config)
    models, datas = [], []
    for seed in config.seeds:
        X = training_inputs(config, seed)
        n = X.shape[0]
        X = jnp.concatenate([X, jnp.zeros((rows - n, config.L), X.dtype)])
        model = initial_model(config, seed)
        if config.init_jitter:
            index = config.jitter_index[len(models)] if config.jitter_index else len(models)
            model = jitter_init(model, config.init_jitter, seed, index)
        if config.uses_full_kernel:
            model = (
                FullKernelSSM.from_diagonal(model, config.train_BC)
                if isinstance(model, DiagonalSSM)
                else replace(model, ssm=FullKernelSSM.from_diagonal(model.ssm, config.train_BC))
            )
        data = {"X": X, "y": tch(X), "n": jnp.asarray(float(n))}
        if config.setting == "ssm_in_nn":
            X_test = held_out_inputs(config, seed)
            data.update(X_test=X_test, y_test=tch(X_test))
        else:
            data["h_star"] = tch.impulse_response(config.horizon)[config.error_from - 1 :]
        models.append(model)
        datas.append(data)
    dtype = jnp.dtype(config.dtype)
    stack = lambda xs: jax.tree_util.tree_map(
        lambda *v: jnp.stack(v).astype(dtype) if jnp.issubdtype(v[0].dtype, jnp.floating) else jnp.stack(v), *xs
    )
    return stack(models), stack(datas)


def jitter_init(model, scale: float, seed: int, index: int):
    """``model`` with every floating-point parameter ``w`` replaced by ``w * (1 + scale * z)``,
    ``z ~ N(0, 1)`` from a key of ``(seed, index)`` (``index``: the seed's position in
    ``config.seeds``, so a repeated seed gets a fresh perturbation each time, or its entry of
    ``config.jitter_index``).

    For sensitivity studies: ``scale ~ 1e-7`` (float32 rounding) shows whether a run's outcome is
    decided by rounding (see docs/findings/table1.md, ``init_jitter``).
    """
    leaves, tree = jax.tree_util.tree_flatten(model)
    # fold_in(seed key, 7919 + index): a stream of its own, apart from the data/init keys of task_keys(seed)
    keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 7919 + index), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree,
        [
            w * (1 + scale * jax.random.normal(k, w.shape, w.dtype)) if jnp.issubdtype(w.dtype, jnp.floating) else w
            for w, k in zip(leaves, keys)
        ],
    )


@functools.partial(jax.jit, static_argnums=(2, 3))
def _final_measures(models, datas, horizon: int, error_from: int):
    ssm = ssm_of(models)
    return (
        jax.vmap(lambda m, d: generalization_error(m, d, horizon, error_from))(models, datas),
        jax.vmap(metrics.effective_rank)(ssm.a),
    )


@in_float64
def run_gd(config: Config) -> Record:
    models, datas = gd_batch(config)
    res = train_batched(
        train_loss if config.train_BC or config.uses_full_kernel else train_loss_a_only,
        models,
        datas,
        runtime_lr_optimizer(config.optimizer, config.lr, config.uses_full_kernel),
        config.stop_rule(),
        config.log_every,
        trajectory_log(config.horizon, config.error_from),
    )
    final, rank = _final_measures(res.params, datas, config.horizon, config.error_from)
    measured, _ = _final_measures(res.measured, datas, config.horizon, config.error_from)
    n_logs = int(np.max(np.asarray(res.n_logs)))
    a_final = np.asarray(ssm_of(res.params).a)
    seeds_metrics = {
        # read where the authors read it (config.measured_update after the fit; the end if never fitted)
        "error": np.asarray(measured).tolist(),
        "measured_step": np.asarray(res.measured_step).tolist(),
        "error_end": np.asarray(final).tolist(),
        "train_loss": np.asarray(res.final_loss).tolist(),
        "steps": np.asarray(res.steps).tolist(),
        "hit_step": np.asarray(res.hit_step).tolist(),
        "reached_eps": (np.asarray(res.hit_step) >= 0).tolist(),
        "diverged": np.asarray(res.diverged).tolist(),
        "diverged_step": np.asarray(res.diverged_step).tolist(),
        "stalled": np.asarray(res.stalled).tolist(),
        "final_effective_rank": np.asarray(rank).tolist(),
    }
    arrays = {
        "log_steps": np.asarray(res.log_steps)[:, :n_logs],
        "a_final": a_final,
        "a_measured": np.asarray(ssm_of(res.measured).a),
    }
    arrays.update({f"log_{k}": np.asarray(v)[:, :n_logs] for k, v in res.logs.items()})
    return Record(seeds_metrics, arrays)


# --------------------------------------------------------------------------------------------
# per Theorem: gradient flow
# --------------------------------------------------------------------------------------------


def _bucket(n: int, size: int) -> int:
    return size * math.ceil(n / size)


@in_float64
def run_flow(config: Config) -> Record:
    tch = teacher(config)
    problems = []
    for seed in config.seeds:
        X = training_inputs(config, seed)
        problems.append(
            flow.FlowProblem(
                a0=jnp.asarray(per_theorem_init(config, seed)),
                w=jnp.ones((config.d,)),
                X=X,
                y=tch(X),
                row_weight=jnp.ones((X.shape[0],)),
                t_final=jnp.asarray(float(config.t_final)),
            )
        )
    # Pad to bucketed sizes so cells of different d, L, N share one compiled solver; padding
    # does not change the flow (see flow.pad_problems).
    n_rows = max(p.X.shape[0] for p in problems)
    batch = flow.pad_problems(problems, d=_bucket(config.d, 32), L=_bucket(config.L, 16), N=_bucket(n_rows, 4))
    res = flow.solve_flow(batch, config.rtol, config.atol)
    a = np.asarray(res.a)[:, : config.d]
    data = {"h_star": tch.impulse_response(config.horizon)[config.error_from - 1 :]}
    errors = jax.vmap(
        lambda ai: generalization_error(
            DiagonalSSM(ai, jnp.ones_like(ai), jnp.ones_like(ai)), data, config.horizon, config.error_from
        )
    )(jnp.asarray(a))
    losses = jax.vmap(flow.flow_loss)(jnp.asarray(res.a), batch)
    seeds_metrics = {
        "error": np.asarray(errors).tolist(),
        "train_loss": np.asarray(losses).tolist(),
        "t_reached": np.asarray(res.t).tolist(),
        "solver_steps": np.asarray(res.num_steps).tolist(),
        "solved": np.asarray(res.success).tolist(),
        # fitted = the train loss reached eps, not merely the solver reaching t_final (a flow that
        # never left its plateau ends at t_final too)
        "reached_eps": (np.asarray(losses) <= config.eps).tolist(),
        "final_effective_rank": np.asarray(jax.vmap(metrics.effective_rank)(jnp.asarray(a))).tolist(),
    }
    return Record(seeds_metrics, {"a_final": a})


@in_float64
def run(config: Config) -> Record:
    """Train every seed of ``config`` and measure (docs/science.md §2). Returns per-seed metrics and arrays."""
    start = time.perf_counter()
    record = run_flow(config) if config.setting == "per_theorem" else run_gd(config)
    m = record.metrics
    # a seed whose training diverged (loss NaN/inf) or whose error is not finite says nothing about the
    # implicit bias: flagged per seed, left out of the mean (None when no seed is left), counted
    trained_diverged = m.get("diverged", [False] * len(m["error"]))  # gradient flow has no such flag
    diverged = [bool(d) or not math.isfinite(e) for d, e in zip(trained_diverged, m["error"])]
    kept = [e for e, d in zip(m["error"], diverged) if not d]
    mean, std = mean_std(kept) if kept else (None, None)
    m["diverged"] = diverged
    record.metrics = {
        "error_mean": mean,
        "error_std": std,
        "n_diverged": sum(diverged),
        "seeds": list(config.seeds),
        **m,
        "compute_seconds": time.perf_counter() - start,
    }
    return record


# --------------------------------------------------------------------------------------------
# dynamics (docs/science.md §3): seed rule on the initialisation, summary numbers of a trajectory
# --------------------------------------------------------------------------------------------


def top_init_gap(config: Config, seed: int) -> float:
    """The smallest relative gap ``1 - |a|_(i+1) / |a|_(i)``, ``i = 1..d*``, among the ``d* + 1``
    largest initial magnitudes of ``seed`` (``d* = config.teacher_dim``): how close the entries
    greedy learning must take one at a time, and their runner-up, start to one another."""
    model = initial_model(config, seed)
    a = np.sort(np.abs(np.asarray(getattr(model, "ssm", model).a)))[::-1][: config.teacher_dim + 1]
    return float(np.min(1.0 - a[1:] / a[:-1]))


def separated_seeds(config: Config, min_gap: float, n: int = 4) -> tuple[int, ...]:
    """The first ``n`` seeds from 0 whose :func:`top_init_gap` is at least ``min_gap`` (a rule on the
    initialisation alone, applied before any training)."""
    if not 0 <= min_gap < 1:  # a relative gap between positive magnitudes is below 1: no seed would do
        raise ValueError(f"min_gap must be in [0, 1), got {min_gap}")
    seeds: list[int] = []
    seed = 0
    while len(seeds) < n:
        if top_init_gap(config, seed) >= min_gap:
            seeds.append(seed)
        seed += 1
    return tuple(seeds)


def first_crossing(steps: np.ndarray, values: np.ndarray, level: float) -> int:
    """The first logged update at which ``values >= level``; -1 if never. ``steps, values: (T,)``
    (unused rows: ``steps < 0`` or NaN values)."""
    ok = (steps >= 0) & np.isfinite(values) & (values >= level)
    return int(steps[np.argmax(ok)]) if ok.any() else -1


def summarize(arrays: dict[str, np.ndarray], n_top: int = 4) -> dict[str, list]:
    """Per-seed summary numbers of docs/science.md §3 from a run's arrays (``log_abs_a: (S, T, d)``,
    ``log_steps: (S, T)``, ``log_gamma0: (S, T)``, ``a_measured: (S, d)``).

    The "final" spectrum is read at the measurement point (``a_measured``: where the authors' notebooks
    print their "Final results", see :func:`last_logged_update`), ``a_final`` for runs stored without it."""
    a_final = np.abs(arrays["a_measured"] if "a_measured" in arrays else arrays["a_final"])
    steps, abs_a, gamma0 = arrays["log_steps"], arrays["log_abs_a"], arrays["log_gamma0"]
    out: dict[str, list] = {
        "n_above_0.1": [],
        "n_above_0.5": [],
        "jump_step": [],
        "max_abs_gamma0": [],
        "top_final": [],
        "half_crossing": [],
    }
    for s in range(a_final.shape[0]):
        used = steps[s] >= 0
        order = np.argsort(-a_final[s])
        out["n_above_0.1"].append(int((a_final[s] > 0.1).sum()))
        out["n_above_0.5"].append(int((a_final[s] > 0.5).sum()))
        out["jump_step"].append(first_crossing(steps[s][used], abs_a[s][used].max(axis=-1), 0.5))
        out["max_abs_gamma0"].append(float(np.abs(gamma0[s][used]).max()))
        top = order[:n_top]
        out["top_final"].append([float(a_final[s, i]) for i in top])
        out["half_crossing"].append([first_crossing(steps[s], abs_a[s, :, i], 0.5 * a_final[s, i]) for i in top])
    return out


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------

F64, F32, I32 = 8, 4, 4


def footprint_terms(c: Config) -> dict[str, int]:
    """The largest arrays a run of ``c`` holds at once, description -> bytes (a lower bound of its peak;
    :mod:`implicitbias.runtime.footprint`). For gradient flow the
    stiff solver's ``(d, d)`` Jacobian and its factorisation per seed; for GD the Keras init draws
    (``d^2`` Philox words, one seed at a time), the full ``(d, d)`` kernels with their gradients and
    updates (adaptive rate), the trajectory logs (``max_steps / log_every + 1`` rows of ``d + 4`` values per
    seed, allocated up front), the ``(horizon, d)`` powers, the data and, in a network, the held-out
    inputs and the ``(m, m)`` layers with their Adam moments."""
    S, d = len(c.seeds), c.d
    out: dict[str, int] = {}
    if c.setting == "per_theorem":
        db = 32 * math.ceil(d / 32)  # the flow pads d to a multiple of 32 (teacher_student.run_flow)
        out[f"gradient-flow Jacobians (d, d) and their factorisations, d={d} x {S} seeds"] = 2 * S * db * db * F64
        out[f"impulse-response powers (horizon, d), d={d} x {S} seeds"] = S * max(c.horizon, c.L) * d * F64
        return out
    b = F64 if c.dtype == "float64" else F32
    if c.init_rng == "keras":
        out[f"Keras initial draws of a (d, d) matrix, d={d}"] = 8 * d * d  # uint64 Philox words, one seed at a time
    if c.uses_full_kernel:
        # the kernels, their gradients and the projected updates (peak RSS of beyond_theorem/L6 at d=3000,
        # max_steps=300: 1.0 GiB above a d=10 run, this count 0.9 GiB)
        out[f"full (d, d) kernels, gradients and updates, d={d} x {S} seeds"] = 3 * S * d * d * b
    rows = math.ceil(c.max_steps / c.log_every) + 1
    out[f"trajectory logs of {rows} rows (max_steps / log_every) x (d + 4) values, d={d} x {S} seeds"] = (
        S * rows * ((d + 4) * b + I32)
    )
    out[f"impulse-response powers (horizon, d) and their gradient, d={d} x {S} seeds"] = (
        2 * S * max(c.horizon, c.L) * d * b
    )
    n = c.n_baseline + c.n_special + len(c.extra_sequences)
    out[f"training data ({n}, L) x {S} seeds"] = S * n * (c.L + 1) * b
    if c.setting == "ssm_in_nn":
        out[f"held-out inputs (n_test, test_length) and the network on them, n_test={c.n_test} x {S} seeds"] = (
            S * c.n_test * (c.test_length + 1 + c.m) * b
        )
        out[f"network layers (m, m) with gradients and Adam moments, m={c.m} x {S} seeds"] = (
            4 * S * c.depth * c.m * c.m * b
        )
    return out


def footprint_bytes(config: Config) -> int:
    """The sum of :func:`footprint_terms`."""
    return int(sum(footprint_terms(config).values()))
