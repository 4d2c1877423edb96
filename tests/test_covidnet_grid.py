"""COVID-Net's head flattens the grid its last stage gives at the run's image size
(``TrainConfig.head_grid``), 7x7 at the paper's 224 px; ``--covidnet-grid 7`` keeps the
paper's 117.6M parameters at any size, and runs trained before the setting load as 7x7."""

from __future__ import annotations

import pytest
import torch

from fedlib import config
from fedlib.errors import UserError
from fedlib.models import build_model, param_count
from fedlib.models.covidnet import STAGE_CHANNELS


@pytest.mark.parametrize(("image_size", "grid"), [(224, 7), (64, 2), (48, 1), (32, 1), (96, 3)])
def test_the_head_grid_is_the_last_stages_own(image_size, grid):
    cfg = config.resolve("quick", None, model="covidnet_small", image_size=image_size)
    assert cfg.head_grid == grid
    model = build_model("covidnet_small", head_grid=cfg.head_grid).eval()
    with torch.no_grad():
        features = model.features(torch.zeros(1, 3, image_size, image_size))
        assert model(torch.zeros(2, 3, image_size, image_size)).shape == (2, 3)
    assert features.shape[-1] == grid  # the pool in front of the head is the identity
    first = model.head[1]
    assert first.in_features == grid * grid * STAGE_CHANNELS[-1]


def test_the_paper_count_at_224_and_with_grid_7_at_any_size():
    at_224 = config.resolve("paper", None, model="covidnet_small")
    assert at_224.image_size == 224 and at_224.head_grid == 7
    paper = param_count(build_model("covidnet_small", head_grid=at_224.head_grid))
    quick = config.resolve("quick", None, model="covidnet_small")
    small = param_count(build_model("covidnet_small", head_grid=quick.head_grid))
    assert paper == 117_559_299
    # only the first dense layer changes: 7*7*2048 -> 2*2*2048 inputs of its 1024 units
    assert paper - small == (49 - 4) * 2048 * 1024
    seven = config.resolve("quick", None, model="covidnet_small", covidnet_grid=7)
    assert param_count(build_model("covidnet_small", head_grid=seven.head_grid)) == paper


@pytest.mark.parametrize(
    ("bad", "said"),
    [(-1, "--covidnet-grid must be an integer from 0"), (8, "to 7"), (2.5, "covidnet_grid must be an integer")],
)
def test_a_bad_grid_is_one_line(bad, said):
    with pytest.raises(UserError, match=said):
        config.resolve("quick", None, covidnet_grid=bad)
