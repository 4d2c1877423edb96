"""Every model the experiments can name, built from scratch with a 3-class head.

No pretrained weights: the paper trains from scratch, and nothing here may
download. ``build_model`` is the only place a model name turns into a module.
"""

import functools

import torch
from torch import nn
from torchvision import models as tv
from torchvision.ops.misc import Conv2dNormActivation

from fedlib.errors import UserError
from fedlib.models.covidnet import CovidNet

MODEL_NAMES = ("covidnet_small", "covidnet_large", "resnet18", "resnext50_32x4d", "mobilenet_v2")
# The paper's four models, in the order of its tables.
PAPER_MODELS = ("covidnet_small", "resnet18", "resnext50_32x4d", "mobilenet_v2")
DISPLAY_NAMES = {
    "covidnet_small": "COVID-Net (small)",
    "covidnet_large": "COVID-Net (large)",
    "resnet18": "ResNet-18",
    "resnext50_32x4d": "ResNeXt-50 (32x4d)",
    "mobilenet_v2": "MobileNet-v2",
}
# From the COVID-Net paper / repository (224 px input); torchvision models have
# no published figure for a 3-class head.
PUBLISHED_PARAMS = {"covidnet_small": 117.4e6, "covidnet_large": 127.4e6}


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise UserError(f"Unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}.")


def build_model(name: str, num_classes: int = 3, norm: str = "batch", head_grid: int = 7) -> nn.Module:
    """A freshly initialised model whose forward returns (N, num_classes) logits.

    ``head_grid``: the grid COVID-Net's head flattens (``TrainConfig.head_grid``; 7, the
    default, is the paper's at 224 px); the other models pool globally and ignore it.

    ``norm="group"`` swaps every BatchNorm for GroupNorm (Opacus' own fix), the
    variant differential privacy needs: BatchNorm mixes samples of a batch, so
    per-sample gradients, and hence DP-SGD, are undefined for it.
    """
    if norm == "group":
        from opacus.validators import ModuleValidator

        return ModuleValidator.fix(build_model(name, num_classes, head_grid=head_grid))
    if norm != "batch":
        raise UserError(f"unknown norm {norm!r}; use 'batch' or 'group'.")
    _check_name(name)
    if name == "covidnet_small":
        return CovidNet("small", num_classes, head_grid)
    if name == "covidnet_large":
        return CovidNet("large", num_classes, head_grid)
    if name == "mobilenet_v2":
        model = tv.mobilenet_v2(weights=None)
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
        return model
    model = tv.resnet18(weights=None) if name == "resnet18" else tv.resnext50_32x4d(weights=None)
    # The head goes on `fc`, the attribute ResNet.forward calls. The authors'
    # ResNeXt code set `classifier`, which ResNet never calls, so their model
    # kept 1,000 outputs; we fix that.
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def cam_layer(model: nn.Module, name: str) -> nn.Module:
    """The paper's Grad-CAM target: the last convolutional block, whose output is
    the final spatial feature map before pooling (7x7 at 224 px)."""
    return model.get_submodule(cam_candidates(name)[-1])


def cam_candidates(name: str) -> list[str]:
    """Dotted module paths (``model.get_submodule``) of the blocks Grad-CAM may
    target, from the input towards the output; the last is the paper's choice.

    Every candidate's output is non-negative, like the paper's last blocks:
    Grad-CAM keeps ReLU(sum_k w_k A_k), which is zero everywhere when the
    activations A_k are mostly negative.
    - ResNets: the last block of each stage (layer1 .. layer4), ReLU'd.
    - COVID-Net: the four PEPX stages (features.3, .5, .7, .9), sums of ReLU'd blocks.
    - MobileNet-v2: every ConvBNReLU6 (the stem, each block's expansion and
      depthwise convs, features.18). Its block outputs are linear bottlenecks
      (no activation) and are left out: at 64 px half the maps of features.6
      were all zero.
    """
    _check_name(name)
    if name == "resnet18":
        return [f"layer{i}.1" for i in range(1, 5)]
    if name == "resnext50_32x4d":
        return [f"layer{i}.{n - 1}" for i, n in enumerate((3, 4, 6, 3), start=1)]
    if name == "mobilenet_v2":
        with torch.device("meta"):
            features = build_model(name).features
        return [
            f"features.{p}" if p else "features"
            for p, m in features.named_modules()
            if isinstance(m, Conv2dNormActivation)
        ]
    return ["features.3", "features.5", "features.7", "features.9"]  # covidnet_small / _large


# The paper's map: the last block at 224 px is 7x7 for all four models.
MIN_CAM_GRID = 7


@functools.lru_cache(maxsize=64)
def cam_grids(name: str, image_size: int) -> tuple[tuple[str, tuple[int, int]], ...]:
    """(path, (rows, cols) of its output) for every ``cam_candidates`` block at
    a square input of ``image_size`` px. Shapes only: the model is built and run
    on the meta device, so this costs no memory and no arithmetic."""
    paths = cam_candidates(name)
    grids: dict[str, tuple[int, int]] = {}
    with torch.device("meta"):
        model = build_model(name).eval()
        hooks = [
            model.get_submodule(p).register_forward_hook(
                lambda _m, _i, out, p=p: grids.__setitem__(p, tuple(out.shape[-2:]))
            )
            for p in paths
        ]
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, image_size, image_size))
        finally:
            for hook in hooks:
                hook.remove()
    return tuple((p, grids[p]) for p in paths)


def pick_cam_layer(name: str, image_size: int, min_grid: int = MIN_CAM_GRID) -> tuple[str, tuple[int, int]]:
    """The Grad-CAM target for ``image_size`` px inputs: the latest candidate
    block whose map is at least ``min_grid`` cells on each side, with its grid.

    At the paper's 224 px that is the last block (7x7), the paper's choice. At
    smaller inputs the last map shrinks (2x2 at 64 px) and a max-normalised,
    upsampled 2x2 map peaks in a corner by construction, so an earlier block is
    used (8x8 at 64 px). When no block is large enough, the finest one.
    The choice depends on the architecture and input size only, not on weights.
    """
    grids = cam_grids(name, int(image_size))
    for path, grid in reversed(grids):
        if min(grid) >= min_grid:
            return path, grid
    return max(grids, key=lambda pg: min(pg[1]))


def param_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def param_table(names: tuple[str, ...] = PAPER_MODELS, num_classes: int = 3) -> list[dict]:
    """One row per model for the paper's Table 2 parameter column."""
    rows = []
    for name in names:
        # The meta device allocates no memory: counting COVID-Net's 117M
        # parameters costs nothing.
        with torch.device("meta"):
            params = param_count(build_model(name, num_classes))
        published = PUBLISHED_PARAMS.get(name)
        rows.append(
            {
                "model": name,
                "display_name": DISPLAY_NAMES[name],
                "params": params,
                "params_millions": round(params / 1e6, 2),
                "published_millions": None if published is None else published / 1e6,
            }
        )
    return rows
