"""The authors' Table 1 procedure for the GD settings, in TensorFlow/Keras: a reference run.

Re-typed (not copied) from the paper's public code, github.com/YoniSlutzky98/imp-bias-ssm-poison
(``common/*.py`` and the notebooks ``standalone_ssm_poison_experiments.ipynb`` and
``ssm_in_nn_poison_experiments.ipynb``), so that its numbers can be regenerated and compared with
``implicitbias`` (``tests/test_authors_keras.py``). Needs only tensorflow, tf_keras and numpy, and
does not import ``implicitbias``; see README.md in this folder.

    python table1_keras.py --cell beyond_theorem/L10 --special --seeds 1200,1201,1203,1204 --out DIR

writes ``DIR/<cell>.json`` (``/`` in the cell name becomes ``__``) and ``DIR/<cell>.log``.

What each seed does (the authors' ``train_helper`` with the notebook's settings):
* data: ``np.random.seed(seed)``; each baseline row's nonzero positions get ``np.random.normal``
  draws, row by row, then each special row's (``common/data.py:generate_inputs``); labels are the
  teacher Keras model's float32 outputs; network test inputs ``np.random.seed(seed + 12)``, normal
  ``(2000, 40, 1)``; standalone "test" inputs the 40 one-hot sequences of length 40;
* model: ``SimpleRNN(d)`` (linear, no bias, recurrent kernel projected onto its diagonal after every
  update), ``Dense(1)``, then for the network ``depth`` ``Dense(m, relu)`` and ``Dense(1)``, no biases;
  every initial weight is ``tf.random.stateless_normal(shape, seed=[seed, 0]) * sd`` (what a seeded
  Keras 2.4 ``RandomNormal`` draws); then ``diag(A)`` and ``B`` sorted descending by magnitude,
  ``C <- |C|`` reversed (the authors' sort/flip of a ``(d, 1)`` array), entries 0/1 tied up to
  ``diff``, ``warm_init`` added to ``diag(A)`` and ``B`` (``common/train.py``, ``common/model.py``);
* optimiser: beyond the Theorem, SGD with the adaptive rate (``common/scheduler.py``:
  ``G <- 0.8 G + 0.2 * sum of the gradient norms`` over all trainable arrays, the full ``(d, d)``
  recurrent kernel included; ``lr = lr0 / (sqrt(G / (1 - 0.8^(step+1))) + 1e-6)``); in the network,
  Keras Adam. Both the Keras 2.4 (``OptimizerV2``) versions: ``tf_keras.optimizers.legacy``;
* training: ``model.fit`` with one full batch per epoch until the train loss (recomputed after the
  epoch's update, ``StoppingCallback``) is ``<= eps`` (at most ``1e6`` epochs), then a second
  ``fit`` of ``epochs_after_opt`` epochs with the same optimiser state; a logging callback per fit
  records, at 0-based epochs ``% 100 == 0``, the train loss, the generalization error and ``|a|``
  (``LoggingCallback``). The notebooks print the post-optimum callback's last logged error, i.e.
  after update 1401 of 1500 (4901 of 5000); this script also measures it after the last update.

Deviations, all rounding-level: ``fit`` reorders the single batch each epoch (``shuffle=True``); the
authors never seed TensorFlow, so that order (and with it float32 rounding) differed run to run.
Here TensorFlow's global seed is set to the run's seed before each seed (``--shuffle none`` keeps
the natural order), TensorFlow runs on one thread with oneDNN off, and the per-epoch stopping
check runs the model through ``tf.function`` rather than eagerly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

# The notebooks' settings per cell ("diff" written as they write it). Without/with special
# sequences share everything except, in ssm_in_nn/L10, the learning rate.
_STANDALONE = dict(kind="beyond_theorem", warm_init=0.1, extra=1500, n_baseline=8, n_special=10, eps=0.01)
_NETWORK = dict(kind="ssm_in_nn", warm_init=0.001, extra=5000, n_baseline=20, n_special=20, depth=2, n_test=2000)
CELLS = {
    "beyond_theorem/L6": dict(
        _STANDALONE,
        L=6,
        d=10,
        sd_A=1e-3,
        sd_BC=1e-3,
        baseline_stop=2,
        diff=0.05 / np.exp(5 * np.log10(1 / 1e-3)),
        lr=0.01,
        lr_special=0.01,
        seeds=(200, 201, 204, 205),
    ),
    "beyond_theorem/L10": dict(
        _STANDALONE,
        L=10,
        d=20,
        sd_A=1e-2,
        sd_BC=1e-3,
        baseline_stop=7,
        diff=0.05 / np.exp(3 * np.log10(1 / 1e-2)),
        lr=0.001,
        lr_special=0.001,
        seeds=(1200, 1201, 1203, 1204),
    ),
    "ssm_in_nn/L6": dict(
        _NETWORK,
        L=6,
        d=10,
        m=15,
        sd_A=0.01,
        sd_BC=0.01,
        sd_D=0.03,
        baseline_stop=2,
        eps=0.01,
        diff=0.05 / np.exp(0.5 * np.log10(1 / 0.01)),
        lr=0.01,
        lr_special=0.01,
        seeds=(4540, 4541, 4543, 4545),
    ),
    "ssm_in_nn/L10": dict(
        _NETWORK,
        L=10,
        d=20,
        m=25,
        sd_A=1e-3,
        sd_BC=1e-3,
        sd_D=0.1,
        baseline_stop=7,
        eps=0.05,
        diff=0.05 / np.exp(2 * np.log10(1 / 1e-3)),
        lr=0.01,
        lr_special=5e-5,
        seeds=(4540, 4543, 4544, 4545),
    ),
}
EXT_LENGTH = 40
BETA, SOFT = 0.8, 1e-6


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def training_inputs(cfg: dict, special: bool, seed: int) -> np.ndarray:
    """``(N, L, 1)`` float64: the global NumPy stream seeded with ``seed`` fills, row by row, the
    baseline rows' positions ``0:baseline_stop`` and then the special rows' position ``L-2``."""
    L = cfg["L"]
    groups = [(cfg["n_baseline"], np.arange(cfg["baseline_stop"]))]
    if special:
        groups.append((cfg["n_special"], np.array([L - 2])))
    np.random.seed(seed)
    rows = []
    for count, where in groups:
        for _ in range(count):
            row = np.zeros((L, 1))
            row[where, :] = np.random.normal(0, 1, size=(len(where), 1))
            rows.append(row)
    return np.stack(rows)


def test_inputs(cfg: dict, seed: int) -> np.ndarray:
    """Inputs the generalization error is measured on, ``(n, 40, 1)``."""
    if cfg["kind"] == "beyond_theorem":
        return np.eye(EXT_LENGTH)[:, :, None]  # one-hot at every position: the outputs are h_40 .. h_1
    np.random.seed(seed + 12)
    return np.random.normal(0, 1, (cfg["n_test"], EXT_LENGTH, 1))


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------


class KeepDiagonal(keras.constraints.Constraint):
    def __call__(self, w):
        return tf.linalg.diag(tf.linalg.diag_part(w))


def build_model(cfg: dict, state_dim: int, length: int) -> keras.Sequential:
    """SSM (``SimpleRNN`` + ``Dense(1)``), followed for the network by ReLU layers and a linear head.
    Weight order of ``get_weights()``: ``B (1, d)``, ``A (d, d)``, ``C (d, 1)``, then the MLP's."""
    layers = [
        keras.Input(shape=(length, 1)),
        keras.layers.SimpleRNN(
            state_dim, use_bias=False, activation="linear", return_sequences=False, recurrent_constraint=KeepDiagonal()
        ),
        keras.layers.Dense(1, use_bias=False, activation="linear"),
    ]
    if cfg["kind"] == "ssm_in_nn":
        layers += [keras.layers.Dense(cfg["m"], use_bias=False, activation="relu") for _ in range(cfg["depth"])]
        layers.append(keras.layers.Dense(1, use_bias=False, activation="linear"))
    return keras.Sequential(layers)


def teacher_weights(cfg: dict) -> list[np.ndarray]:
    """``a* = B* = C* = 1``; network: first layer ones, hidden identity, head 0.5."""
    w = [np.ones((1, 1)), np.ones((1, 1)), np.ones((1, 1))]
    if cfg["kind"] == "ssm_in_nn":
        m = cfg["m"]
        w += [np.ones((1, m))] + [np.eye(m)] * (cfg["depth"] - 1) + [np.full((m, 1), 0.5)]
    return w


def keras24_normal(shape, seed: int, sd: float) -> np.ndarray:
    """A seeded Keras 2.4 ``RandomNormal(0, sd, seed)``: the prefix of one stateless stream."""
    return tf.random.stateless_normal(shape, seed=[seed, 0], mean=0.0, stddev=sd, dtype=tf.float32).numpy()


def initial_weights(cfg: dict, seed: int, model: keras.Sequential) -> list[np.ndarray]:
    """The authors' student initialisation (float32 draws, their float64 post-processing)."""
    shapes = [tuple(w.shape) for w in model.get_weights()]
    sds = [cfg["sd_BC"], cfg["sd_A"], cfg["sd_BC"]] + [cfg.get("sd_D", 0.0)] * (len(shapes) - 3)
    w = [keras24_normal(s, seed, sd) for s, sd in zip(shapes, sds)]
    B, A, C = w[0], w[1], w[2]
    a = np.sort(np.abs(np.diag(A)))[::-1].copy()  # float32
    b = np.sort(np.abs(B[0]))[::-1].copy()  # float32
    c = np.abs(C)[::-1].copy()  # (d, 1): sorting along its length-1 axis is a no-op; the flip reverses
    a[1] = np.float64(a[0]) - cfg["diff"]  # float64 arithmetic, stored in a float32 array
    b[1] = np.float64(b[0]) - cfg["diff"]
    A = np.diag(a).astype(np.float64) + cfg["warm_init"] * np.eye(len(a))  # float64 until set_weights
    B = b[None, :].astype(np.float64) + cfg["warm_init"]
    return [B, A, c] + w[3:]


class AdaptiveRate(keras.optimizers.schedules.LearningRateSchedule):
    """``lr0 / (sqrt(G / (1 - beta^(step+1))) + soft)``, ``G`` the running mean of the summed
    gradient norms of the full-batch loss at the current weights (``common/scheduler.py``)."""

    def __init__(self, lr0: float, model, X, Y):
        super().__init__()
        self.lr0, self.model, self.X, self.Y = lr0, model, X, Y
        self.G = tf.Variable(0.0, trainable=False)
        self.calls = tf.Variable(0, trainable=False, dtype=tf.int64)  # checked: one call per update

    def __call__(self, step):
        self.calls.assign_add(1)
        with tf.GradientTape() as tape:
            loss = self.model.loss(self.Y, self.model(self.X))
        grads = tape.gradient(loss, self.model.trainable_weights)
        G = BETA * self.G + (1 - BETA) * tf.math.reduce_sum([tf.norm(g) for g in grads])
        self.G.assign(G)
        return self.lr0 / ((G / (1 - BETA ** (step + 1))) ** 0.5 + SOFT)

    def get_config(self):
        return {"lr0": self.lr0}


# ------------------------------------------------------------------------------------------------
# callbacks
# ------------------------------------------------------------------------------------------------


class Probe:
    """Train loss, generalization error and ``|a|`` of the model's current weights, measured as the
    authors' callbacks measure them (float32 model outputs, NumPy reductions)."""

    def __init__(self, cfg, model, X, Y, X_ext, Y_ext):
        self.cfg, self.model, self.X, self.Y = cfg, model, X, Y
        self.X_ext, self.Y_ext = X_ext, np.asarray(Y_ext)
        self.ext_model = build_model(cfg, model.layers[0].units, EXT_LENGTH)
        self.fwd = tf.function(lambda x: model(x))
        self.ext_fwd = tf.function(lambda x: self.ext_model(x))

    def train_loss(self) -> float:
        return float(np.mean(((self.fwd(self.X) - self.Y) ** 2).numpy()))

    def error(self) -> float:
        self.ext_model.set_weights(self.model.get_weights())
        diff = self.ext_fwd(self.X_ext).numpy() - self.Y_ext
        if self.cfg["kind"] == "ssm_in_nn":
            return float(np.linalg.norm(diff) / np.linalg.norm(self.Y_ext))
        return float(np.max(np.abs(diff)) / np.max(np.abs(self.Y_ext)))

    def abs_a(self) -> np.ndarray:
        return np.sort(np.abs(np.diag(self.model.get_weights()[1])))[::-1]


def short(x) -> float:
    """A float32 value as the float64 with the shortest decimal that rounds back to it."""
    return float(str(np.float32(x)))


class StopAtEps(keras.callbacks.Callback):
    def __init__(self, probe: Probe, eps: float):
        super().__init__()
        self.probe, self.eps, self.hit_epoch = probe, eps, -1

    def on_epoch_end(self, epoch, logs=None):
        if self.probe.train_loss() <= self.eps:
            self.hit_epoch = epoch
            self.model.stop_training = True


class Every(keras.callbacks.Callback):
    """Logs at 0-based epochs ``% period == 0`` (and prints every ``print_period``)."""

    def __init__(self, probe: Probe, period: int, print_period: int, phase: str, say, offset: int = 0):
        super().__init__()
        self.probe, self.period, self.print_period, self.phase, self.say = probe, period, print_period, phase, say
        self.offset = offset  # updates taken before this fit
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.period == 0:
            loss, err, a = self.probe.train_loss(), self.probe.error(), self.probe.abs_a()
            self.rows.append(
                {
                    "epoch": epoch,
                    "update": self.offset + epoch + 1,
                    "train_loss": short(loss),
                    "error": short(err),
                    "top_abs_a": [short(v) for v in a[:4]],
                }
            )
        if epoch % self.print_period == 0 and self.rows:
            r = self.rows[-1]
            self.say(
                f"  [{self.phase}] epoch {epoch} (update {r['update']}): train loss {r['train_loss']:.6g}, "
                f"error {r['error']:.6g}, top |a| {np.round(r['top_abs_a'], 5).tolist()}"
            )


# ------------------------------------------------------------------------------------------------
# one seed
# ------------------------------------------------------------------------------------------------


def run_seed(cfg: dict, special: bool, seed: int, args, say) -> dict:
    start = time.perf_counter()
    keras.backend.clear_session()
    X = training_inputs(cfg, special, seed)
    X_ext = test_inputs(cfg, seed)
    teacher, ext_teacher = build_model(cfg, 1, cfg["L"]), build_model(cfg, 1, EXT_LENGTH)
    teacher.set_weights(teacher_weights(cfg))
    ext_teacher.set_weights(teacher_weights(cfg))
    Y, Y_ext = teacher(X), ext_teacher(X_ext)  # float32 tensors, as the notebooks' labels

    model = build_model(cfg, cfg["d"], cfg["L"])
    init = initial_weights(cfg, seed, model)
    model.set_weights(init)
    lr = cfg["lr_special"] if special else cfg["lr"]
    if cfg["kind"] == "beyond_theorem":
        schedule = AdaptiveRate(lr, model, X, Y)
        optimizer = keras.optimizers.legacy.SGD(learning_rate=schedule)
    else:
        optimizer = keras.optimizers.legacy.Adam(learning_rate=lr)
    model.compile(optimizer=optimizer, loss=keras.losses.MeanSquaredError(), jit_compile=False)

    probe = Probe(cfg, model, X, Y, X_ext, Y_ext)
    shuffle = args.shuffle == "keras"
    if shuffle:
        tf.random.set_seed(seed)
    fit = dict(x=X, y=Y, batch_size=X.shape[0], verbose=0, shuffle=shuffle)

    stop = StopAtEps(probe, cfg["eps"])
    log1 = Every(probe, args.log_period, args.print_period, "to eps", say)
    model.fit(epochs=args.max_epochs, callbacks=[stop, log1], **fit)
    phase1 = int(optimizer.iterations.numpy())
    hit = stop.hit_epoch + 1 if stop.hit_epoch >= 0 else None
    say(
        f"  seed {seed}: "
        + (f"train loss <= eps after update {hit}" if hit else f"eps NOT reached in {phase1} updates")
        + f" ({time.perf_counter() - start:.0f} s)"
    )

    extra = args.extra if args.extra is not None else cfg["extra"]
    log2 = Every(probe, args.log_period, args.print_period, "after eps", say, offset=phase1)
    model.fit(epochs=extra, callbacks=[log2], **fit)
    total = int(optimizer.iterations.numpy())
    if cfg["kind"] == "beyond_theorem" and int(schedule.calls.numpy()) != total:
        raise RuntimeError(f"the adaptive rate ran {int(schedule.calls.numpy())} times in {total} updates")

    abs_a = probe.abs_a()
    last = log2.rows[-1] if log2.rows else None
    out = {
        "seed": seed,
        "hit_update": hit,
        "updates_to_eps_phase": phase1,
        "updates_total": total,
        "error_end": probe.error(),
        "train_loss_end": probe.train_loss(),
        "top4_abs_a_end": abs_a[:4].tolist(),
        "abs_a_end": abs_a.tolist(),
        "error_last_logged": None if last is None else last["error"],
        "train_loss_last_logged": None if last is None else last["train_loss"],
        "top4_abs_a_last_logged": None if last is None else last["top_abs_a"],
        "last_logged_extra_update": None if last is None else last["epoch"] + 1,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "log_to_eps": log1.rows,
        "log_after_eps": log2.rows,
    }
    say(
        f"  seed {seed}: {total} updates; error end {out['error_end']:.6g}, last logged "
        f"(extra update {out['last_logged_extra_update']}) {out['error_last_logged']:.6g}; train loss end "
        f"{out['train_loss_end']:.4g}; top |a| end {np.round(out['top4_abs_a_end'], 5).tolist()} "
        f"({out['wall_seconds']:.0f} s)"
    )
    return out


def seeded_initializer_agrees(seed: int = 4541) -> bool:
    """Whether this tf_keras's seeded ``RandomNormal`` draws what :func:`keras24_normal` assumes."""
    ours = keras24_normal((3, 4), seed, 0.01)
    theirs = keras.initializers.RandomNormal(0.0, 0.01, seed=seed)((3, 4)).numpy()
    return bool(np.array_equal(ours, theirs))


def dump_json(obj: dict, path: str) -> None:
    """``json.dump`` with ``indent=1``, each innermost list of numbers and each log row on one line."""
    text = json.dumps(obj, indent=1)
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    text = re.sub(r'\{\s+("epoch"[^{}]*?)\s+\}', lambda m: "{" + " ".join(m.group(1).split()) + "}", text)
    with open(path, "w") as f:
        f.write(text + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cell", required=True, choices=sorted(CELLS))
    ap.add_argument("--special", action="store_true", help="add the special sequences")
    ap.add_argument("--seeds", help="comma-separated seeds (default: the notebook's)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--max-epochs", type=int, default=int(1e6))
    ap.add_argument("--extra", type=int, default=None, help="epochs after eps (default: the notebook's)")
    ap.add_argument("--log-period", type=int, default=100)
    ap.add_argument("--print-period", type=int, default=10000)
    ap.add_argument(
        "--shuffle",
        choices=["keras", "none"],
        default="keras",
        help="keras: fit's per-epoch reordering of the batch, seeded by the run's seed",
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    cfg = CELLS[args.cell]
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else cfg["seeds"]
    name = args.cell + ("/special" if args.special else "")
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, name.replace("/", "__"))
    log_file = open(stem + ".log", "w")

    def say(msg: str) -> None:
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    command = "python " + " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:]))
    versions = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "numpy": np.__version__,
    }
    say(
        f"cell {name}, seeds {list(seeds)}\ncommand: {command}\nversions: {versions}, "
        f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}, threads {args.threads}, "
        f"shuffle {args.shuffle}"
    )
    agrees = seeded_initializer_agrees()
    say(f"tf_keras seeded RandomNormal == stateless_normal(seed=[seed, 0]): {agrees}")
    settings = {
        k: (list(v) if isinstance(v, tuple) else (float(v) if isinstance(v, np.floating) else v))
        for k, v in cfg.items()
    }
    settings["lr_used"] = cfg["lr_special"] if args.special else cfg["lr"]
    results = []
    for seed in seeds:
        say(f"seed {seed}")
        results.append(run_seed(cfg, args.special, seed, args, say))
    errors_end = [r["error_end"] for r in results]
    errors_logged = [r["error_last_logged"] for r in results]
    say(f"errors at the end:        {[f'{e:.6g}' for e in errors_end]}, mean {np.mean(errors_end):.6g}")
    say(
        f"errors last logged:       {[f'{e:.6g}' for e in errors_logged]}, mean {np.mean(errors_logged):.6g} "
        f"(what the notebook prints)"
    )
    say(f"updates reaching eps:     {[r['hit_update'] for r in results]}")
    dump_json(
        {
            "cell": name,
            "special": args.special,
            "seeds": list(seeds),
            "command": command,
            "versions": versions,
            "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "threads": args.threads,
            "shuffle": args.shuffle,
            "log_period": args.log_period,
            "max_epochs": args.max_epochs,
            "seeded_initializer_agrees": agrees,
            "settings": settings,
            "per_seed": results,
        },
        stem + ".json",
    )
    log_file.close()


if __name__ == "__main__":
    main()
