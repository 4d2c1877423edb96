"""Batch transforms: torchvision parity, determinism, normalisation."""

import pytest
import torch
import torchvision.transforms as T

from fedlib.data import IMAGENET_MEAN, IMAGENET_STD, augment_batch, eval_batch
from fedlib.data.transforms import crop_params

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def random_batch(n=4, size=37, seed=0):
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def gradient_batch(n, size=37):
    """Every image brightens from left to right, so a mirrored view darkens."""
    row = torch.linspace(0, 255, size).round().to(torch.uint8)
    return row.view(1, 1, size, 1).expand(n, size, size, 3).contiguous()


@pytest.mark.parametrize(("height", "width"), [(37, 37), (256, 256), (30, 50), (10, 200), (200, 10)])
def test_crop_params_match_torchvision_for_the_same_seed(height, width):
    image = torch.zeros(3, height, width)
    for seed in range(20):
        torch.manual_seed(seed)
        expected = T.RandomResizedCrop.get_params(image, scale=[0.5, 1.0], ratio=[3 / 4, 4 / 3])

        got = crop_params(height, width, torch.Generator().manual_seed(seed))

        assert got == tuple(expected), f"seed {seed}"


def test_augment_matches_torchvision_pipeline_for_the_same_seed():
    images = random_batch(n=5, size=37, seed=1)
    pipeline = T.Compose([T.RandomResizedCrop(32, scale=(0.5, 1.0)), T.RandomHorizontalFlip()])
    torch.manual_seed(7)
    expected = torch.stack([pipeline(img.permute(2, 0, 1).float() / 255) for img in images])
    expected = (expected - MEAN) / STD

    out = augment_batch(images, 32, torch.Generator().manual_seed(7))

    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_augment_shape_and_dtype():
    out = augment_batch(random_batch(n=3, size=37), 32, torch.Generator().manual_seed(0))

    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32 and out.is_contiguous()


def test_augment_is_deterministic_given_the_generator_state():
    images = random_batch()

    first = augment_batch(images, 32, torch.Generator().manual_seed(3))
    again = augment_batch(images, 32, torch.Generator().manual_seed(3))
    other = augment_batch(images, 32, torch.Generator().manual_seed(4))

    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_augment_advances_the_generator():
    images = random_batch()
    generator = torch.Generator().manual_seed(3)

    first = augment_batch(images, 32, generator)
    second = augment_batch(images, 32, generator)

    assert not torch.equal(first, second)


def test_augment_flips_about_half_the_samples():
    out = augment_batch(gradient_batch(64), 32, torch.Generator().manual_seed(0))

    left, right = out[:, 0, :, :4].mean(dim=(1, 2)), out[:, 0, :, -4:].mean(dim=(1, 2))
    flipped = int((left > right).sum())
    assert 20 <= flipped <= 44  # binomial(64, 0.5); this seed gives a fixed count


def test_augment_crops_vary_in_scale():
    out = augment_batch(gradient_batch(16), 32, torch.Generator().manual_seed(0))

    # the brightness range a view covers depends on the width of its crop
    spans = (out[:, 0].amax(dim=(1, 2)) - out[:, 0].amin(dim=(1, 2))).unique()
    assert len(spans) > 4


def test_augment_constant_gray_maps_to_its_normalised_value():
    images = torch.full((2, 37, 37, 3), 128, dtype=torch.uint8)

    out = augment_batch(images, 32, torch.Generator().manual_seed(0))

    expected = ((128 / 255 - MEAN) / STD).expand(2, 3, 32, 32)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_augment_wants_uint8_nhwc():
    with pytest.raises(ValueError, match=r"uint8 images of shape \(N, H, W, 1 or 3\)"):
        augment_batch(torch.zeros(2, 3, 37, 37), 32, torch.Generator())


def test_eval_at_the_target_size_is_only_normalisation():
    images = random_batch(n=2, size=32)

    out = eval_batch(images, 32)

    expected = (images.permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_eval_resizes_the_cached_square():
    images = torch.full((3, 37, 37, 3), 200, dtype=torch.uint8)

    out = eval_batch(images, 32)

    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, ((200 / 255 - MEAN) / STD).expand(3, 3, 32, 32), atol=1e-5, rtol=0)


def test_eval_is_deterministic_and_leaves_the_input_alone():
    images = random_batch()
    before = images.clone()

    assert torch.equal(eval_batch(images, 32), eval_batch(images, 32))
    assert torch.equal(images, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_result():
    images = random_batch()

    cpu = augment_batch(images, 32, torch.Generator().manual_seed(5))
    gpu = augment_batch(images.cuda(), 32, torch.Generator().manual_seed(5), batched=False)  # CUDA's default batches

    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
    torch.testing.assert_close(eval_batch(images.cuda(), 32).cpu(), eval_batch(images, 32), atol=1e-4, rtol=0)
