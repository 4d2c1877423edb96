"""Model registry: shapes, training step, Grad-CAM layer, parameter counts."""

import pytest
import torch

from fedlib.errors import UserError
from fedlib.models import (
    MODEL_NAMES,
    PAPER_MODELS,
    PUBLISHED_PARAMS,
    build_model,
    cam_layer,
    param_table,
)

BATCH = 2


@pytest.fixture(scope="module", params=MODEL_NAMES)
def named_model(request):
    # COVID-Net has 117M parameters; build each model once for all grid tests.
    torch.manual_seed(0)
    return request.param, build_model(request.param)


@pytest.fixture(scope="module")
def covidnet_small():
    torch.manual_seed(0)
    return build_model("covidnet_small").eval()


def test_output_is_batch_by_three_at_64px(named_model):
    _, model = named_model
    model.eval()

    with torch.no_grad():
        logits = model(torch.randn(BATCH, 3, 64, 64))

    assert logits.shape == (BATCH, 3)


def test_one_optimizer_step_changes_first_and_last_weights(named_model):
    _, model = named_model
    model.train()
    params = list(model.parameters())
    first, last = params[0].detach().clone(), params[-1].detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(BATCH, 3, 64, 64), torch.tensor([0, 2])

    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()

    # The stem moving shows the gradient reached the input end of the network.
    assert not torch.equal(params[0].detach(), first)
    assert not torch.equal(params[-1].detach(), last)


def test_cam_layer_is_in_model_and_yields_a_feature_map(named_model):
    name, model = named_model
    model.eval()
    layer = cam_layer(model, name)
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))

    with torch.no_grad():
        model(torch.randn(BATCH, 3, 64, 64))
    handle.remove()

    assert any(m is layer for m in model.modules())
    assert len(seen) == 1
    assert seen[0].dim() == 4 and seen[0].shape[0] == BATCH


def test_covidnet_adaptive_pool_is_identity_at_224px(covidnet_small):
    x = torch.randn(1, 3, 224, 224)

    with torch.no_grad():
        features = covidnet_small.features(x)
        with_pool = covidnet_small(x)
        without_pool = covidnet_small.head(features)

    assert features.shape == (1, 2048, 7, 7)
    assert torch.equal(with_pool, without_pool)


def test_covidnet_runs_at_96px(covidnet_small):
    with torch.no_grad():
        logits = covidnet_small(torch.randn(BATCH, 3, 96, 96))

    assert logits.shape == (BATCH, 3)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_covidnet_params_within_3_percent_of_published(name):
    (row,) = param_table((name,))

    assert abs(row["params"] / PUBLISHED_PARAMS[name] - 1) < 0.03


def test_param_table_rows_for_paper_models_with_mobilenet_smallest():
    rows = param_table()

    assert [r["model"] for r in rows] == list(PAPER_MODELS)
    assert min(rows, key=lambda r: r["params"])["model"] == "mobilenet_v2"
    assert rows[0]["published_millions"] == pytest.approx(117.4)
    assert rows[1]["published_millions"] is None
    assert set(rows[0]) == {
        "model",
        "display_name",
        "params",
        "params_millions",
        "published_millions",
    }


def test_resnext_head_really_has_three_outputs():
    # The authors' code left ResNeXt with 1,000 outputs; guard the fix directly.
    model = build_model("resnext50_32x4d")

    assert model.fc.out_features == 3


@pytest.mark.parametrize("call", [build_model, lambda n: cam_layer(torch.nn.Linear(1, 1), n)])
def test_unknown_name_raises_user_error_listing_choices(call):
    with pytest.raises(UserError) as excinfo:
        call("vgg16")

    message = str(excinfo.value)
    assert "vgg16" in message
    assert all(name in message for name in MODEL_NAMES)
