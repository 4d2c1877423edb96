"""Grad-CAM++ maps, localisation metrics, image choice, run loading and the
Figures 6-8 notebook, on tiny inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedlib import explain
from fedlib.config import resolve
from fedlib.data.covidx import Record
from fedlib.errors import UserError
from fedlib.experiment import run
from fedlib.models import MODEL_NAMES, build_model

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_gradcam.ipynb"
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


@pytest.fixture(scope="module", params=MODEL_NAMES)
def named_model(request):
    """Each model built once per module (COVID-Net has 117M parameters)."""
    torch.manual_seed(0)
    return request.param, build_model(request.param)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- maps


def test_maps_have_input_shape_and_unit_range(named_model, images):
    name, model = named_model

    maps = explain.gradcam_maps(model, name, images)

    assert maps.shape == (2, 64, 64)
    assert maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0


def test_maps_are_deterministic_and_follow_targets(named_model, images):
    name, model = named_model

    first = explain.gradcam_maps(model, name, images)
    again = explain.gradcam_maps(model, name, images)
    predicted = explain.predict_proba(model, images).argmax(1)
    explicit = explain.gradcam_maps(model, name, images, targets=predicted)
    one_by_one = explain.gradcam_maps(model, name, images, batch_size=1)

    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, explicit)
    # Batch size changes the float summation order, nothing else.
    np.testing.assert_allclose(first, one_by_one, atol=1e-3)


def test_model_state_is_left_as_found(named_model, images):
    name, model = named_model
    model.train()
    frozen = list(model.parameters())[0]
    frozen.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    grads = [p.grad for p in model.parameters()]

    explain.gradcam_maps(model, name, images)

    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is g for p, g in zip(model.parameters(), grads, strict=True))
    assert all(not getattr(m, d) for m in model.modules() for d in HOOK_DICTS)
    frozen.requires_grad_(True)


def test_overlay_is_uint8_image():
    image = np.full((8, 8, 3), 128, np.uint8)
    cam = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)

    out = explain.overlay(image, cam)

    assert out.shape == (8, 8, 3) and out.dtype == np.uint8


# ---------------------------------------------------------------- localisation


def test_energy_inside_and_pointing_on_a_hand_built_map():
    cam = np.array([[0, 0, 0, 0],
                    [0, 4, 2, 0],
                    [0, 2, 1, 0],
                    [1, 0, 0, 0]], dtype=np.float32)  # sum 10
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True  # holds 4 + 2 + 2 + 1 = 9; 4 of 16 pixels

    assert explain.energy_inside(cam, mask) == pytest.approx(0.9)
    assert explain.pointing_hit(cam, mask) == 1.0
    assert explain.pointing_hit(cam, ~mask) == 0.0
    assert explain.energy_inside(cam, ~mask) == pytest.approx(0.1)


def test_uniform_and_zero_maps_score_the_mask_fraction():
    mask = np.zeros((4, 4), bool)
    mask[0, :3] = True  # 3 of 16 pixels

    assert explain.chance_level(mask) == pytest.approx(3 / 16)
    for cam in (np.full((4, 4), 0.7), np.zeros((4, 4))):
        assert explain.energy_inside(cam, mask) == pytest.approx(3 / 16)
        assert explain.pointing_hit(cam, mask) == pytest.approx(3 / 16)


def test_pointing_splits_ties():
    cam = np.zeros((4, 4))
    cam[0, 0] = cam[3, 3] = 1.0
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True

    assert explain.pointing_hit(cam, mask) == pytest.approx(0.5)


# ---------------------------------------------------------------- images and runs


def _records(labels):
    return [Record(f"p{i}", f"img{i}.png", int(c), "site-a") for i, c in enumerate(labels)]


def test_pick_images_is_seeded_and_one_per_class():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    records = _records(labels)

    picked = explain.pick_images(records, labels, seed=3)
    again = explain.pick_images(records, labels, seed=3)
    others = {tuple(explain.pick_images(records, labels, seed=s)) for s in range(10)}

    assert picked == again
    assert [int(labels[i]) for i in picked] == [0, 1, 2]
    assert len(others) > 1
    assert explain.pick_images(records, labels, 0, filenames=["img4.png", "img0.png"]) == [4, 0]


def test_pick_images_rejects_an_unknown_file_name():
    labels = np.array([0, 1])
    with pytest.raises(UserError, match="nope.png"):
        explain.pick_images(_records(labels), labels, 0, filenames=["img0.png", "nope.png"])


def test_load_run_on_a_missing_dir_says_train_it(tmp_path):
    with pytest.raises(UserError, match="train it first"):
        explain.load_run(tmp_path / "resnet18-fedavg")


def test_figure_stems_follow_the_class_order():
    classes = ("pneumonia", "normal", "COVID-19")
    assert [explain.figure_stem(i, classes) for i in range(3)] == [
        "fig6_gradcam_pneumonia", "fig7_gradcam_normal", "fig8_gradcam_covid19"]


# ---------------------------------------------------------------- notebook


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Finished smoke runs (64 px, so the last feature map is 2x2, not 1x1)."""
    tmp = tmp_path_factory.mktemp("explain")
    for model in ("resnet18", "mobilenet_v2"):
        for mode in ("fedavg", "central"):
            cfg = resolve("smoke", model=model, mode=mode, image_size=64, data_dir=str(tmp / "data"))
            run(cfg, tmp / "runs" / f"{model}-{mode}", progress=False)
    return tmp


def test_explain_run_writes_a_png(smoke_runs, tmp_path):
    out = explain.explain_run(smoke_runs / "runs" / "resnet18-fedavg", out=tmp_path / "g.png")

    assert out == tmp_path / "g.png" and out.stat().st_size > 0


def test_notebook_writes_figures_and_table(smoke_runs):
    import papermill

    figures = smoke_runs / "figures"
    papermill.execute_notebook(
        str(NOTEBOOK), str(smoke_runs / "04_gradcam.out.ipynb"), kernel_name="fedlib",
        parameters=dict(runs_dir=str(smoke_runs / "runs"), figures_dir=str(figures),
                        profile="smoke", models=["resnet18", "mobilenet_v2", "resnext50_32x4d"]),
        progress_bar=False,
    )

    for stem in ("fig6_gradcam_pneumonia", "fig7_gradcam_normal", "fig8_gradcam_covid19"):
        for suffix in (".png", ".pdf"):
            assert (figures / f"{stem}{suffix}").stat().st_size > 0
    table = pd.read_csv(figures / "table_gradcam_localisation.csv")
    assert list(zip(table["model"], table["mode"], strict=True)) == [
        ("resnet18", "fedavg"), ("resnet18", "central"),
        ("mobilenet_v2", "fedavg"), ("mobilenet_v2", "central")]
    values = table[["energy_inside", "uniform_energy_inside", "pointing_hit_rate",
                    "uniform_pointing_hit_rate"]]
    assert ((values >= 0) & (values <= 1)).all().all()
    assert (table["images"] > 0).all()
    assert (figures / "table_gradcam_localisation.md").read_text().startswith("| model |")
    executed = (smoke_runs / "04_gradcam.out.ipynb").read_text()
    assert "resnext50_32x4d-fedavg is not a finished run" in executed
