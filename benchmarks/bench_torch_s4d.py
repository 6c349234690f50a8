"""Speed of the ``realworld`` preset ``authors-cpu/s4d/mnist1d`` here, beside the same S4D classifier written
plainly in PyTorch (docs/findings/realworld-authors.md).

1. The victim: the preset's clean training (``fit_epochs`` with ``Config.train_config()``: 30 epochs x
   1,600 // 64 = 25 minibatches = 750 AdamW steps, per-epoch cosine, S4D kernel group at 1e-3, dropout
   0.1, time-shift augmentation) timed in JAX (first call with compilation, then a second, compiled
   call), and the same 750 steps of :class:`TorchClassifier` started from a copy of the same initial
   parameters on the same rows (PyTorch eager, ``torch.set_num_threads`` = the cores JAX's XLA CPU
   backend uses, ``OMP_WAIT_POLICY=PASSIVE`` unless set); the ratio of the two, in the same process, and
   both models' test accuracy.
2. One full seed of the preset (clean training, brew, uniform and end controls, three extended
   retrainings) with the library's own ``realworld.run_seed``, timed. ``--quick`` divides epochs and
   attack iterations by 5 (the victim comparison in 1. stays full size). Measured figures: README, Real world.

The PyTorch model mirrors ``implicitbias.models`` for this preset (``SequenceClassifier`` with
``norm_position="post"``, ``readout="mean"``, ``S4DBlock``; docs/science.md §4): linear encoder, per layer
``h = LayerNorm(h + drop(S4D(h)))`` with the S4D-ZOH kernel by a Vandermonde product and a causal FFT
convolution of length ``2L`` (as state-spaces/s4's minimal ``s4d.py``), tanh-GELU, ``H -> 2H`` linear and
GLU, a channel dropout mask shared over time, mean over time, linear head; AdamW in two groups
(``log_dt``, ``log_A_real``, ``A_imag`` at ``ssm_lr`` without weight decay, the rest at ``lr`` with
``weight_decay``) under ``CosineAnnealingLR(T_max=epochs, eta_min=min_lr_frac * lr)`` stepped per epoch; the
time shift of up to ``L / 8`` steps with linear interpolation (``datasets.views.augment_sequences`` on a
width-1 image). tests/test_bench_torch.py checks it against ours (forward, gradients, optimizer, shift).

    make bench-torch          (installs the optional extra bench-torch = torch==2.13.0 CPU, then runs this)
    python benchmarks/bench_torch_s4d.py [--quick] [--smoke] [--seed S]
    (--smoke: 1 epoch, 2 attack iterations, 1 restart; a slow test runs it)

Without PyTorch the script prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

# libgomp reads this when torch loads: with the default spinning policy torch's OpenMP threads stall on an
# oversubscribed machine (measured here at load 16 on 2 cores: 10 steps in 15-21 s with 2 threads, 0.8 s passive)
if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:
    print(
        "bench_torch_s4d: PyTorch is not installed; `make bench-torch` installs it (pip install torch==2.13.0)",
        file=sys.stderr,
    )
    sys.exit(2)

import numpy as np

PRESET = "authors-cpu/s4d/mnist1d"
SSM_FIELDS = ("log_dt", "log_A_real", "A_imag")  # = models.s4d.S4DBlock.ssm_parameters (checked by the test)


class TorchS4D(nn.Module):
    """One S4D layer on ``(B, L, H)``: kernel convolution + D skip, tanh-GELU, ``H -> 2H`` linear, GLU."""

    def __init__(self, d_model: int, d_state: int):
        super().__init__()
        H, N = d_model, d_state
        # values come from the JAX model (load_from_jax); the shapes are those of implicitbias.models.s4d
        self.log_dt = nn.Parameter(torch.zeros(H))
        self.log_A_real = nn.Parameter(torch.zeros(H, N))
        self.A_imag = nn.Parameter(torch.zeros(H, N))
        self.C = nn.Parameter(torch.zeros(H, N, 2))
        self.D = nn.Parameter(torch.zeros(H))
        self.out = nn.Linear(H, 2 * H)

    def kernel(self, L: int) -> torch.Tensor:
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)  # (H, N)
        dtA = torch.exp(self.log_dt)[:, None] * A
        C = torch.view_as_complex(self.C)
        Bbar = (torch.exp(dtA) - 1.0) / A
        vandermonde = torch.exp(dtA[..., None] * torch.arange(L, dtype=self.log_dt.dtype))  # (H, N, L)
        return 2.0 * torch.einsum("hn,hnl->hl", C * Bbar, vandermonde).real

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        L = u.shape[1]
        uT = u.transpose(1, 2)  # (B, H, L)
        n = 2 * L  # no circular wrap-around
        y = torch.fft.irfft(torch.fft.rfft(uT, n=n) * torch.fft.rfft(self.kernel(L), n=n), n=n)[..., :L]
        y = F.gelu(y + self.D[:, None] * uT, approximate="tanh")  # jax.nn.gelu's default is the tanh form
        return F.glu(self.out(y.transpose(1, 2)), dim=-1)


class TorchClassifier(nn.Module):
    """``(B, L, d_input) -> (B, n_classes)``: the post-norm, mean-readout S4D classifier of the preset."""

    def __init__(self, d_input: int, d_model: int, d_state: int, n_layers: int, n_classes: int, dropout: float):
        super().__init__()
        self.encoder = nn.Linear(d_input, d_model)
        self.blocks = nn.ModuleList(TorchS4D(d_model, d_state) for _ in range(n_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.head = nn.Linear(d_model, n_classes)
        self.p = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        for block, norm in zip(self.blocks, self.norms):
            z = block(h)
            if self.training and self.p:
                # one mask per example and channel, shared by every step (the authors' nn.Dropout1d)
                keep = torch.rand(z.shape[0], 1, z.shape[2]) >= self.p
                z = z * keep / (1.0 - self.p)
            h = norm(h + z)
        return self.head(h.mean(1))


def from_jax(jax_model) -> TorchClassifier:
    """A ``TorchClassifier`` holding a copy of the parameters of a JAX ``SequenceClassifier`` (s4d, post-norm)."""
    blocks = jax_model.blocks
    H, N = blocks[0].log_A_real.shape
    m = TorchClassifier(
        jax_model.encoder.in_features, H, N, len(blocks), jax_model.head.out_features, jax_model.dropout
    )
    t = lambda a: torch.from_numpy(np.array(a, np.float32))
    with torch.no_grad():
        for tl, jl in [(m.encoder, jax_model.encoder), (m.head, jax_model.head)] + [
            (tb.out, jb.out) for tb, jb in zip(m.blocks, blocks)
        ]:
            tl.weight.copy_(t(jl.weight))
            tl.bias.copy_(t(jl.bias))
        for tn, jn in zip(m.norms, jax_model.norms):
            tn.weight.copy_(t(jn.weight))
            tn.bias.copy_(t(jn.bias))
        for tb, jb in zip(m.blocks, blocks):
            for name in (*SSM_FIELDS, "C", "D"):
                getattr(tb, name).copy_(t(getattr(jb, name)))
    return m


def time_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``x (B, L, C)`` sampled at ``t + shift_b`` with linear interpolation, zeros outside."""
    B, L, _ = x.shape
    pos = torch.arange(L, dtype=x.dtype)[None, :] + shift[:, None]  # (B, L)
    i0 = torch.floor(pos)
    w1 = (pos - i0)[..., None]
    i0 = i0.long()

    def gather(i):
        valid = ((i >= 0) & (i <= L - 1))[..., None].to(x.dtype)
        return torch.gather(x, 1, i.clamp(0, L - 1)[..., None].expand(-1, -1, x.shape[2])) * valid

    return gather(i0) * (1 - w1) + gather(i0 + 1) * w1


def make_optimizer(model: TorchClassifier, tc):
    """AdamW over two groups and the per-epoch cosine of a ``TrainConfig`` (``schedule="cosine_epochs"``)."""
    ssm = [p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] in SSM_FIELDS]
    rest = [p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] not in SSM_FIELDS]
    opt = torch.optim.AdamW(
        [{"params": rest, "lr": tc.lr, "weight_decay": tc.weight_decay},
         {"params": ssm, "lr": tc.ssm_lr, "weight_decay": 0.0}],
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=tc.schedule_epochs or tc.epochs, eta_min=tc.min_lr_frac * tc.lr
    )
    return opt, sched


def train_torch(model: TorchClassifier, x: np.ndarray, y: np.ndarray, tc, max_shift: float, seed: int) -> dict:
    """``tc.epochs`` epochs of shuffled minibatches (last incomplete one dropped), shift-augmented, dropout on."""
    torch.manual_seed(seed)
    xs, ys = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    n = xs.shape[0]
    bs = min(tc.batch_size, n)
    spe = n // bs
    opt, sched = make_optimizer(model, tc)
    model.train()
    losses = []
    for _ in range(tc.epochs):
        total = 0.0
        for idx in torch.randperm(n)[: spe * bs].view(spe, bs):
            xb = time_shift(xs[idx], (2 * torch.rand(bs) - 1) * max_shift)
            loss = F.cross_entropy(model(xb), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        sched.step()
        losses.append(total / spe)
    return {"steps": tc.epochs * spe, "loss": losses}


def torch_accuracy(model: TorchClassifier, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(np.asarray(x, np.float32))).argmax(-1).numpy()
    return float(np.mean(pred == np.asarray(y)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="full seed with epochs and attack iterations / 5")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (a test runs it)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import jax

    from implicitbias.experiments import realworld as rw

    from implicitbias.tasks import classifier_poisoning as cp
    from implicitbias.models import make_classifier
    from implicitbias.core.precision import enable_float64
    from implicitbias.models.training import evaluate, fit_epochs

    enable_float64()  # the papers' precision: JAX's 64-bit mode, as every experiment's run
    seed = args.seed
    cfg = rw.PRESETS[PRESET]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores)
    print(f"preset {PRESET}, seed {seed}; jax {jax.__version__} {jax.devices()}, torch {torch.__version__}")
    print(f"threads: JAX's XLA CPU backend uses the {cores} visible cores; torch.set_num_threads({cores}), "
          f"interop {torch.get_num_interop_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; "
          f"load average (1, 5, 15 min): {os.getloadavg()}")

    # ---- 1. the victim: the preset's clean training, JAX vs PyTorch, same rows, same initial parameters ----
    tc = cfg.train_config()
    if args.smoke:
        tc = replace(tc, epochs=1)
    ds = cfg.load(seed)
    x, y = ds.x_train, ds.y_train
    if x.shape[0] > cfg.n_train:  # the clean model's rows, drawn as run_seed draws them
        rows = np.sort(np.random.default_rng([seed, 1]).choice(x.shape[0], cfg.n_train, replace=False))
        x, y = x[rows], y[rows]
    init = make_classifier(cfg.model_config, seed)
    key = jax.random.PRNGKey(seed)
    max_shift = cfg.view.max_shift()[0]
    print(f"victim: {x.shape[0]} training sequences of length {x.shape[1]}, {tc}")

    t0 = time.perf_counter()
    jm, hist, _ = fit_epochs(init, x, y, tc, key)
    jax.block_until_ready(jm)
    t_jax_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jm, hist, _ = fit_epochs(init, x, y, tc, jax.random.fold_in(key, 7))  # compiled: same shapes and config
    jax.block_until_ready(jm)
    t_jax = time.perf_counter() - t0
    steps = hist["steps"]
    acc_jax = evaluate(jm, ds.x_test, ds.y_test)["accuracy"]

    tm = from_jax(init)
    t0 = time.perf_counter()
    th = train_torch(tm, x, y, tc, max_shift, seed)
    t_torch = time.perf_counter() - t0
    assert th["steps"] == steps, (th["steps"], steps)
    acc_torch = torch_accuracy(tm, ds.x_test, ds.y_test)

    print(f"JAX     training, {steps} steps: {t_jax:.2f} s compiled = {steps / t_jax:.1f} steps/s "
          f"(first call incl. compile {t_jax_first:.2f} s = {steps / t_jax_first:.1f} steps/s); "
          f"last-epoch loss {hist['loss'][-1]:.4f}, test accuracy {acc_jax:.4f}")
    print(f"PyTorch training, {steps} steps: {t_torch:.2f} s = {steps / t_torch:.1f} steps/s (eager, "
          f"{torch.get_num_threads()} threads); last-epoch loss {th['loss'][-1]:.4f}, test accuracy {acc_torch:.4f}")
    print(f"ratio PyTorch / JAX time: {t_torch / t_jax:.2f} (JAX compiled), "
          f"{t_torch / t_jax_first:.2f} (JAX incl. compile)")

    # ---- 2. one full seed of the preset: clean training, brew, controls, retraining (the library's run_seed) ----
    full = replace(cfg, seeds=(seed,))
    if args.smoke:
        full = replace(full, epochs=1, max_extra_epochs=1, iterations=2, restarts=1)
        size = "smoke (epochs 30 -> 1, extra epochs 60 -> 1, iterations 250 -> 2, restarts 2 -> 1)"
    elif args.quick:
        e, it = max(1, cfg.epochs // 5), max(1, cfg.iterations // 5)
        full = replace(full, epochs=e, iterations=it)
        size = (f"--quick (epochs {cfg.epochs} -> {e}, extra epochs at most {cfg.extra_epochs_max} -> "
                f"{full.extra_epochs_max}, iterations {cfg.iterations} -> {it}; everything else as the preset)")
    else:
        size = "full size (the preset unchanged)"
    print(f"\none seed of {PRESET}, {size}: running ...", flush=True)
    t0 = time.perf_counter()
    out = cp.run_seed(full, seed).record
    wall = time.perf_counter() - t0
    parts = [f"clean {out['times']['clean_train_s']:.1f} s", f"brew {out['times']['brew_s']:.1f} s"]
    for v in ("poisoned", "uniform", "end"):
        parts.append(f"{v} retrain {out[v]['time_s']:.1f} s (+{out[v]['rounds']} epochs)")
    print(f"JAX one seed (brew + retrain), {size}: {wall:.1f} s wall; " + ", ".join(parts))
    print(f"load average at end (1, 5, 15 min): {os.getloadavg()}")


if __name__ == "__main__":
    main()
