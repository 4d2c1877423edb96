"""COVIDx reading, the on-disk preprocessing cache and the batch transforms."""

from fedlib.data.cache import cache_size, decode_split, load_split_arrays, preprocess
from fedlib.data.covidx import (
    CLASSES,
    Layout,
    Record,
    RepeatedImageWarning,
    load_image,
    parse_split_file,
    patient_overlap,
    read_split,
    summarize,
)
from fedlib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, augment_batch, eval_batch

__all__ = [
    "CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Layout",
    "Record",
    "RepeatedImageWarning",
    "augment_batch",
    "cache_size",
    "decode_split",
    "eval_batch",
    "load_image",
    "load_split_arrays",
    "parse_split_file",
    "patient_overlap",
    "preprocess",
    "read_split",
    "summarize",
]
