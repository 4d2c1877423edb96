"""Issue 15: augmentation as batch operations. Both paths draw their crops and flips with the
same generator calls; the batched path resizes the whole batch at once and matches the
per-image path to float rounding; on the CPU the default stays the per-image path, bit for
bit (tiny generated images, CPU)."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms as T

from fedlib.data import transforms
from fedlib.data.transforms import FLIP_P, augment_batch, crop_batched, crop_each, crop_params, draw_params

# Largest difference allowed between the paths, in normalised units (the outputs' own). Measured
# on noise images, 5 seeds of 10: 224 px from 256 px, largest 8e-5 (mean 6e-6); 32 px from 48 px,
# largest 1.1e-6 (mean 8e-8): float rounding. A view one pixel off differs by 0.5 to 0.8 on average.
TOLERANCE = 2e-4


def noise(n: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=generator)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def floats(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 3, 1, 2).float() / 255


def reference_augment(images: torch.Tensor, image_size: int, generator: torch.Generator) -> torch.Tensor:
    """augment_batch as it was before issue 15, line for line."""
    x = transforms._to_float_nchw(images)
    height, width = x.shape[-2:]
    views = []
    for sample in x:
        top, left, h, w = crop_params(height, width, generator)
        flip = torch.rand(1, generator=generator).item() < FLIP_P
        view = transforms._resize(sample[None, :, top : top + h, left : left + w], image_size)
        views.append(view.flip(-1) if flip else view)
    return transforms._normalize(torch.cat(views))


def difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per sample, the largest absolute difference."""
    return (a - b).abs().amax(dim=(1, 2, 3))


@pytest.mark.parametrize(("size", "image_size"), [(48, 32), (256, 224)])
def test_the_cpu_default_is_the_per_image_tensor_of_before(size, image_size):
    images = noise(6, size)
    expected = reference_augment(images, image_size, seeded(3))

    for batched in (None, False):
        assert torch.equal(augment_batch(images, image_size, seeded(3), batched=batched), expected), batched


def test_both_paths_crop_and_flip_alike_and_leave_the_generator_alike(monkeypatch):
    seen = {}

    def spy(name, real):
        def record(x, boxes, flips, image_size):
            seen[name] = (boxes, flips)
            return real(x, boxes, flips, image_size)

        return record

    monkeypatch.setattr(transforms, "crop_each", spy("each", crop_each))
    monkeypatch.setattr(transforms, "crop_batched", spy("batched", crop_batched))
    images, per_image, batched = noise(32, 48), seeded(5), seeded(5)

    augment_batch(images, 32, per_image, batched=False)
    augment_batch(images, 32, batched, batched=True)

    assert seen["each"] == seen["batched"]
    generator = seeded(5)  # the draws of before: per sample a crop, then a coin
    before = [(crop_params(48, 48, generator), torch.rand(1, generator=generator).item() < FLIP_P) for _ in range(32)]
    assert list(zip(*seen["each"], strict=True)) == before
    assert 0 < sum(seen["each"][1]) < 32 and len(set(seen["each"][0])) == 32
    assert torch.equal(per_image.get_state(), batched.get_state())


def test_drawn_crops_and_flips_are_torchvisions_for_the_same_seed():
    """2000 draws equal RandomResizedCrop.get_params then RandomHorizontalFlip's coin under
    the same seed (get_params takes no generator: the global one, seeded alike, instead)."""
    height = width = 256
    boxes, flips = draw_params(2000, height, width, seeded(11))

    image = torch.zeros(3, height, width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        expected = [
            (tuple(T.RandomResizedCrop.get_params(image, [0.5, 1.0], [3 / 4, 4 / 3])), bool(torch.rand(1) < 0.5))
            for _ in range(2000)
        ]
    assert list(zip(boxes, flips, strict=True)) == expected
    for _, _, h, w in boxes:  # h and w are rounded from the drawn area and ratio: within 0.5 each
        assert 0.5 * height * width <= (h + 0.5) * (w + 0.5) and h * w <= height * width
        assert (w - 0.5) / (h + 0.5) <= 4 / 3 and (w + 0.5) / (h - 0.5) >= 3 / 4
    areas = [h * w / (height * width) for _, _, h, w in boxes]
    assert min(areas) < 0.52 and max(areas) > 0.98
    assert 900 < sum(flips) < 1100


@pytest.mark.parametrize(("size", "image_size"), [(48, 32), (256, 224)])
def test_batched_views_match_the_per_image_views(size, image_size):
    images = noise(10, size, seed=1)
    boxes, _ = draw_params(10, size, size, seeded(3))
    sides = [side for box in boxes for side in box[2:]]
    assert min(sides) < image_size < max(sides)  # some crops are enlarged, some shrunk

    per_image = augment_batch(images, image_size, seeded(3), batched=False)
    batched = augment_batch(images, image_size, seeded(3), batched=True)

    assert batched.shape == per_image.shape and batched.dtype == torch.float32 and batched.is_contiguous()
    assert difference(batched, per_image).max() < TOLERANCE


def test_batched_views_match_at_the_edges_at_the_output_size_and_for_thin_crops():
    x = floats(noise(6, 48, seed=4))
    boxes = [(0, 0, 48, 48), (0, 16, 32, 32), (16, 0, 32, 32), (5, 7, 20, 41), (0, 40, 48, 8), (47, 0, 1, 48)]
    flips = [False, True, False, True, True, False]

    assert difference(crop_batched(x, boxes, flips, 32), crop_each(x, boxes, flips, 32)).max() < TOLERANCE


def test_a_wrong_box_or_flip_is_caught_by_the_tolerance():
    """The tolerance above is tight enough: one pixel off, x and y transposed, or a missed
    mirror each make that sample's view differ by far more."""
    x = floats(noise(4, 48, seed=6))
    boxes, flips = [(3, 9, 40, 30), (10, 2, 33, 44), (0, 0, 48, 48), (6, 6, 36, 36)], [False, True, True, False]
    reference = crop_each(x, boxes, flips, 32)
    wrong = {
        "one pixel right": ([(3, 10, 40, 30), *boxes[1:]], flips),
        "one pixel down": ([(4, 9, 40, 30), *boxes[1:]], flips),
        "one pixel narrower": ([(3, 9, 40, 29), *boxes[1:]], flips),
        "x and y transposed": ([(9, 3, 30, 40), *boxes[1:]], flips),
        "a missed mirror": (boxes, [False, False, True, False]),
        "an extra mirror": (boxes, [False, True, True, True]),
    }
    for name, (bad_boxes, bad_flips) in wrong.items():
        error = difference(crop_batched(x, bad_boxes, bad_flips, 32), reference)
        assert error.max() > 100 * TOLERANCE, name
    assert difference(crop_batched(x, boxes, flips, 32), reference).max() < TOLERANCE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_by_default_and_gives_the_cpu_views():
    images = noise(10, 48)

    gpu = augment_batch(images.cuda(), 32, seeded(8))
    cpu = augment_batch(images, 32, seeded(8))

    assert gpu.is_cuda
    assert difference(gpu.cpu(), cpu).max() < TOLERANCE
