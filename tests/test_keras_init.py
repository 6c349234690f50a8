"""The authors' initialisation stream (implicitbias.core.keras_init) against TensorFlow's own output."""

import numpy as np
import pytest

from implicitbias.core.keras_init import philox4x32, seeded_normal, stateless_normal

# Printed by TensorFlow 2.21.0 (CPU): tf.random.stateless_normal([625], seed=[s, 0]) at these indices.
INDICES = (0, 1, 2, 3, 4, 5, 10, 11, 399, 624)
TF_VALUES = {
    200: [-0.4440293610095978, -1.5144636631011963, -1.0643041133880615, 1.1764425039291382, 0.4247938096523285,
          -0.36652788519859314, 0.7414398193359375, 0.7742044925689697, -0.11136225610971451, -0.7316370606422424],
    4540: [0.8145639896392822, -0.7504389882087708, 0.9906351566314697, -0.38851743936538696, 0.8791717886924744,
           0.15403476357460022, -0.10095751285552979, -0.010608761571347713, -0.549979031085968, 1.996893286705017],
    1203: [1.2401293516159058, -0.28253045678138733, -0.8364167809486389, -0.12560203671455383, 0.6316396594047546,
           -2.6007401943206787, 0.3110399544239044, -2.2765960693359375, 1.462929606437683, -0.8880167007446289],
}


@pytest.mark.parametrize("seed", sorted(TF_VALUES))
def test_stateless_normal_matches_tensorflow(seed):
    """Tolerance: a float32 rounding bound per value, not a measured gap. The bits (Philox) and the
    uniforms are exact; z = r sin(v) or r cos(v) with v = 2 pi u. Ours rounds v twice (float32(2 pi),
    then the product), TensorFlow once (double product to float32): v may differ by 1 ulp(v) <= 2^-21
    (v < 8), i.e. by up to r 2^-21 in z. On top, sin/cos/log are NumPy's float32 SIMD kernels (which
    differ between CPUs, a few ulp each) against glibc's (< 1 ulp), plus sqrt and two products:
    8 eps32 |z| covers them. The bound stays below 2e-6 absolute: any wrong bit of the stream, a
    swapped sin/cos or a missed scaling is off by orders more."""
    full = stateless_normal(628, (seed, 0)).astype(np.float64)  # 628: the partner of value 624 too
    z = full[list(INDICES)]
    r = np.hypot(full[0::2], full[1::2]).repeat(2)[list(INDICES)]  # values 2k, 2k+1 share one radius
    np.testing.assert_array_equal(stateless_normal(625, (seed, 0))[list(INDICES)], z.astype(np.float32))
    bound = r * 2.0**-21 + 8 * np.finfo(np.float32).eps * np.abs(z)
    gap = np.abs(z - np.asarray(TF_VALUES[seed]))
    assert np.all(gap <= bound), (gap, bound)


def test_prefix_property_and_scaling():
    """Every shape draws a prefix of one stream: B (1,d) and C (d,1) hold the same values and A (d,d)
    starts with them, which is what makes the authors' weights correlated."""
    full = stateless_normal(400, (4540, 0))
    np.testing.assert_array_equal(stateless_normal(20, (4540, 0)), full[:20])
    A = seeded_normal((20, 20), 4540, 0.01)
    np.testing.assert_array_equal(A.ravel(), full * np.float32(0.01))
    assert not np.array_equal(stateless_normal(20, (4541, 0)), full[:20])


def test_philox_known_answer():
    """Philox-4x32-10 known-answer vector of Salmon et al. (Random123): counter and key all ones."""
    out = philox4x32(np.full((1, 4), 0xFFFFFFFF, np.uint32), (0xFFFFFFFF, 0xFFFFFFFF))[0]
    assert [hex(int(v)) for v in out] == ["0x408f276d", "0x41c83b0e", "0xa20bc7c6", "0x6d5451fd"]


def test_normal_moments():
    z = stateless_normal(200_000, (7, 0)).astype(np.float64)
    # statistical bounds, not rounding: 0.01 is 4.5 standard errors of the mean (1/sqrt(n) = 0.0022)
    # and 6 of the standard deviation (1/sqrt(2n) = 0.0016); catches a wrong Box-Muller scale or shift
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
