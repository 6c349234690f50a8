"""Real-data loaders: scan orders against hand-computed pixels, train-only standardisation,
seeded splits, offline UCR loading, local CIFAR-10 pickles and clear errors."""

import os
import pickle
import socket

import numpy as np
import pytest
from sklearn.datasets import load_digits as sk_digits

from conftest import write_fake_cifar
from implicitbias.datasets import fit_standardizer, load_cifar10, load_digits, load_ucr, make_dataset


HALF_EPS32 = float(np.finfo(np.float32).eps) / 2  # float32's unit roundoff


def _standardised(ds):
    """``x_train`` in float64 and the rounding bounds its statistics obey. The loaders standardise in
    float64 with the train split's mean m and std s stored in float32 (each within HALF_EPS32, relative)
    and round each value x to float32 (within HALF_EPS32 |x|). So, evaluated in float64, a feature's
    mean of x is within HALF_EPS32 (|m| / s + max|x|) of 0 and its std within HALF_EPS32 (1 + max|x|)
    of 1 (a perturbation of each value by at most d moves a std by at most d), on any CPU."""
    x = ds.x_train.astype(np.float64)
    m, s = (np.asarray(ds.meta[k], np.float64) for k in ("mean", "std"))
    big = float(np.abs(x).max())
    return x, HALF_EPS32 * (float(np.abs(m / s).max()) + big), HALF_EPS32 * (1 + big)


@pytest.fixture(scope="module")
def raw_digits():
    b = sk_digits()
    return b.images, b.target


def test_digits_row_and_column_scan_match_pixels(raw_digits):
    images, labels = raw_digits
    row = load_digits(n_train=1000, seed=0, scan="row", standardize="none")
    col = load_digits(n_train=1000, seed=0, scan="column", standardize="none")
    assert row.x_train.shape == (1000, 64, 1) and row.x_test.shape == (797, 64, 1)
    i = row.meta["idx_train"][5]
    # row-major: step 8*r + c reads pixel (r, c); the last row is the last 8 steps.
    assert row.x_train[5, 8 * 6 + 3, 0] == images[i, 6, 3] and row.x_train[5, 63, 0] == images[i, 7, 7]
    assert np.array_equal(row.x_train[5, 56:, 0], images[i, 7, :])
    # column-major: step 8*c + r reads pixel (r, c).
    assert col.x_train[5, 8 * 6 + 3, 0] == images[i, 3, 6]
    assert np.array_equal(col.x_train[5, 56:, 0], images[i, :, 7])
    assert row.y_train[5] == labels[i]
    assert np.array_equal(row.y_test, labels[row.meta["idx_test"]])


def test_digits_standardisation_fit_on_train_only(raw_digits):
    images, _ = raw_digits
    d = load_digits(n_train=1000, seed=1)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    assert np.all(np.isfinite(d.x_train)) and np.all(np.isfinite(d.x_test))
    mean, std = d.meta["mean"], d.meta["std"]
    raw_train = images[d.meta["idx_train"]].reshape(1000, 64)
    # Tolerances are rounding bounds (see _standardised), not measured gaps; the old atol 1e-5 / 1e-4
    # on statistics taken in float32 held mostly this test's own float32 sums (std off by 6e-6).
    # train statistics, not all data: the float64 mean stored in float32 (HALF_EPS32 relative)
    assert np.allclose(mean[:, 0], raw_train.mean(0), rtol=2 * HALF_EPS32, atol=0)
    varying = raw_train.std(0) > 0
    x, tol_mean, tol_std = _standardised(d)
    assert np.all(np.abs(x.mean(0)[:, 0]) <= tol_mean)
    assert np.all(np.abs(x.std(0)[varying, 0] - 1) <= tol_std)
    assert np.all(std[~varying] == 1)  # constant pixels are not divided by zero
    raw_test = images[d.meta["idx_test"]].reshape(-1, 64)
    # undone in float32 (a product and a sum, each rounded): within 2 eps32 max|raw| = 2 eps32 16 of the
    # raw pixel, on any CPU (measured 9.5e-7 of 7.6e-6); a wrong mean or std is off by >= 0.01
    assert np.allclose(d.x_test[..., 0] * std[:, 0] + mean[:, 0], raw_test, rtol=0, atol=4 * HALF_EPS32 * 16)
    assert not np.allclose(d.x_test.mean(0)[varying, 0], 0, atol=1e-3)  # test set not re-fit (an effect: 0.085)
    g = load_digits(n_train=1000, seed=1, standardize="channel")
    x, tol_mean, tol_std = _standardised(g)
    assert g.meta["mean"].shape == (1, 1) and abs(x.mean()) <= tol_mean and abs(x.std() - 1) <= tol_std


def test_digits_seeded_stratified_split():
    a, b, c = load_digits(seed=3), load_digits(seed=3), load_digits(seed=4)
    assert np.array_equal(a.meta["idx_train"], b.meta["idx_train"]) and np.array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.meta["idx_train"], c.meta["idx_train"])
    assert not set(a.meta["idx_train"]) & set(a.meta["idx_test"])
    assert np.bincount(a.y_train).min() >= 95  # stratified: ~100 per class
    with pytest.raises(ValueError, match="scan"):
        load_digits(scan="diagonal")
    with pytest.raises(ValueError, match="n_train"):
        load_digits(n_train=5000)


def test_ucr_loads_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the UCR loader tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    d = load_ucr("ItalyPowerDemand")
    assert d.x_train.shape == (67, 24, 1) and d.x_test.shape == (1029, 24, 1)
    assert set(np.unique(d.y_train)) == {0, 1} and d.n_classes == 2
    x, tol_mean, tol_std = _standardised(d)  # rounding bounds of the float32 standardisation
    assert abs(x.mean()) <= tol_mean and abs(x.std() - 1) <= tol_std
    assert np.all(np.isfinite(d.x_test))
    r = load_ucr("ItalyPowerDemand", split_seed=0, n_train=500)
    assert r.x_train.shape == (500, 24, 1) and r.x_test.shape == (596, 24, 1)
    m = load_ucr("BasicMotions")
    assert m.x_train.shape == (40, 100, 6) and m.n_classes == 4
    with pytest.raises(ValueError, match="unknown"):
        load_ucr("NotASet")
    with pytest.raises(ValueError, match="split_seed"):
        load_ucr("GunPoint", n_train=10)


def test_cifar_scan_orders_on_fake_pickles(tmp_path):
    b = write_fake_cifar(tmp_path)
    row = load_cifar10(tmp_path, scan="row", standardize="none")
    cm = load_cifar10(tmp_path, scan="channel_major", standardize="none")
    assert row.x_train.shape == (10, 1024, 3) and row.x_test.shape == (3, 1024, 3)
    img = b["data_batch_2"][b"data"][1].reshape(3, 32, 32).astype(np.float64) / 255  # (channel, row, col)
    i = 3  # batch 2, example 1
    # row-major pixels, 3 channels per step: step 32*r + c holds (R, G, B) of pixel (r, c).
    # v / 255 rounded to float32 against float64: within HALF_EPS32 relative, inside np.allclose's rtol 1e-5
    assert np.allclose(row.x_train[i, 32 * 31 + 5], img[:, 31, 5])
    assert np.allclose(row.x_train[i, 0], img[:, 0, 0])
    # channel-major memory as (1024, 3): step t holds stored values 3t, 3t+1, 3t+2.
    flat = img.reshape(-1)
    assert np.allclose(cm.x_train[i, 341, 1], flat[1024]) and np.isclose(flat[1024], img[1, 0, 0])
    assert np.allclose(cm.x_train[i, 1023], img[2, 31, 29:32])  # the last step: blue, bottom-right
    assert np.allclose(cm.x_train[i, 0], img[0, 0, 0:3])  # the first step: red, top-left, 3 columns
    assert np.array_equal(row.y_train[i], b["data_batch_2"][b"labels"][1])
    assert np.array_equal(row.y_test, b["test_batch"][b"labels"])
    std = load_cifar10(tmp_path, scan="row", n_train=6)
    assert std.x_train.shape == (6, 1024, 3)
    x, tol_mean, tol_std = _standardised(std)  # rounding bounds of the float32 standardisation
    assert np.all(np.abs(x.mean((0, 1))) <= tol_mean) and np.all(np.abs(x.std((0, 1)) - 1) <= tol_std)


def test_cifar_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_cifar10(tmp_path / "nowhere")
    write_fake_cifar(tmp_path)
    os.remove(tmp_path / "data_batch_4")
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        load_cifar10(tmp_path)
    write_fake_cifar(tmp_path)
    with pytest.raises(ValueError, match="scan"):
        load_cifar10(tmp_path, scan="column")
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="3072"):
        load_cifar10(tmp_path)


def test_nan_and_bad_mode_rejected():
    x = np.zeros((4, 5, 1))
    y = np.zeros(4, int)
    with pytest.raises(ValueError, match="NaN"):
        make_dataset(np.where(np.arange(5)[None, :, None] == 2, np.nan, x), y, x, y, "feature", {})
    with pytest.raises(ValueError, match="NaN"):
        make_dataset(x, y, np.full_like(x, np.inf), y, "none", {})
    with pytest.raises(ValueError, match="standardize"):
        fit_standardizer(x, "minmax")
