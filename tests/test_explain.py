"""Grad-CAM++ maps, the CAM block choice, localisation on the native grid,
run selection, image choice and the Figures 6-8 notebook, on tiny inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_grad_cam import GradCAMPlusPlus
from torch import nn

from fedlib import explain
from fedlib.config import resolve
from fedlib.data.covidx import Record
from fedlib.data.resolve import load_dataset
from fedlib.data.synthetic import load_mask
from fedlib.data.transforms import eval_batch
from fedlib.errors import UserError
from fedlib.models import MODEL_NAMES, build_model, cam_layer
from fedlib.models.registry import cam_candidates, cam_grids, pick_cam_layer
from fedlib.report import describe, gradcam, localisation
from fedlib.report.selection import pick_images, select_runs
from fedlib.run.folder import run_name
from fedlib.runner import train as run

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

    maps = gradcam.gradcam_maps(model, name, images)

    assert maps.shape == (2, 64, 64)
    assert maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0


def test_native_maps_are_on_the_picked_grid_and_upsample_to_the_librarys_output(named_model, images):
    name, model = named_model
    layer, grid = pick_cam_layer(name, 64)

    native = gradcam.native_maps(model, layer, images)
    library = GradCAMPlusPlus(model=model, target_layers=[model.get_submodule(layer)])
    try:
        expected = library(input_tensor=images, targets=None)
    finally:
        library.activations_and_grads.release()

    assert grid == (8, 8)
    assert native.shape == (2, 8, 8) and native.dtype == np.float32
    assert native.min() == 0.0 and native.max() <= 1.0
    # The library divides by max + 1e-7; ours by max: the same maps up to that scale.
    peak = expected.max(axis=(1, 2), keepdims=True)
    assert (peak > 0).all()
    np.testing.assert_allclose(gradcam.upsample(native, 64, 64), expected / peak, atol=1e-5)
    np.testing.assert_allclose(gradcam.gradcam_maps(model, name, images), expected / peak, atol=1e-5)
    np.testing.assert_allclose(native.max(axis=(1, 2)), 1.0)


def test_maps_are_deterministic_and_follow_targets(named_model, images):
    name, model = named_model

    first = gradcam.gradcam_maps(model, name, images)
    again = gradcam.gradcam_maps(model, name, images)
    predicted = gradcam.predict_proba(model, images).argmax(1)
    explicit = gradcam.gradcam_maps(model, name, images, targets=predicted)
    one_by_one = gradcam.gradcam_maps(model, name, images, batch_size=1)

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

    gradcam.gradcam_maps(model, name, images)

    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is g for p, g in zip(model.parameters(), grads, strict=True))
    assert all(not getattr(m, d) for m in model.modules() for d in HOOK_DICTS)
    frozen.requires_grad_(True)


def test_overlay_is_uint8_image():
    image = np.full((8, 8, 3), 128, np.uint8)
    cam = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)

    out = gradcam.overlay(image, cam)

    assert out.shape == (8, 8, 3) and out.dtype == np.uint8


# ---------------------------------------------------------------- which block


@pytest.mark.parametrize(
    ("name", "size", "expected"),
    [
        ("resnet18", 224, ("layer4.1", (7, 7))),  # the paper's last block
        ("resnet18", 64, ("layer2.1", (8, 8))),  # layer4 is 2x2, layer3 4x4
        ("resnet18", 32, ("layer1.1", (8, 8))),
        ("resnext50_32x4d", 224, ("layer4.2", (7, 7))),
        ("resnext50_32x4d", 64, ("layer2.3", (8, 8))),
        ("mobilenet_v2", 224, ("features.18", (7, 7))),
        ("mobilenet_v2", 64, ("features.7.conv.0", (8, 8))),  # before block 7's stride-2 conv
        ("mobilenet_v2", 32, ("features.4.conv.0", (8, 8))),
        ("covidnet_small", 224, ("features.9", (7, 7))),
        ("covidnet_small", 64, ("features.5", (8, 8))),
        ("covidnet_large", 64, ("features.5", (8, 8))),
    ],
)
def test_pick_cam_layer_takes_the_latest_block_of_at_least_7x7(name, size, expected):
    assert pick_cam_layer(name, size) == expected


def test_the_paper_layer_is_the_last_candidate_and_no_grid_large_enough_takes_the_finest():
    model = build_model("resnet18")

    assert cam_layer(model, "resnet18") is model.layer4[-1]
    assert cam_candidates("mobilenet_v2")[:3] == ["features.0", "features.1.conv.0", "features.2.conv.0"]
    assert cam_candidates("mobilenet_v2")[-1] == "features.18"
    assert [g for _, g in cam_grids("resnet18", 64)] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert pick_cam_layer("resnet18", 64, min_grid=20) == ("layer1.1", (16, 16))
    assert pick_cam_layer("resnet18", 64, min_grid=1) == ("layer4.1", (2, 2))


# ---------------------------------------------------------------- localisation, by hand


def test_pool_mask_gives_each_cells_lesion_fraction():
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = mask[0, 1] = mask[1, 0] = True  # 3 of the top-left 2x2 block
    mask[2:4, 2:4] = True  # all of the bottom-right block
    mask[3, 1] = True  # 1 of the bottom-left block

    np.testing.assert_array_equal(localisation.pool_mask(mask, (2, 2)), [[0.75, 0.0], [0.25, 1.0]])


def test_pool_mask_with_overlapping_cells():
    # 5 px to 2 cells: rows/cols 0-2 and 2-4 (adaptive pooling shares the middle one).
    mask = np.zeros((5, 5), bool)
    mask[0, :] = True

    np.testing.assert_allclose(localisation.pool_mask(mask, (2, 2)), [[3 / 9, 3 / 9], [0.0, 0.0]])
    centre = np.zeros((5, 5), bool)
    centre[2, 2] = True
    np.testing.assert_allclose(localisation.pool_mask(centre, (2, 2)), np.full((2, 2), 1 / 9))


def test_energy_share_and_pointing_on_a_hand_built_map():
    cam = np.array([[4, 0], [1, 5]], dtype=np.float32)  # sum 10
    coverage = np.array([[1.0, 0.5], [0.0, 0.25]])

    assert localisation.energy_share(cam, coverage) == pytest.approx((4 * 1.0 + 5 * 0.25) / 10)
    assert localisation.pointing_hit(cam, coverage) == 1.0  # the max (5) is on a cell a quarter lesion
    assert localisation.pointing_hit(np.array([[4, 6], [1, 5]]), np.array([[1.0, 0.0], [0.0, 0.0]])) == 0.0
    assert localisation.chance_energy_share(coverage) == pytest.approx(1.75 / 4)
    assert localisation.chance_hit(coverage) == pytest.approx(3 / 4)


def test_uniform_and_zero_maps_score_chance_and_count_as_ties():
    coverage = np.zeros((4, 4))
    coverage[0, :3] = [1.0, 0.5, 0.5]  # 3 of 16 cells touch; mean 2 / 16

    for cam in (np.full((4, 4), 0.7), np.zeros((4, 4))):
        scores = localisation.score_map(cam, coverage)
        assert scores == {
            "hit": pytest.approx(3 / 16),
            "chance_hit": pytest.approx(3 / 16),
            "energy_share": pytest.approx(2 / 16),
            "chance_energy_share": pytest.approx(2 / 16),
            "tie": True,
        }


def test_tied_maxima_score_the_share_of_them_on_the_lesion():
    cam = np.zeros((4, 4))
    cam[0, 0] = cam[3, 3] = cam[1, 2] = 1.0
    coverage = np.zeros((4, 4))
    coverage[0, 0] = 0.1

    scores = localisation.score_map(cam, coverage)

    assert scores["hit"] == pytest.approx(1 / 3)
    assert scores["tie"] is True
    near = np.array([[1.0, 1.0 - 1e-9], [0.0, 0.0]])  # within the relative tolerance
    apart = np.array([[1.0, 0.999], [0.0, 0.0]])
    assert localisation.score_map(near, np.array([[0.0, 1.0], [0, 0]]))["hit"] == 0.5
    assert localisation.score_map(apart, np.array([[0.0, 1.0], [0, 0]]))["tie"] is False
    assert localisation.score_map(apart, np.array([[0.0, 1.0], [0, 0]]))["hit"] == 0.0


def test_scoring_refuses_a_mismatched_grid_or_negative_map():
    with pytest.raises(ValueError, match="differ in shape"):
        localisation.score_map(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        localisation.energy_share(np.array([[1.0, -1.0]]), np.zeros((1, 2)))


# ---------------------------------------------------------------- localisation, whole path


class Spotlight(nn.Module):
    """A model whose Grad-CAM++ map at ``features`` is known: the input's
    brightness pooled to 8x8 cells of a 64 px input, plus a constant that keeps
    it positive. Its logits are the spatial sum of that map times 1, so every
    gradient is 1, every Grad-CAM++ weight positive, and after the library's
    min-shift the map is 1 on the brightest cell and 0 on uniform ones."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 1, 1), nn.AvgPool2d(8))
        self.head = nn.Linear(1, 3, bias=False)
        nn.init.constant_(self.features[0].weight, 1.0)
        nn.init.constant_(self.features[0].bias, 10.0)
        nn.init.constant_(self.head.weight, 1.0)

    def forward(self, x):
        return self.head(self.features(x).sum(dim=(2, 3)))


def _bright_cell(row: int, col: int) -> np.ndarray:
    """A black 64 px image with one white 8x8 cell."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[8 * row : 8 * row + 8, 8 * col : 8 * col + 8] = 255
    return image


def test_whole_path_scores_a_map_on_the_lesion_as_a_hit_and_one_off_it_as_a_miss():
    # A 128 px mask (twice the 64 px input): 16 px per cell of the 8x8 grid.
    mask = np.zeros((128, 128), bool)
    mask[32:64, 32:56] = True  # cells (2, 2) and (3, 2) whole, (2, 3) and (3, 3) half
    images = np.stack([_bright_cell(3, 2), _bright_cell(2, 3), _bright_cell(6, 6), np.zeros((64, 64, 3), np.uint8)])

    scores = localisation.localisation_scores(Spotlight(), "features", images, [1, 1, 1, 1], [mask] * 4, image_size=64)

    assert list(scores["rows"]) == [8] * 4 and list(scores["cols"]) == [8] * 4
    assert list(scores["hit"]) == [1.0, 1.0, 0.0, pytest.approx(4 / 64)]  # last: an all-zero map
    np.testing.assert_allclose(scores["energy_share"], [1.0, 0.5, 0.0, 768 / 16384], atol=1e-6)
    assert list(scores["tie"]) == [False, False, False, True]
    np.testing.assert_allclose(scores["chance_hit"], 4 / 64)
    np.testing.assert_allclose(scores["chance_energy_share"], 32 * 24 / 128**2)


# ---------------------------------------------------------------- images and runs


def _records(labels):
    return [Record(f"p{i}", f"img{i}.png", int(c), "site-a") for i, c in enumerate(labels)]


def test_pick_images_is_seeded_and_one_per_class():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    records = _records(labels)

    picked = pick_images(records, labels, seed=3)
    again = pick_images(records, labels, seed=3)
    others = {tuple(pick_images(records, labels, seed=s)) for s in range(10)}

    assert picked == again
    assert [int(labels[i]) for i in picked] == [0, 1, 2]
    assert len(others) > 1
    assert pick_images(records, labels, 0, filenames=["img4.png", "img0.png"]) == [4, 0]


def test_pick_images_rejects_an_unknown_file_name():
    labels = np.array([0, 1])
    with pytest.raises(UserError, match="nope.png"):
        pick_images(_records(labels), labels, 0, filenames=["img0.png", "nope.png"])


def test_explain_run_on_a_missing_dir_says_train_it(tmp_path):
    with pytest.raises(UserError, match="train it first"):
        explain.explain_run(tmp_path / "resnet18-fedavg-seed0")


def test_figure_stems_follow_the_class_order():
    classes = ("pneumonia", "normal", "COVID-19")
    assert [gradcam.figure_stem(i, classes) for i in range(3)] == [
        "fig6_gradcam_pneumonia",
        "fig7_gradcam_normal",
        "fig8_gradcam_covid19",
    ]


def _fake_run(
    runs_dir: Path, model: str, mode: str, seed: int, folder: str | None = None, profile: str = "smoke"
) -> Path:
    """A finished run as results.find_runs sees it: config.json and final.json only."""
    path = runs_dir / (folder or run_name(model, mode, seed))
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps(
            {
                "model": model,
                "mode": mode,
                "seed": seed,
                "profile": profile,
                "image_size": 64,
                "data_fingerprint": "abc",
            }
        )
    )
    (path / "final.json").write_text(json.dumps({"data_description": "SYNTHETIC chest X-rays", "synthetic": True}))
    return path


def test_select_runs_orders_by_model_mode_seed_and_names_what_is_missing(tmp_path):
    for seed in (2, 1):
        for mode in ("central", "fedavg"):
            _fake_run(tmp_path, "resnet18", mode, seed)
    _fake_run(tmp_path, "mobilenet_v2", "fedavg", 1)

    first = select_runs(tmp_path, ["resnet18", "mobilenet_v2"])
    both = select_runs(tmp_path, ["resnet18", "mobilenet_v2"], seeds=[2, 1])

    assert first.seeds == [1] and first.first_seed == 1
    assert [(r.model, r.mode, r.seed) for r in first.runs] == [
        ("resnet18", "fedavg", 1),
        ("resnet18", "central", 1),
        ("mobilenet_v2", "fedavg", 1),
    ]
    assert first.notes == [
        f"mobilenet_v2-central-seed1 is not a finished run in {tmp_path}, so its "
        "panels stay empty and it has no row in the table; train it with "
        "`fedlib reproduce`."
    ]
    assert [(r.model, r.mode, r.seed) for r in both.runs] == [
        ("resnet18", "fedavg", 2),
        ("resnet18", "fedavg", 1),
        ("resnet18", "central", 2),
        ("resnet18", "central", 1),
        ("mobilenet_v2", "fedavg", 1),
    ]
    assert set(both.figure_runs) == {("resnet18", "fedavg"), ("resnet18", "central")}
    assert {r.seed for r in both.figure_runs.values()} == {2}
    assert both.synthetic
    assert describe.describe_runs(both.runs, compact=True) == "SYNTHETIC chest X-rays, profile smoke, 64 px input"


def test_select_runs_prefers_the_canonical_folder_and_refuses_mixed_profiles(tmp_path):
    _fake_run(tmp_path, "resnet18", "fedavg", 0, folder="resnet18-fedavg")  # an older layout
    canonical = _fake_run(tmp_path, "resnet18", "fedavg", 0)

    picked = select_runs(tmp_path, ["resnet18"], modes=["fedavg"])

    assert [r.path for r in picked.runs] == [canonical]
    assert any("resnet18-fedavg holds the same run" in n for n in picked.notes)
    _fake_run(tmp_path, "resnet18", "central", 0, profile="quick")
    with pytest.raises(UserError, match="differ in profile"):
        select_runs(tmp_path, ["resnet18"])


def test_select_runs_on_an_empty_folder_says_so(tmp_path):
    picked = select_runs(tmp_path / "none", ["resnet18"])

    assert picked.runs == [] and picked.seeds == [] and picked.figure_runs == {}
    assert not picked.synthetic
    assert picked.notes and "no finished runs" in picked.notes[0]


# ---------------------------------------------------------------- trained runs and the notebook


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Finished smoke runs at 64 px (the quick profile's size: the last map is 2x2)."""
    tmp = tmp_path_factory.mktemp("explain")
    for model in ("resnet18", "mobilenet_v2"):
        for mode in ("fedavg", "central"):
            cfg = resolve("smoke", model=model, mode=mode, image_size=64, data_dir=str(tmp / "data"))
            run(cfg, tmp / "runs" / run_name(model, mode, cfg.seed), progress=False)
    return tmp


@pytest.mark.parametrize("inside", [True, False])
def test_localisation_table_scores_a_peak_on_the_lesion_as_hits(smoke_runs, monkeypatch, inside):
    """The notebook's function, with only the CAM replaced by one-cell maps at the
    most (inside) or least (outside) lesion-covered cell: loading, masks,
    pooling and scoring are the library's."""
    selection = select_runs(smoke_runs / "runs", ["resnet18", "mobilenet_v2"], [0])
    cfg = selection.runs[0].train_config
    data = load_dataset(cfg, progress=False)
    lesion = [
        i
        for i, r in enumerate(data.test_records)
        if data.classes[r.label] != "normal" and load_mask(data.root, "test", r.filename).any()
    ]
    views = eval_batch(torch.from_numpy(np.ascontiguousarray(data.test_images[lesion])), 64)
    cover = [
        localisation.pool_mask(load_mask(data.root, "test", data.test_records[i].filename), (8, 8)) for i in lesion
    ]
    peaks = [np.unravel_index(np.argmax(c) if inside else np.argmin(c), c.shape) for c in cover]

    def one_cell_maps(model, layer, x, targets=None, batch_size=None):
        out = np.zeros((len(x), 8, 8), np.float32)
        for k, xi in enumerate(x.cpu()):
            j = int(torch.stack([(v - xi).abs().max() for v in views]).argmin())
            out[(k, *peaks[j])] = 1.0
        return out

    monkeypatch.setattr(localisation, "native_maps", one_cell_maps)
    table = localisation.localisation_table(selection.runs)

    assert list(table.columns) == localisation.TABLE_COLUMNS
    assert list(table["grid"]) == ["8x8"] * 4
    assert list(table["layer"]) == ["layer2.1", "layer2.1", "features.7.conv.0", "features.7.conv.0"]
    assert (table["images"] == len(lesion)).all() and len(lesion) > 0
    assert (table["hit_rate"] == (1.0 if inside else 0.0)).all()
    assert (table["tie_rate"] == 0.0).all()
    expected_energy = np.mean([c.max() for c in cover]) if inside else 0.0
    np.testing.assert_allclose(table["energy_share"], expected_energy)
    np.testing.assert_allclose(table["chance_hit_rate"], np.mean([(c > 0).mean() for c in cover]))
    np.testing.assert_allclose(table["chance_energy_share"], np.mean([c.mean() for c in cover]))


def test_explain_run_writes_a_png(smoke_runs, tmp_path):
    out = explain.explain_run(smoke_runs / "runs" / run_name("resnet18", "fedavg", 0), out=tmp_path / "g.png")

    assert out == tmp_path / "g.png" and out.stat().st_size > 0


def test_paper_figure_titles_say_data_profile_size_and_block(smoke_runs, tmp_path):
    selection = select_runs(smoke_runs / "runs", ["resnet18"], [0])

    figures = gradcam.paper_figures(selection.figure_runs, ["resnet18"], seed=0)

    assert sorted(figures) == ["fig6_gradcam_pneumonia", "fig7_gradcam_normal", "fig8_gradcam_covid19"]
    fig = figures["fig8_gradcam_covid19"]
    title = fig.get_suptitle()
    assert "SYNTHETIC" in title and "profile smoke" in title and "64 px input" in title
    assert "training seed 0" in title
    assert "layer2.1, 8x8 map" in fig.axes[0].get_title()


def test_notebook_writes_figures_and_table(smoke_runs):
    import papermill

    figures = smoke_runs / "figures"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(smoke_runs / "04_gradcam.out.ipynb"),
        kernel_name="fedlib",
        parameters=dict(
            runs_dir=str(smoke_runs / "runs"),
            figures_dir=str(figures),
            models=["resnet18", "mobilenet_v2", "resnext50_32x4d"],
            seeds=[0],
        ),
        progress_bar=False,
    )

    for stem in ("fig6_gradcam_pneumonia", "fig7_gradcam_normal", "fig8_gradcam_covid19"):
        for suffix in (".png", ".pdf"):
            assert (figures / f"{stem}{suffix}").stat().st_size > 0
    table = pd.read_csv(figures / "table_gradcam_localisation.csv")
    assert list(table.columns) == localisation.TABLE_COLUMNS
    assert list(zip(table["model"], table["mode"], table["seed"], strict=True)) == [
        ("resnet18", "fedavg", 0),
        ("resnet18", "central", 0),
        ("mobilenet_v2", "fedavg", 0),
        ("mobilenet_v2", "central", 0),
    ]
    assert list(table["grid"]) == ["8x8"] * 4
    rates = table[["hit_rate", "chance_hit_rate", "energy_share", "chance_energy_share", "tie_rate"]]
    assert ((rates >= 0) & (rates <= 1)).all().all()
    assert (table["images"] > 0).all()
    assert (table["chance_hit_rate"] > 0).all() and (table["chance_energy_share"] > 0).all()
    md = (figures / "table_gradcam_localisation.md").read_text()
    assert md.startswith("Grad-CAM++ localisation on SYNTHETIC")
    assert "profile smoke, 64 px input" in md and "| model |" in md
    executed = (smoke_runs / "04_gradcam.out.ipynb").read_text()
    assert "resnext50_32x4d-fedavg-seed0 is not a finished run" in executed


# ---------------------------------------------------------------- where explain may write (issue 26)


def _run_over_data(tmp_path: Path) -> tuple[Path, Path]:
    """A finished run's config.json and final.json over a data folder with one image: enough
    for explain's checks, which come before any model or image is loaded."""
    from fedlib.config import to_dict

    data = tmp_path / "data"
    (data / "test").mkdir(parents=True)
    (data / "test" / "te0.png").write_bytes(b"an image")
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    cfg = resolve("smoke", data_dir=str(data))
    (run_dir / "config.json").write_text(json.dumps(to_dict(cfg)))
    (run_dir / "final.json").write_text("{}")
    return run_dir, data


@pytest.mark.parametrize("where", ["an image", "a new file", "the run's config", "a folder"])
def test_explain_never_writes_inside_the_data_or_over_the_run(where, tmp_path, capsys):
    """Issue 26: ``explain --out`` naming an image of the run's data overwrote it with the figure."""
    from fedlib.cli import main

    run_dir, data = _run_over_data(tmp_path)
    out = {
        "an image": data / "test" / "te0.png",
        "a new file": data / "g.png",
        "the run's config": run_dir / "config.json",
        "a folder": tmp_path,
    }[where]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    assert main(["explain", "--run", str(run_dir), "--out", str(out)]) == 2

    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fedlib: error: --out {out} ") and "\n" not in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_explain_of_a_run_whose_data_moved_says_where_it_looks(tmp_path, capsys):
    """The advice named --data, which explain does not have."""
    from fedlib.cli import main

    run_dir, _ = _run_over_data(tmp_path)
    cfg = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**cfg, "data": str(tmp_path / "gone")}))

    assert main(["explain", "--run", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"the data {run_dir} was trained on, {tmp_path / 'gone'}, is not there any more" in err
    assert "--data" not in err and "\n" not in err
