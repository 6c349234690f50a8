"""Real-data loaders returning ``SequenceDataset`` (docs/science.md §4): digits, bundled UCR sets, local CIFAR-10."""

from .base import STANDARDIZE, BadDataError, MissingDataError, SequenceDataset, fit_standardizer, make_dataset
from .cifar import load_cifar10, rows_to_sequences
from .digits import image_to_sequence, load_digits
from .mnist1d import load_mnist1d
from .views import ImageView, augment_sequences
from .ucr import DATASETS as UCR_DATASETS
from .ucr import load_ucr

__all__ = ["STANDARDIZE", "BadDataError", "MissingDataError", "SequenceDataset", "fit_standardizer", "make_dataset",
           "load_cifar10", "rows_to_sequences", "image_to_sequence", "load_digits", "UCR_DATASETS", "load_ucr",
           "load_mnist1d", "ImageView", "augment_sequences"]
