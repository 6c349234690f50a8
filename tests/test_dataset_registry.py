"""The data set registry (implicitbias.datasets.registry) against what the loaders return: each set's
sequence shape, class count, total size and test-set rule, and its raw range (eps's unit)."""

import numpy as np
import pytest

from implicitbias.datasets import load_digits, load_mnist1d, load_ucr
from implicitbias.datasets.registry import DATASETS, facts
from implicitbias.datasets.ucr import RAW_RANGES

LOADERS = {
    "digits": lambda n: load_digits(n_train=n, seed=0, scan="row", standardize="channel"),
    "mnist1d": lambda n: load_mnist1d(n_train=n, seed=0, standardize="channel"),
    "italypower": lambda n: load_ucr("ItalyPowerDemand", split_seed=0, n_train=n, standardize="channel"),
}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_facts_match_the_loaded_data(name):
    d, n = facts(name), 200
    ds = LOADERS[name](n)
    assert ds.x_train.shape == (n, d.length, d.channels) and ds.x_test.shape[1:] == (d.length, d.channels)
    assert ds.x_test.shape[0] == d.test_count(n)
    assert len(set(ds.y_train.tolist()) | set(ds.y_test.tolist())) == d.n_classes
    if d.test_size is None:  # re-split per seed: the whole set is the training split plus the test set
        assert ds.x_train.shape[0] + ds.x_test.shape[0] == d.total
    view = d.image()
    assert view.channels * view.height * view.width == d.length * d.channels


def test_raw_ranges_are_the_units_of_eps():
    assert facts("digits").raw_range == 16.0 and facts("cifar10").raw_range == 1.0
    assert facts("italypower").raw_range == RAW_RANGES["ItalyPowerDemand"]
    x = load_digits(n_train=200, seed=0, scan="row", standardize="channel")
    raw = x.x_train * x.meta["std"] + x.meta["mean"]  # undo the standardisation: pixels 0..16
    # float32 standardised values undone: errors of a few eps32 x 16 ~ 1e-5; 1e-3 is a loose bound on that
    assert np.isclose(raw.max(), 16.0, atol=1e-3) and np.isclose(raw.min(), 0.0, atol=1e-3)
    assert [n for n, d in DATASETS.items() if d.pixel] == ["digits", "cifar10"]


def test_an_unknown_data_set_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"dataset must be one of \('digits', 'mnist1d', 'cifar10', 'italypower'\)"):
        facts("mnist")


def test_the_dataset_choice_type_names_exactly_the_registry():
    import typing

    from implicitbias.datasets.registry import Dataset

    assert typing.get_args(Dataset) == tuple(DATASETS)
