"""S4D, LRU and Mamba2 blocks and sequence classifiers (Equinox, float32; docs/science.md §4)."""

from .classifier import KINDS, READOUTS, ClassifierConfig, SequenceClassifier, make_block, make_classifier
from .lru import LRUBlock, linear_recurrence
from .mamba2 import Mamba2Block, segsum, ssd_chunked
from .s4d import S4DBlock, causal_fft_conv

__all__ = [
    "KINDS", "READOUTS", "ClassifierConfig", "SequenceClassifier", "make_block", "make_classifier",
    "LRUBlock", "linear_recurrence", "Mamba2Block", "segsum", "ssd_chunked", "S4DBlock", "causal_fft_conv",
]
