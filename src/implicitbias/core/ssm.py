"""Diagonal linear SSM maths (docs/science.md §1) and the SSM-inside-a-network model (docs/science.md §2c).

A diagonal SSM of state dimension ``d`` has parameters ``a, B, C`` in ``R^d``
(``a`` is the diagonal of ``A``). With ``x_0 = 0``, ``x_{t+1} = A x_t + B u_t`` and
``y_t = C x_t``, the output after an input of length ``L`` is

    y_L = sum_{k=1..L} h_k u_{L-k},      h_k = sum_i C_i B_i a_i^(k-1).

All functions are pure and work on single (unbatched) parameters; batch with ``jax.vmap``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp


def impulse_response(a: jax.Array, B: jax.Array, C: jax.Array, length: int) -> jax.Array:
    """``h_k = sum_i C_i B_i a_i^(k-1)`` for ``k = 1..length`` (docs/science.md §1).

    Shapes: ``a, B, C: (d,)`` -> ``(length,)``. Entry ``[k-1]`` holds ``h_k``.
    """
    return powers(a, length) @ (B * C)


def powers(a: jax.Array, length: int) -> jax.Array:
    """``a_i^(k-1)`` for ``k = 1..length``: shape ``(d,) -> (length, d)``.

    Built by repeated multiplication (``length`` is static) rather than ``a ** k``: the gradient
    of ``x ** 0`` at ``x = 0`` is NaN in JAX, and zero entries (padding, pruned states) must have
    finite gradients; it is also cheaper to differentiate than ``cumprod``.
    """
    rows = [jnp.ones_like(a)]
    for _ in range(length - 1):
        rows.append(rows[-1] * a)
    return jnp.stack(rows)


def output_at_L(h: jax.Array, X: jax.Array) -> jax.Array:
    """``y_L(u) = sum_k h_k u_{L-k}`` for every row ``u`` of ``X`` (docs/science.md §1).

    Shapes: ``h: (K,)`` with ``K >= L``, ``X: (N, L)`` -> ``(N,)``. The last input meets ``h_1``,
    the first input meets ``h_L``.
    """
    L = X.shape[-1]
    return X @ h[:L][::-1]


def ssm_output(a: jax.Array, B: jax.Array, C: jax.Array, X: jax.Array) -> jax.Array:
    """Output at time ``L`` of the diagonal SSM for inputs ``X: (N, L)`` -> ``(N,)``."""
    return output_at_L(impulse_response(a, B, C, X.shape[-1]), X)


def simulate(a: jax.Array, B: jax.Array, C: jax.Array, u: jax.Array) -> jax.Array:
    """Step-by-step recurrence ``x_{t+1} = A x_t + B u_t``; returns ``y_t = C x_t`` for ``t = 1..L``.

    Shapes: ``u: (L,)`` -> ``(L,)``; entry ``[L-1]`` is ``y_L``. An independent reference for
    :func:`impulse_response` (used in tests), not a hot path.
    """

    def step(x, u_t):
        x = a * x + B * u_t
        return x, C @ x

    _, ys = jax.lax.scan(step, jnp.zeros_like(a), u)
    return ys


class DiagonalSSM(eqx.Module):
    """Trainable diagonal SSM ``(a, B, C)``, each ``(d,)``. Calling it gives ``y_L`` for ``X: (N, L)``."""

    a: jax.Array
    B: jax.Array
    C: jax.Array

    def impulse_response(self, length: int) -> jax.Array:
        return impulse_response(self.a, self.B, self.C, length)

    def __call__(self, X: jax.Array) -> jax.Array:
        return ssm_output(self.a, self.B, self.C, X)


class FullKernelSSM(eqx.Module):
    """A diagonal SSM held as the authors' Keras ``SimpleRNN`` holds it: ``A`` is a full ``(d, d)``
    matrix that a constraint projects onto its diagonal after every update (docs/science.md §2b).

    The model is the same function as :class:`DiagonalSSM` with ``a = diag(A)``, and as long as the
    updates are projected (:func:`keep_diagonal`) GD moves ``diag(A)`` exactly as it moves ``a``.
    What differs is the gradient: the forward pass uses the dense matrix, so ``dL/dA`` holds
    off-diagonal entries too, and the paper's adaptive learning rate sums the norm of that whole
    matrix. ``A: (d, d)``, ``B, C: (d,)``.
    """

    A: jax.Array
    B: jax.Array
    C: jax.Array
    train_BC: bool = eqx.field(static=True, default=True)  # False: B, C get gradients but never move

    @classmethod
    def from_diagonal(cls, ssm: DiagonalSSM, train_BC: bool = True) -> FullKernelSSM:
        return cls(jnp.diag(ssm.a), ssm.B, ssm.C, train_BC)

    @property
    def a(self) -> jax.Array:
        return jnp.diagonal(self.A, axis1=-2, axis2=-1)

    def impulse_response(self, length: int) -> jax.Array:
        """``h_k = C A^(k-1) B`` by repeated products with the dense ``A``. ``(length,)``."""
        v, h = self.B, []
        for _ in range(length):
            h.append(self.C @ v)
            v = self.A @ v
        return jnp.stack(h)

    def __call__(self, X: jax.Array) -> jax.Array:
        return output_at_L(self.impulse_response(X.shape[-1]), X)

    def constrained(self) -> FullKernelSSM:
        """This pytree read as an *update*, after the authors' constraints: ``A``'s update keeps only
        its diagonal, and with ``train_BC=False`` the ``B, C`` updates are zero (their ``fix_B_C``
        resets ``B = C = 1`` after every step, yet their gradients still enter the adaptive rate)."""
        A = self.A * jnp.eye(self.A.shape[-1], dtype=self.A.dtype)
        if self.train_BC:
            return FullKernelSSM(A, self.B, self.C, True)
        return FullKernelSSM(A, jnp.zeros_like(self.B), jnp.zeros_like(self.C), False)


class SSMNet(eqx.Module):
    """SSM(d) -> scalar -> ``depth`` ReLU layers of width ``m`` (no biases) -> linear to 1 (docs/science.md §2c).

    ``layers[0]: (m, 1)``, ``layers[1:]: (m, m)``, ``head: (m,)``. Calling it maps ``X: (N, L)``
    to ``(N,)``.
    """

    ssm: DiagonalSSM | FullKernelSSM
    layers: tuple[jax.Array, ...]
    head: jax.Array

    def features(self, z: jax.Array) -> jax.Array:
        """The MLP applied to SSM outputs ``z: (N,)`` -> ``(N,)``."""
        x = z[:, None]
        for W in self.layers:
            x = jax.nn.relu(x @ W.T)
        return x @ self.head

    def __call__(self, X: jax.Array) -> jax.Array:
        return self.features(self.ssm(X))


def unit_teacher(dtype=jnp.float64) -> DiagonalSSM:
    """Teacher of docs/science.md §2b/§2c: ``d* = 1``, ``a* = B* = C* = 1``, so ``h*_k = 1`` for all ``k``."""
    one = jnp.ones((1,), dtype)
    return DiagonalSSM(one, one, one)


def per_theorem_teacher(d: int, dtype=jnp.float64) -> DiagonalSSM:
    """Teacher of docs/science.md §2a: ``a* = (1, 0)``, ``B* = C* = (1, sqrt(d-1))``.

    Then ``h*_1 = d`` (equal to the student's fixed ``h_1 = sum B C = d``) and ``h*_k = 1`` for
    ``k >= 2``.
    """
    bc = jnp.array([1.0, jnp.sqrt(d - 1.0)], dtype)
    return DiagonalSSM(jnp.array([1.0, 0.0], dtype), bc, bc)


def network_teacher(m: int, depth: int, dtype=jnp.float64, ssm: DiagonalSSM | None = None) -> SSMNet:
    """Teacher of docs/science.md §2c: ``ssm`` (default: the unit SSM), first layer ones, hidden identity, head 0.5.

    With the unit SSM, ``y* = (m/2) relu(sum_t u_t)``.
    """
    layers = (jnp.ones((m, 1), dtype),) + tuple(jnp.eye(m, dtype=dtype) for _ in range(depth - 1))
    return SSMNet(unit_teacher(dtype) if ssm is None else ssm, layers, jnp.full((m,), 0.5, dtype))
