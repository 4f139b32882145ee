"""CIFAR-10 loading (:func:`load_cifar10`) and device-side batching with augmentation
(:class:`BatchLoader`)."""

from neuro_emu.data.cifar10 import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CLASSES,
    DATA_ENV,
    DataError,
    evenly_spaced,
    load_cifar10,
    subset_path,
)
from neuro_emu.data.loader import BatchLoader, augment_batch, normalize

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CLASSES",
    "DATA_ENV",
    "BatchLoader",
    "DataError",
    "augment_batch",
    "evenly_spaced",
    "load_cifar10",
    "normalize",
    "subset_path",
]
