"""Batch transforms on cached uint8 images, on whatever device the batch lives.

The paper's train transform is Resize 256 -> RandomResizedCrop 224 (scale
0.5-1) -> horizontal flip, applied to the full, usually non-square image; its
test transform is Resize 224 -> CenterCrop 224. Here the cache has already
resized the shorter side to 256 (for 224 px training) and centre-cropped a
square, so the random crop is drawn from that square. This is a documented
deviation: COVIDx radiographs are close to square, so the crop loses little
beyond the paper's own crop. Resizing is done in float32 (no rounding to
uint8 between resize and normalisation).

Random parameters come from an explicit CPU ``torch.Generator``: the same
generator state gives the same batch on CPU and on CUDA. On CUDA the batch is
cropped and resized by one batched operation (``crop_batched``), which gives the
per-image views to float rounding; the CPU keeps the per-image path
(``crop_each``), whose tensors are bit for bit those of the committed numbers.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics, as the authors' code uses
IMAGENET_STD = (0.229, 0.224, 0.225)

CROP_SCALE = (0.5, 1.0)  # the paper's RandomResizedCrop scale
CROP_RATIO = (3 / 4, 4 / 3)  # torchvision's default aspect-ratio range
FLIP_P = 0.5  # RandomHorizontalFlip default


def crop_params(
    height: int, width: int, generator: torch.Generator, scale=CROP_SCALE, ratio=CROP_RATIO
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of one random resized crop: torchvision's get_params, drawing from ``generator``.

    Up to 10 tries at a random area and aspect ratio that fits; otherwise the
    largest centred crop whose aspect ratio is within ``ratio``.
    """
    area = height * width
    low, high = _log_ratio(tuple(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        log_aspect = torch.empty(1).uniform_(low, high, generator=generator)
        aspect = torch.exp(log_aspect).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@functools.cache
def _log_ratio(ratio: tuple[float, float]) -> tuple[float, float]:
    """The bounds of the log aspect ratio, once per ratio: float32, exactly as torchvision, so the
    same seed gives the same crop."""
    low, high = torch.log(torch.tensor(ratio)).tolist()
    return low, high


def _to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """Float (N, 3, H, W) in 0..1 from uint8 (N, H, W, C), C = 1 (the cache's grey) or 3.

    One channel is replicated to three here, on the batch's device, as uint8 in the
    NHWC layout a three-channel cache had: the model sees the very tensor it saw then."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 images of shape (N, H, W, 1 or 3), got {images.dtype} {tuple(images.shape)}")
    if images.shape[-1] == 1:
        images = images.expand(-1, -1, -1, 3).contiguous()
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def _resize(x: torch.Tensor, image_size: int) -> torch.Tensor:
    if x.shape[-2:] == (image_size, image_size):
        return x
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    mean, std = _statistics(x.device, x.dtype)
    return x.sub_(mean).div_(std).contiguous()


@functools.cache
def _statistics(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet's mean and std as (1, 3, 1, 1) tensors, made once per device: a tensor made from
    a list on a GPU waits for the GPU, which a copy per batch made the host do every batch."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=dtype, device=device).view(1, 3, 1, 1)
    return mean, std


def draw_params(n: int, height: int, width: int, generator: torch.Generator) -> tuple[list, list]:
    """Each sample's crop (top, left, h, w) and whether it is mirrored, drawn in sample order (crop,
    then flip): the generator calls the per-image path always made, which both paths now share."""
    boxes, flips = [], []
    for _ in range(n):
        boxes.append(crop_params(height, width, generator))
        flips.append(torch.rand(1, generator=generator).item() < FLIP_P)
    return boxes, flips


def crop_each(x: torch.Tensor, boxes: list, flips: list, image_size: int) -> torch.Tensor:
    """Per image: slice the crop, resize it (bilinear, antialiased), mirror it. The CPU path."""
    views = []
    for sample, (top, left, h, w), flip in zip(x, boxes, flips, strict=True):
        view = _resize(sample[None, :, top : top + h, left : left + w], image_size)
        views.append(view.flip(-1) if flip else view)
    return torch.cat(views)


def crop_batched(x: torch.Tensor, boxes: list, flips: list, image_size: int) -> torch.Tensor:
    """The whole batch at once on its device: crop_each's antialiased bilinear resize written as
    two batched products with each sample's resampling weights (rows, then columns; a mirror
    is a column weight matrix read right to left), so a batch is a fixed few kernels."""
    n, _, height, width = x.shape
    params = _params_on(x.device, [_axes(box, flip, image_size) for box, flip in zip(boxes, flips, strict=True)])
    weights = _weights(params, image_size, max(height, width))  # (N, 2, size, extent): rows, columns
    rows, cols = weights[:, 0, :, :height], weights[:, 1, :, :width]
    pixels = x.permute(0, 2, 3, 1).reshape(n, height, width * 3)  # a view of _to_float_nchw's NHWC data
    y = (rows @ pixels).view(n, image_size, width, 3).transpose(1, 2).reshape(n, width, image_size * 3)
    return (cols @ y).view(n, image_size, image_size, 3).permute(0, 3, 2, 1)


def _axes(box: tuple[int, int, int, int], flip: bool, size: int) -> list[list[float]]:
    """Per axis (rows, columns): output pixel i samples around origin + step * (i + 0.5), a
    triangle 1 / inverse wide, inside (lo, hi); a mirrored row of columns runs from the right."""
    top, left, h, w = box
    rows = [top, h / size, 1 / max(h / size, 1), top, top + h]
    cols = (
        [left + w, -w / size, 1 / max(w / size, 1), left, left + w]
        if flip
        else [left, w / size, 1 / max(w / size, 1), left, left + w]
    )
    return [rows, cols]


def _params_on(device: torch.device, params: list) -> torch.Tensor:
    """The per-sample parameters as float32 on ``device``; on CUDA from pinned memory, without waiting for the GPU."""
    params = torch.tensor(params, dtype=torch.float32)
    if device.type == "cuda":
        return params.pin_memory().to(device, non_blocking=True)
    return params.to(device)


def _weights(params: torch.Tensor, size: int, extent: int) -> torch.Tensor:
    """(N, 2, size, extent) from _axes' (N, 2, 5): output pixel i is the weighted sum of input
    pixels j with these weights; F.interpolate's antialiased bilinear filter (a triangle as wide
    as the scale when shrinking, plain bilinear when enlarging), kept to the crop."""
    outputs, pixels = _grid(size, extent, params.device)
    origin, step, inverse, lo, hi = (p[..., None, None] for p in params.unbind(-1))
    offset = torch.addcmul(pixels - origin, step, outputs, value=-1)  # pixel centre minus sampling centre
    weight = (1 - offset.abs() * inverse).clamp_(min=0) * ((pixels > lo) & (pixels < hi))
    return weight / weight.sum(-1, keepdim=True)


@functools.cache
def _grid(size: int, extent: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and input pixel centres, (size, 1) and (extent,), made once per device."""
    outputs = torch.arange(size, dtype=torch.float32, device=device)[:, None] + 0.5
    return outputs, torch.arange(extent, dtype=torch.float32, device=device) + 0.5


def augment_batch(
    images: torch.Tensor, image_size: int, generator: torch.Generator, batched: bool | None = None
) -> torch.Tensor:
    """Training view of a batch: per sample a random resized crop to ``image_size`` and a coin-flip mirror.

    images: uint8 (N, S, S, 1) as cached (or 3 channels), on any device; generator: a CPU
    generator (crop parameters are drawn in sample order: crop, then flip).
    batched: crop and resize the batch in one batched operation (crop_batched) rather than
    image by image (crop_each); None: batched on CUDA, image by image elsewhere, so CPU
    results are those committed. Both draw the same crops and flips for a generator state.
    Returns float32 (N, 3, image_size, image_size), ImageNet-normalised.
    """
    if generator.device.type != "cpu":
        raise ValueError(f"augment_batch needs a CPU torch.Generator, got one on {generator.device}")
    x = _to_float_nchw(images)
    boxes, flips = draw_params(len(x), *x.shape[-2:], generator)
    if batched is None:
        batched = x.device.type == "cuda"
    crop = crop_batched if batched else crop_each
    return _normalize(crop(x, boxes, flips, image_size))


def eval_batch(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Test view of a batch: the paper's Resize + CenterCrop, which on a square image is one resize.

    images: uint8 (N, S, S, 1) or (N, S, S, 3); returns float32 (N, 3, image_size, image_size), ImageNet-normalised.
    """
    if images.ndim == 4 and images.shape[1] != images.shape[2]:
        raise ValueError(f"eval_batch expects square images as cached, got {tuple(images.shape)}")
    return _normalize(_resize(_to_float_nchw(images), image_size))
