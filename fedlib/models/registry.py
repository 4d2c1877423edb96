"""Every model the experiments can name, built from scratch with a 3-class head.

No pretrained weights: the paper trains from scratch, and nothing here may
download. ``build_model`` is the only place a model name turns into a module.
"""

import torch
from torch import nn
from torchvision import models as tv

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


def build_model(name: str, num_classes: int = 3, norm: str = "batch") -> nn.Module:
    """A freshly initialised model whose forward returns (N, num_classes) logits.

    ``norm="group"`` swaps every BatchNorm for GroupNorm (Opacus' own fix), the
    variant differential privacy needs: BatchNorm mixes samples of a batch, so
    per-sample gradients, and hence DP-SGD, are undefined for it.
    """
    if norm == "group":
        from opacus.validators import ModuleValidator

        return ModuleValidator.fix(build_model(name, num_classes))
    if norm != "batch":
        raise UserError(f"unknown norm {norm!r}; use 'batch' or 'group'.")
    _check_name(name)
    if name == "covidnet_small":
        return CovidNet("small", num_classes)
    if name == "covidnet_large":
        return CovidNet("large", num_classes)
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
    """The Grad-CAM target: the last convolutional block, whose output is the
    final spatial feature map before pooling."""
    _check_name(name)
    if name in ("resnet18", "resnext50_32x4d"):
        return model.layer4[-1]
    # MobileNet-v2's last ConvBNReLU and COVID-Net's last PEPX stage.
    return model.features[-1]


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
