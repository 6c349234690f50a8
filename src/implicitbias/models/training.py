"""Compiled minibatch training and evaluation of sequence classifiers (docs/science.md §4).

``train_classifier(model, x, y, cfg, key=None) -> (model, history)`` runs the whole training in
one jitted call: ``lax.scan`` over epochs, each a ``lax.scan`` over minibatches of a fresh random
permutation (the last incomplete batch is dropped). AdamW with a linear warm-up and cosine decay,
gradient clipping by global norm; weight decay applies to the weight matrices of linear layers
only (not to SSM parameters, biases or norms). Everything is float32 and deterministic: the same
model, data, config and key give the same numbers.

``trainer(cfg)`` binds the config: ``train_fn(model, x, y, key)``.

The authors' victim training (docs/findings/realworld-authors.md; their ``forest/victims/training.py``,
``get_optimizers`` and
``run_step``) is available through the config: ``schedule="cosine_epochs"`` (``CosineAnnealingLR``
stepped once per epoch, ``T_max = schedule_epochs or epochs``, ``eta_min = min_lr_frac * lr``, no
warm-up; set ``grad_clip=None``), ``decay="all"`` (AdamW over every parameter), ``ssm_lr`` (their S4D
kernel parameters ``log_dt``, ``log_A_real``, ``A_imag`` in their own group at that rate, no weight
decay), ``augment`` (the random shift/flip of :mod:`implicitbias.datasets.views` on every minibatch),
and a model built with ``dropout > 0`` (masks drawn per step). These go through :func:`fit_epochs`,
which can also stop and resume (optimizer state and schedule carried: the authors' "continue
training until the loss is reached"); the default config runs the original loop unchanged.
``evaluate(model, x, y) -> {"loss", "accuracy"}`` and ``predict_logits(model, x)`` work in fixed-size
chunks so memory stays bounded. ``classification_loss(model, x, y)`` is the differentiable mean
cross-entropy used for training (the poisoning attack matches its gradients).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

F32 = jnp.float32


@dataclass(frozen=True)
class TrainConfig:
    """Minibatch AdamW training. ``warmup_frac``: share of steps with linear warm-up before the
    cosine decay to 0; ``grad_clip``: global-norm clip (``None`` or 0 for none)."""

    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    grad_clip: float | None = 1.0
    seed: int = 0
    schedule: str = "warmup_cosine"  # warmup_cosine (per step, to 0) | cosine_epochs (the authors')
    min_lr_frac: float = 0.0  # cosine_epochs: eta_min = min_lr_frac * lr
    schedule_epochs: int = 0  # cosine_epochs: T_max in epochs (0: epochs)
    decay: str = "linear"  # linear (weight matrices of Linear layers) | all (every parameter)
    ssm_lr: float = 0.0  # > 0: S4D log_dt/log_A_real/A_imag at this rate without weight decay
    augment: tuple = ()  # ImageView fields (layout, C, H, W, Cs): the authors' shift/flip per minibatch

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 or None, got {self.grad_clip}")
        if self.schedule not in ("warmup_cosine", "cosine_epochs"):
            raise ValueError(f"schedule must be 'warmup_cosine' or 'cosine_epochs', got {self.schedule!r}")
        if not 0 <= self.min_lr_frac < 1:
            raise ValueError(f"min_lr_frac must be in [0, 1), got {self.min_lr_frac}")
        if not isinstance(self.schedule_epochs, int) or self.schedule_epochs < 0:
            raise ValueError(f"schedule_epochs must be an integer >= 0, got {self.schedule_epochs!r}")
        if self.decay not in ("linear", "all"):
            raise ValueError(f"decay must be 'linear' or 'all', got {self.decay!r}")
        if self.ssm_lr < 0:
            raise ValueError(f"ssm_lr must be >= 0, got {self.ssm_lr}")
        if self.augment and len(self.augment) != 5:
            raise ValueError(f"augment must be () or (layout, C, H, W, Cs), got {self.augment!r}")

    @property
    def plain(self) -> bool:
        """The original loop suffices (no authors' option set)."""
        return (self.schedule, self.decay, self.ssm_lr, self.augment) == ("warmup_cosine", "linear", 0.0, ())


def _check_data(x, y=None, n_classes: int | None = None):
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (N, L, d_input), got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("x holds no examples")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or inf")
    if y is None:
        return x, None
    y = np.asarray(y)
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},) to match x, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    if n_classes is not None and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got range [{y.min()}, {y.max()}]")
    return x, y


def _n_classes(model) -> int:
    return model.head.out_features


def classification_loss(
    model, x: jax.Array, y: jax.Array, key: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy and accuracy of ``model`` on a batch ``x (B, L, d_input)``, ``y (B,)``;
    with ``key``, the model's dropout is on (one key per example)."""
    if key is None:
        logits = jax.vmap(model)(x)
    else:
        logits = jax.vmap(model)(x, jax.random.split(key, x.shape[0]))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    acc = jnp.mean(jnp.argmax(logits, -1) == y)
    return loss, acc


def _decay_mask(params):
    """True for the weight matrix of every ``eqx.nn.Linear``, False elsewhere."""

    def per_node(node):
        if isinstance(node, eqx.nn.Linear):
            m = jax.tree.map(lambda _: False, node)
            return eqx.tree_at(lambda lin: lin.weight, m, True)
        return False

    return jax.tree.map(per_node, params, is_leaf=lambda n: isinstance(n, eqx.nn.Linear))


def _declares_ssm_parameters(node) -> bool:
    return isinstance(node, eqx.Module) and hasattr(type(node), "ssm_parameters")


def _ssm_labels(params):
    """``"ssm"`` for the parameters a block names in its class attribute ``ssm_parameters`` (S4D's kernel:
    the authors' ``_optim`` group, :class:`~implicitbias.models.s4d.S4DBlock`), ``"rest"`` elsewhere."""

    def per_node(node):
        m = jax.tree.map(lambda _: "rest", node)
        if _declares_ssm_parameters(node):
            for name in type(node).ssm_parameters:
                m = eqx.tree_at(lambda b, name=name: getattr(b, name), m, "ssm")
        return m

    return jax.tree.map(per_node, params, is_leaf=_declares_ssm_parameters)


def epoch_cosine(lr: float, min_lr: float, t_max: int, steps_per_epoch: int) -> optax.Schedule:
    """PyTorch's ``CosineAnnealingLR(T_max=t_max, eta_min=min_lr)`` stepped once per epoch:
    ``min_lr + (lr - min_lr) (1 + cos(pi e / t_max)) / 2`` during epoch ``e`` (closed form)."""

    def f(count):
        e = (count // steps_per_epoch).astype(jnp.float32)
        return min_lr + (lr - min_lr) * (1 + jnp.cos(jnp.pi * e / t_max)) / 2

    return f


def classifier_optimizer(
    cfg: TrainConfig, total_steps: int, steps_per_epoch: int | None = None
) -> optax.GradientTransformation:
    """AdamW with warm-up + cosine decay (or the authors' per-epoch cosine), optional global-norm clipping."""
    if cfg.schedule == "cosine_epochs":
        spe = steps_per_epoch or max(1, total_steps // cfg.epochs)
        t_max = cfg.schedule_epochs or cfg.epochs
        min_lr = cfg.min_lr_frac * cfg.lr
        schedule = epoch_cosine(cfg.lr, min_lr, t_max, spe)
        ssm_schedule = epoch_cosine(cfg.ssm_lr, min_lr, t_max, spe) if cfg.ssm_lr else None
    else:
        warmup = int(cfg.warmup_frac * total_steps)
        schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total_steps, warmup + 1), 0.0)
        ssm_schedule = (
            optax.warmup_cosine_decay_schedule(0.0, cfg.ssm_lr, warmup, max(total_steps, warmup + 1), 0.0)
            if cfg.ssm_lr
            else None
        )
    mask = _decay_mask if cfg.decay == "linear" else None
    adamw = optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=mask)
    if ssm_schedule is not None:
        adamw = optax.multi_transform({"rest": adamw, "ssm": optax.adam(ssm_schedule)}, _ssm_labels)
    if cfg.grad_clip:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)
    return adamw


class FitState(NamedTuple):
    """Where :func:`fit_epochs` stopped: the optimizer state (its step count drives the schedule) and
    the epochs done."""

    opt_state: Any
    epochs_done: int


def _has_dropout(model) -> bool:
    return bool(getattr(model, "dropout", 0.0))


@eqx.filter_jit
def _fit_epochs(model, opt_state, x, y, key, cfg: TrainConfig, steps_per_epoch: int, batch_size: int,
                start_epoch, n_epochs: int, dropout: bool, keys: str = "fold_in"):
    """The one training loop: ``n_epochs`` epochs from ``start_epoch``, a ``lax.scan`` over epochs of a
    ``lax.scan`` over minibatches. ``keys`` is how epoch ``e`` draws its randomness from ``key``:

    * ``"split"``: its permutation from ``jax.random.split(key, cfg.epochs)[e]``, nothing else (the plain
      recipe, :func:`train_classifier` without augmentation or dropout; always all ``cfg.epochs``);
    * ``"fold_in"``: ``fold_in(key, e)`` split into the permutation's key and one key per step
      (augmentation, dropout), so a run resumed at epoch ``e`` draws what one call would have
      (:func:`fit_epochs`).

    Both schedules are kept as they are because stored runs were made with them."""
    from ..datasets.views import ImageView, augment_sequences

    params, static = eqx.partition(model, eqx.is_inexact_array)
    if keys == "split":
        opt = classifier_optimizer(cfg, cfg.epochs * steps_per_epoch)
        epoch_keys = jax.random.split(key, cfg.epochs)
    else:
        opt = classifier_optimizer(cfg, (cfg.schedule_epochs or cfg.epochs) * steps_per_epoch, steps_per_epoch)
    view = ImageView(*cfg.augment) if cfg.augment else None
    n = x.shape[0]

    def loss_fn(p, xb, yb, k):
        if k is None:
            return classification_loss(eqx.combine(p, static), xb, yb)
        k_aug, k_drop = jax.random.split(k)
        if view is not None:
            xb = augment_sequences(xb, k_aug, view)
        return classification_loss(eqx.combine(p, static), xb, yb, k_drop if dropout else None)

    def step(carry, inp):
        p, s = carry
        idx, k = inp
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, x[idx], y[idx], k)
        updates, s = opt.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), (loss, acc)

    def epoch(carry, e):
        if keys == "split":
            k_perm, step_keys = epoch_keys[e], None
        else:
            k_perm, k_steps = jax.random.split(jax.random.fold_in(key, e))
            step_keys = jax.random.split(k_steps, steps_per_epoch)
        perm = jax.random.permutation(k_perm, n)[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)
        carry, (losses, accs) = jax.lax.scan(step, carry, (perm, step_keys))
        return carry, (losses.mean(), accs.mean())

    if opt_state is None:
        opt_state = opt.init(params)
    epochs = start_epoch + jnp.arange(n_epochs)
    (params, opt_state), (losses, accs) = jax.lax.scan(epoch, (params, opt_state), epochs)
    return eqx.combine(params, static), opt_state, losses, accs


def fit_epochs(model, x, y, cfg: TrainConfig, key: jax.Array, n_epochs: int | None = None,
               state: FitState | None = None):
    """``n_epochs`` (default ``cfg.epochs``) epochs of the authors'-style loop from ``state`` (``None``:
    a fresh optimizer); returns ``(model, history, state)``. Epoch ``e`` (counted over resumes) draws its
    permutation, augmentation and dropout from ``fold_in(key, e)``, so 3 + 2 epochs equal 5 in one call.
    ``history`` as in :func:`train_classifier`."""
    x, y = _check_data(x, y, _n_classes(model))
    n_epochs = cfg.epochs if n_epochs is None else n_epochs
    if not isinstance(n_epochs, int) or n_epochs < 1:
        raise ValueError(f"n_epochs must be a positive integer, got {n_epochs!r}")
    batch_size = min(cfg.batch_size, x.shape[0])
    steps_per_epoch = x.shape[0] // batch_size
    start = time.perf_counter()
    x, y = jnp.asarray(x, F32), jnp.asarray(y, jnp.int32)
    done = 0 if state is None else state.epochs_done
    model, opt_state, losses, accs = _fit_epochs(
        model, None if state is None else state.opt_state, x, y, key, cfg, steps_per_epoch, batch_size,
        jnp.asarray(done, jnp.int32), n_epochs, _has_dropout(model),
    )
    losses, accs = np.asarray(losses), np.asarray(accs)
    history = {
        "loss": losses,
        "accuracy": accs,
        "steps": n_epochs * steps_per_epoch,
        "batch_size": batch_size,
        "time_s": time.perf_counter() - start,
        "diverged": bool(not np.all(np.isfinite(losses))),
    }
    return model, history, FitState(opt_state, done + n_epochs)


def train_classifier(model, x, y, cfg: TrainConfig = TrainConfig(), key: jax.Array | None = None):
    """Train ``model`` on ``x (N, L, d_input)``, integer labels ``y (N,)``; return ``(model, history)``.

    ``key`` drives the minibatch order; by default ``jax.random.PRNGKey(cfg.seed)``. The model's
    initialisation is whatever ``model`` holds (build it with ``make_classifier(config, seed)``; keep
    it to retrain from the same initialisation). ``history``: ``loss`` and ``accuracy`` (NumPy,
    one entry per epoch: the mean over that epoch's minibatches, measured before each update),
    ``steps`` (updates taken), ``batch_size`` (effective: ``min(cfg.batch_size, N)``), ``time_s``
    (wall time including compilation) and ``diverged`` (a non-finite loss occurred).
    """
    key = jax.random.PRNGKey(cfg.seed) if key is None else key
    if not cfg.plain or _has_dropout(model):
        model, history, _ = fit_epochs(model, x, y, cfg, key)
        return model, history
    x, y = _check_data(x, y, _n_classes(model))
    batch_size = min(cfg.batch_size, x.shape[0])
    steps_per_epoch = x.shape[0] // batch_size
    start = time.perf_counter()
    x, y = jnp.asarray(x, F32), jnp.asarray(y, jnp.int32)
    model, _, losses, accs = _fit_epochs(model, None, x, y, key, cfg, steps_per_epoch, batch_size,
                                         jnp.asarray(0, jnp.int32), cfg.epochs, False, keys="split")
    losses, accs = np.asarray(losses), np.asarray(accs)
    history = {
        "loss": losses,
        "accuracy": accs,
        "steps": cfg.epochs * steps_per_epoch,
        "batch_size": batch_size,
        "time_s": time.perf_counter() - start,
        "diverged": bool(not np.all(np.isfinite(losses))),
    }
    return model, history


def trainer(cfg: TrainConfig = TrainConfig()):
    """``train_fn(model, x, y, key) -> (model, history)``: ``train_classifier`` with ``cfg`` bound.

    For code that takes a training procedure with the key as the fourth positional argument (the
    poisoning retrain loop); ``functools.partial(train_classifier, cfg=cfg)`` would not do, since
    a fourth positional argument lands on ``cfg``.
    """

    def train_fn(model, x, y, key=None):
        return train_classifier(model, x, y, cfg, key)

    return train_fn


@eqx.filter_jit
def _eval_chunks(model, xs, ys, mask):
    def body(carry, chunk):
        xb, yb, mb = chunk
        logits = jax.vmap(model)(xb)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
        correct = (jnp.argmax(logits, -1) == yb).astype(F32)
        return (carry[0] + jnp.sum(losses * mb), carry[1] + jnp.sum(correct * mb)), logits

    (loss_sum, correct), logits = jax.lax.scan(body, (jnp.zeros((), F32), jnp.zeros((), F32)), (xs, ys, mask))
    return loss_sum, correct, logits


def _chunked(x, y, batch_size):
    n = x.shape[0]
    bs = min(batch_size, n)
    nb = -(-n // bs)
    pad = nb * bs - n
    xs = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]).reshape((nb, bs) + x.shape[1:])
    ys = np.concatenate([y, np.zeros(pad, y.dtype)]).reshape(nb, bs)
    mask = (np.arange(nb * bs) < n).astype(np.float32).reshape(nb, bs)
    return jnp.asarray(xs, F32), jnp.asarray(ys, jnp.int32), jnp.asarray(mask)


def evaluate(model, x, y, batch_size: int = 512) -> dict:
    """Mean cross-entropy ``loss`` and ``accuracy`` (Python floats) of ``model`` on ``(x, y)``."""
    x, y = _check_data(x, y, _n_classes(model))
    loss_sum, correct, _ = _eval_chunks(model, *_chunked(x, y, batch_size))
    n = x.shape[0]
    return {"loss": float(loss_sum) / n, "accuracy": float(correct) / n}


def predict_logits(model, x, batch_size: int = 512) -> np.ndarray:
    """Logits ``(N, n_classes)`` of ``model`` on ``x (N, L, d_input)`` (NumPy float32)."""
    x, _ = _check_data(x)
    y = np.zeros(x.shape[0], np.int32)
    _, _, logits = _eval_chunks(model, *_chunked(x, y, batch_size))
    return np.asarray(logits).reshape(-1, logits.shape[-1])[: x.shape[0]]
