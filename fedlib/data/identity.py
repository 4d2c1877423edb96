"""What identifies a data set: a fingerprint of its split files and image listing.

A run is reused (``fedlib reproduce``) or resumed only with the data it was
trained on. Hashing every image would take minutes on COVIDx, so the
fingerprint covers what changes when the data set changes: the bytes of both
split files, the layout names, and the name and byte size of every image the
split files list. Replacing an image by another of exactly the same size is not
seen; a re-download, a new release or an edited split file is.

A published validation split (``Layout.val_split``) is hashed like the others, and
the binary task is named in the hash; neither adds anything to the hash of a
three-class folder without one, so its fingerprint (and the folders named after it)
stays what it was.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .covidx import _LABEL_INDEX, BINARY, Layout

FINGERPRINT_VERSION = 1  # bump when what goes into the hash changes


def fingerprint(root, layout: Layout | None = None) -> str:
    """Hex sha256 (first 16 characters) of the split files, layout and listed image sizes."""
    root, layout = Path(root), layout or Layout()
    digest = hashlib.sha256(f"fedlib-data-v{FINGERPRINT_VERSION}\0".encode())
    binary = layout.task == BINARY
    for split in layout.split_names():
        split_file = root / getattr(layout, f"{split}_split")
        image_dir = root / getattr(layout, f"{split}_dir")
        text = split_file.read_bytes()
        digest.update(f"{split}\0{split_file.name}\0{image_dir.name}\0".encode())
        digest.update(text)
        for line in text.decode("utf-8-sig", errors="replace").splitlines():
            columns = line.split()
            if len(columns) >= 2:
                path = image_dir / columns[1]
                size = path.stat().st_size if path.is_file() else -1
                digest.update(f"{columns[1]}\0{size}\0".encode())
            if len(columns) >= 3 and not binary:
                binary = _LABEL_INDEX.get(columns[2].lower(), ("",))[0] == BINARY
    if binary:  # the task: a three-class folder read with --task binary is another data set
        digest.update(f"task\0{BINARY}\0".encode())
    return digest.hexdigest()[:16]
