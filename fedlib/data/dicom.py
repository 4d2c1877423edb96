"""A DICOM radiograph as an 8-bit grey PNG, the way a viewer would show it.

COVIDx's RSNA images come from the RSNA Pneumonia Detection Challenge's
``stage_2_train_images/<patientId>.dcm``; COVID-Net's ``create_COVIDx_v3.ipynb``
(github.com/lindawangg/COVID-Net, read at commit a888987; renamed ``create_COVIDx.ipynb``
and rewritten for v4 at 2168765) wrote each as ``<patientId>.png`` with
``cv2.imwrite(ds.pixel_array)``.
Here the grey levels follow the DICOM standard's display pipeline (PS3.3 C.11):

1. the stored values (``pydicom``'s ``Dataset.pixel_array``; compressed transfer
   syntaxes such as JPEG Baseline are decoded by the plugins pydicom finds, Pillow
   among them);
2. the Modality LUT or Rescale Slope/Intercept (``pydicom.pixels.apply_modality_lut``);
3. the VOI LUT: a VOI LUT Sequence, else Window Center/Width
   (``pydicom.pixels.apply_voi_lut``, which prefers the sequence as the standard does);
4. the result, whose range is fixed by the header (below), scaled linearly to 0..255;
5. MONOCHROME1 (the smallest value is white) inverted, so every PNG is MONOCHROME2.

The range in step 4 is the one the standard gives the output of step 3: 0 to
2**n - 1 for a VOI LUT Sequence with n bits per entry; for windowing or no VOI
transform, the range of the stored values (BitsStored, signed or not) through the
Modality LUT or the rescale, which is also what pydicom's ``apply_windowing``
maps a window onto. Values are not stretched to the image's own minimum and
maximum: an 8-bit MONOCHROME2 image without a VOI transform (the RSNA files) keeps
its values exactly, so its PNG equals the one COVID-Net's notebook wrote.

Why 8 bits and not 16: fedlib decodes every image to 8-bit grey before resizing
(``fedlib.data.covidx.load_image``) and its cache holds ``uint8``, so a 16-bit PNG
would carry nothing a model ever sees; the RSNA files store 8 bits per pixel
(COVIDx's own RSNA PNGs are 8-bit), and an 8-bit PNG is half the size.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from fedlib.errors import UserError, quoted

_FIX = "download it again or remove its line from the split file"


def read_dicom(path):
    """The dataset of one DICOM file, its pixels decodable; a file pydicom cannot read is a UserError."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as err:
        raise UserError(f"DICOM file {path} cannot be read ({_reason(err)}); {_FIX}.") from err
    if "PixelData" not in ds:
        raise UserError(f"DICOM file {path} holds no image (no Pixel Data element); {_FIX}.")
    return ds


def dicom_to_gray8(path) -> np.ndarray:
    """The displayed grey levels of a single-frame monochrome DICOM, ``uint8``, 0 = black."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    ds = read_dicom(path)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UserError(
            f"DICOM file {path} is {quoted(photometric or 'without a Photometric Interpretation')}, not a "
            f"grey radiograph (MONOCHROME1 or MONOCHROME2); {_FIX}."
        )
    try:
        stored = ds.pixel_array
        if stored.ndim != 2:
            raise ValueError(f"{stored.ndim}-dimensional pixel data, one frame of rows x columns expected")
        values = apply_voi_lut(apply_modality_lut(stored, ds), ds)
        low, high = output_range(ds)
    except Exception as err:  # pydicom raises many kinds for truncated or unsupported pixel data
        raise UserError(f"DICOM file {path} cannot be decoded ({_reason(err)}); {_FIX}.") from err
    scaled = (np.asarray(values, dtype=np.float64) - low) * (255.0 / (high - low))
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return 255 - gray if photometric == "MONOCHROME1" else gray


def output_range(ds) -> tuple[float, float]:
    """The smallest and largest value the VOI stage can give (see the module's step 4)."""
    voi = ds.get("VOILUTSequence")
    if voi and voi[0].get("LUTDescriptor") is not None and voi[0].get("LUTData") is not None:
        return 0.0, float(2 ** int(voi[0].LUTDescriptor[2]) - 1)
    modality = ds.get("ModalityLUTSequence")
    if modality:
        return 0.0, float(2 ** int(modality[0].LUTDescriptor[2]) - 1)
    bits = int(ds.BitsStored)
    low, high = (0, 2**bits - 1) if int(ds.PixelRepresentation) == 0 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        low, high = sorted((low * slope + intercept, high * slope + intercept))
    if high <= low:
        raise ValueError(f"an empty value range {low}..{high} from the header")
    return float(low), float(high)


def dicom_to_png(path) -> bytes:
    """``dicom_to_gray8`` encoded as an 8-bit grey PNG."""
    buffer = io.BytesIO()
    Image.fromarray(dicom_to_gray8(path)).save(buffer, format="PNG")
    return buffer.getvalue()


def _reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text if len(text) <= 200 else text[:200] + "..."
