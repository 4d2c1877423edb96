"""Decoding one image file of a COVIDx folder (its limits and the grey-level stretch).

An image whose header claims more than ``MAX_PIXELS`` pixels or a side ratio
beyond ``MAX_ASPECT`` is refused before its pixels are decoded: a PNG of a few
hundred bytes can claim 1 x 300,000 pixels, which passes PIL's pixel-count
guard and would make the resize allocate gigabytes. ``fedlib.data.covidx``
re-exports ``load_image``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from fedlib.errors import UserError

# The largest radiograph detectors are 43 cm at 100 um pixels, about 4,300 x 4,300
# = 18.5 megapixels; 50 leaves room for high-resolution film scans while capping a
# decoded 16-bit image (kept as float64 while it is rescaled) near 400 MB a worker.
MAX_PIXELS = 50_000_000
# Chest films are about 1:1.3 and stitched long-leg or spine views about 1:3; past
# 1:8 an image is a strip, not a radiograph, and resizing its short side to 256
# would make the long side tens of thousands of pixels.
MAX_ASPECT = 8


def load_image(path) -> Image.Image:
    """Decode one image file into an RGB PIL image (grayscale replicated).

    Alpha is dropped, palettes and CMYK are converted by PIL. Images with more
    than 8 bits (16-bit PNG ``I;16``, 32-bit ``I``, float ``F``) are stretched
    from their own minimum..maximum to 0..255: the 16-bit CXRs in COVIDx often
    hold 12-bit data, which dividing by 65535 would leave nearly black, and
    PIL's plain ``convert("RGB")`` (what the authors' code does) clips every
    value above 255 to white. A constant image maps to 0.
    """
    return _decode(path).convert("RGB")


def _decode(path) -> Image.Image:
    """Decode to mode L (grayscale) or RGB; ``load_image`` and the cache share it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Image file {path} {_not_a_file(path)}; check the split file and the image folder.")
    if path.stat().st_size == 0:
        raise UserError(
            f"Image file {path} is empty (0 bytes); download it again or remove its line from the split file."
        )
    try:
        with warnings.catch_warnings():
            # PIL warns above ~89 megapixels; such images are refused below anyway
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            _check_size(path, *img.size)  # from the header, before any pixel is decoded
            img.load()  # decodes now, so a truncated file fails here and not later
            return _to_l_or_rgb(img, path)
    except PermissionError as err:
        raise UserError(
            f"Image file {path} cannot be read ({err.strerror}); give this user read access to it."
        ) from err
    except Image.DecompressionBombError as err:  # PIL's own guard, above ~179 megapixels, fires in open()
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        raise UserError(
            f"Image file {path} claims {pixels[1] if pixels else 'too many'} pixels, beyond what a radiograph "
            f"can be{_LIMITS}; replace the file or remove its line from the split file."
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(
            f"Image file {path} cannot be decoded ({err}); download it again or remove its line from the split file."
        ) from err


def _check_size(path: Path, width: int, height: int) -> None:
    if width * height > MAX_PIXELS or max(width, height) > MAX_ASPECT * min(width, height):
        raise UserError(
            f"Image file {path} claims {width} x {height} pixels, beyond what a radiograph can be{_LIMITS}; "
            "replace the file or remove its line from the split file."
        )


_LIMITS = f" (at most {MAX_PIXELS // 1_000_000} megapixels and a side ratio of {MAX_ASPECT}:1)"


def _to_l_or_rgb(img: Image.Image, path: Path) -> Image.Image:
    if img.mode in ("L", "RGB"):
        return img.copy()
    if img.mode.startswith("I") or img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all():  # a float image: NaN or inf would be cached as black
            bad = int(np.size(values) - np.isfinite(values).sum())
            raise UserError(
                f"Image file {path} has {bad} pixel(s) that are not finite numbers (NaN or infinity); "
                "export it again or remove its line from the split file."
            )
        low, high = values.min(), values.max()
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
    if img.mode in ("1", "LA", "La"):
        return img.convert("L")
    return img.convert("RGB")


def _not_a_file(path: Path) -> str:
    """Why ``path`` is no file to read: missing, or something else (a folder, a FIFO, a device)."""
    if path.is_dir():
        return "is a folder, not a file"
    return "is not a regular file (a FIFO, a device, ...)" if path.exists() else "does not exist"
