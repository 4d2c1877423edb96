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

_TRANSFORMS = ("IMAGENET_MEAN", "IMAGENET_STD", "augment_batch", "eval_batch")


def __getattr__(name: str):
    # The transforms need torch (2-3 s to import): load them on first use, so that
    # `fedlib data-summary` and the cache's decode workers do without it.
    if name in _TRANSFORMS:
        from fedlib.data import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
