"""Local training and evaluation: plain functions with no federated knowledge.

The data are a uint8 array of cached images (N, S, S, 3) and a label array;
a client is just an index list into them, so no image is ever copied per
client. All randomness of a call (batch order, augmentation, dropout) comes
from the integer ``seed`` it is given, so a call is reproducible on its own and
resuming a run needs no global random state.
"""

from __future__ import annotations

import functools
import hashlib
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data.transforms import augment_batch, eval_batch
from .errors import UserError


@dataclass(frozen=True)
class Hardware:
    """Where and how tensors run; built once by ``pick_hardware``."""

    device: torch.device
    amp: bool = False  # bf16 autocast
    channels_last: bool = False
    non_blocking: bool = False  # pinned host memory + async copies (CUDA only)


def pick_hardware(device: str = "auto", amp: bool | None = None, channels_last: bool | None = None) -> Hardware:
    """The one place that picks the device. bf16 autocast is opt-in (``amp=True``): the one
    GPU comparison we have had bf16 at chance where float32 learned. channels_last is on with
    CUDA unless switched off (it changes the memory layout, not the arithmetic's precision)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto.")
    gpu = dev.type == "cuda"
    return Hardware(
        device=dev,
        amp=bool(amp),
        channels_last=gpu if channels_last is None else bool(channels_last),
        non_blocking=gpu,
    )


# torch.compile's mode per device type: on a GPU, CUDA graphs replay a step's hundreds of small
# kernels at the cost of one launch (what a batch of 10 spends its time on); the CPU has none.
COMPILE_MODES = {"cuda": "reduce-overhead"}


def compile_model(model: nn.Module, hw: Hardware) -> nn.Module:
    """``model`` with its forward (and so its backward) compiled by ``torch.compile``, in place
    (``nn.Module.compile``: the state dict keeps its keys, checkpoints and aggregation are
    unchanged). The arithmetic is fused differently, so results equal eager ones to float
    rounding, not bit for bit; dropout draws other masks (Inductor has its own random stream)."""
    check_compile(hw.device)
    model.compile(mode=COMPILE_MODES.get(hw.device.type))
    return model


@functools.cache
def check_compile(device: torch.device) -> None:
    """One clear error, before any training, where ``torch.compile`` cannot work: a tiny layer is
    compiled and trained one step (Inductor needs a C++ compiler for the CPU, Triton for a GPU)."""
    try:
        layer = torch.compile(nn.Linear(4, 2).to(device), mode=COMPILE_MODES.get(device.type))
        layer(torch.ones(3, 4, device=device)).sum().backward()
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserError(
            f"--compile: torch.compile does not work here on {device.type} ({type(exc).__name__}: {reason}); "
            "it needs a C++ compiler (the CPU) or Triton (a GPU). Run without --compile."
        ) from exc


def derive_seed(seed: int, *keys) -> int:
    """A 63-bit seed from a base seed and keys, e.g. (seed, "train", round, client)."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class TrainResult:
    loss: float  # mean training loss over all batches of all epochs
    num_examples: int  # images in the client's data (the FedAvg weight)
    optimizer_state: dict | None  # Adam state, for callers that keep it between calls
    extra: dict = field(default_factory=dict)  # what the spec's hook adds (SCAFFOLD: its control variate's change)


class LocalHook:
    """A strategy's part in one local update (``fedlib.strategy``); this base does nothing.

    ``local_train`` calls ``start(model, spec)`` with the model holding the weights it starts
    from, then for every batch backpropagates ``loss(data_loss)`` and calls ``before_step()``
    between the backward pass and the optimizer step, and at the end puts ``finish(model)``
    into ``TrainResult.extra``. One hook serves one call."""

    supports_dp = True  # False: Opacus would undo what it does (its gradient, its correction)
    dp_refusal = ""  # then: why, as the error says

    def start(self, model: nn.Module, spec: LocalSpec) -> None:
        pass

    def loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def before_step(self) -> None:
        pass

    def finish(self, model: nn.Module) -> dict:
        return {}


@dataclass(frozen=True)
class LocalSpec:
    """The settings of one local update, apart from the model and the data: one object, so
    that every caller (a federated client, pooled and local-only training) builds it once
    (``fedlib.client.local_spec``) and ``local_train`` reads it."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    image_size: int
    seed: int  # every draw of the call (batch order, augmentation, dropout, DP noise)
    hw: Hardware
    dp: object = None  # fedlib.privacy.DPSettings: DP-SGD; None: plain Adam
    class_weight: np.ndarray | None = None  # one loss weight per class (balanced_weights)
    hook: LocalHook | None = None  # the strategy's client side for this call (e.g. FedProx)
    resident: bool | None = None  # internal: force the images onto the device once (True) or not


@dataclass
class EvalResult:
    loss: float
    confusion: np.ndarray  # (classes, classes), rows = true label


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    # The fused kernel is several times faster than the default per-tensor loop on CPU
    # (COVID-Net's Adam step: 0.14 s instead of 0.8 s) and exists for CPU and CUDA.
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused or None)


def _to_device(images: np.ndarray, idx: np.ndarray, hw: Hardware) -> torch.Tensor:
    batch = torch.from_numpy(np.ascontiguousarray(images[idx]))
    if hw.non_blocking:
        batch = batch.pin_memory()
    return batch.to(hw.device, non_blocking=hw.non_blocking)


# A call's images stay on the GPU while they take at most this share of its free memory.
RESIDENT_SHARE = 0.25


def _resident_images(images: np.ndarray, indices: np.ndarray, hw: Hardware, resident: bool | None):
    """``images[indices]`` (uint8) moved to the device once for a whole call, or None for
    today's path (one host copy per batch). ``resident`` None decides: on CUDA when they fit
    in ``RESIDENT_SHARE`` of the free memory; never on the CPU (the array is already there)."""
    if resident is None:
        resident = hw.device.type == "cuda" and _fits_on_gpu(len(indices) * images[:1].nbytes, hw.device)
    if not resident:
        return None
    return torch.from_numpy(np.ascontiguousarray(images[indices])).to(hw.device)


def _fits_on_gpu(nbytes: int, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= RESIDENT_SHARE * free


def _positions(indices: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Where each of ``idx`` sits in ``indices`` (a repeated index: any of its places, same image)."""
    order = np.argsort(indices, kind="stable")
    return order[np.searchsorted(indices[order], idx)]


def _autocast(hw: Hardware):
    return torch.autocast(hw.device.type, dtype=torch.bfloat16) if hw.amp else nullcontext()


def _prepare_input(x: torch.Tensor, hw: Hardware) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if hw.channels_last else x


def batches(indices: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Split (shuffled when ``rng`` is given) indices into batches. A last batch of a
    single image is dropped when training: BatchNorm cannot normalise one sample."""
    order = rng.permutation(indices) if rng is not None else np.asarray(indices)
    out = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None and len(out) > 1 and len(out[-1]) == 1:
        out.pop()
    return out


def local_train(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    spec: LocalSpec,
    optimizer_state: dict | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``spec.epochs`` over ``images[indices]`` with Adam.

    The optimizer is created afresh (the authors' behaviour) unless
    ``optimizer_state`` is given. With ``spec.dp`` (``fedlib.privacy.DPSettings``) it is
    DP-SGD: per-sample gradients clipped and noised by Opacus before each Adam step.
    ``spec.class_weight`` (one weight per class, see ``balanced_weights``) scales each image's
    loss by the weight of its class. ``spec.hook`` is the strategy's part (``LocalHook``, e.g.
    FedProx's proximal term): it sees the model when called (the global weights), may change
    each batch's loss and each step's gradients, and adds its output to the result; the
    reported loss stays the data loss (cross-entropy) alone. A hook that Opacus would undo
    (``supports_dp`` False) is refused with ``dp``. Returns the mean loss and the optimizer
    state. ``spec.resident`` is internal (tests, benchmarks): True or False forces whether the
    images move to the device once for the call (``_resident_images``); the weights and the
    loss are the same either way.
    """
    hook, dp, hw = spec.hook, spec.dp, spec.hw
    if dp is not None and hook is not None and not hook.supports_dp:
        raise ValueError(hook.dp_refusal)
    if hook is not None:
        hook.start(model, spec)
    model.train()
    net, optimizer = model, make_optimizer(model, spec.lr, spec.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    if dp is not None:
        from opacus.grad_sample import get_gsm_class
        from opacus.optimizers import DPOptimizer

        # Expanded weights, not Opacus' default module hooks: the hooks reject the
        # in-place residual add (`out += identity`) of torchvision's ResNets.
        net = get_gsm_class("ew")(model, batch_first=True, loss_reduction="mean")
        noise = torch.Generator(device=hw.device).manual_seed(derive_seed(spec.seed, "dp-noise"))
        optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            expected_batch_size=spec.batch_size,
            generator=noise,
        )
    try:
        store = _resident_images(images, indices, hw, spec.resident)
        total, count = _epochs(net, optimizer, (images, labels, indices), spec, store)
    finally:
        if dp is not None:
            optimizer.zero_grad(set_to_none=True)  # also drops the per-sample gradients
    return TrainResult(
        loss=total / max(count, 1),
        num_examples=len(indices),
        optimizer_state=optimizer.state_dict(),
        extra={} if hook is None else hook.finish(model),
    )


def balanced_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency class weights n / (k * n_c) over the k classes present (what
    COVID-Net's training does to its minority class); the mean weight per image is 1, so
    the step size stays comparable. Absent classes get 0 (they add nothing to the loss)."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def _epochs(model, optimizer, data: tuple, spec: LocalSpec, store=None) -> tuple[float, int]:
    """The loss summed over images (a mean per batch times its size) and the image count.
    Nothing waits for the device inside: the sum accumulates there in float64, which gives
    the very double that adding ``loss.item() * len(idx)`` on the host gave, and is read once.
    ``data``: (images, labels, indices); ``store``: the call's images on the device
    (``_resident_images``), or None."""
    images, labels, indices = data
    seed, hw, hook = spec.seed, spec.hw, spec.hook
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    devices = [hw.device.index or 0] if hw.device.type == "cuda" else []
    plan = [idx for _ in range(spec.epochs) for idx in batches(indices, spec.batch_size, rng)]  # rng draws as before
    if not plan:
        return 0.0, 0
    weight = None
    if spec.class_weight is not None:
        weight = torch.as_tensor(spec.class_weight, dtype=torch.float32, device=hw.device)
    flat = np.concatenate(plan)
    ys = torch.from_numpy(labels[flat]).to(hw.device, non_blocking=hw.non_blocking)  # one copy for the call
    where = None if store is None else torch.from_numpy(_positions(indices, flat)).to(hw.device)
    total = torch.zeros((), dtype=torch.float64, device=hw.device)
    count = 0
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # dropout; fork_rng restores the caller's global state afterwards
        for idx in plan:
            n = len(idx)
            raw = _to_device(images, idx, hw) if store is None else store[where[count : count + n]]
            x = _prepare_input(augment_batch(raw, spec.image_size, gen), hw)
            y = ys[count : count + n]
            optimizer.zero_grad(set_to_none=True)  # before the forward pass, as Opacus needs
            with _autocast(hw):
                if weight is None:
                    loss = F.cross_entropy(model(x), y)
                else:  # a mean over images of weighted losses: DP-SGD's per-sample view stays valid
                    loss = (F.cross_entropy(model(x), y, reduction="none") * weight[y]).mean()
            if hook is None:
                loss.backward()
            else:  # e.g. FedProx: its term steers the step; the reported loss stays the data loss
                hook.loss(loss).backward()
                hook.before_step()
            optimizer.step()
            total += loss.detach().double() * n
            count += n
    return total.item(), count


@dataclass(frozen=True)
class EvalOptions:
    """How ``evaluate`` runs: the image size and hardware, and optionally the batch size, the
    number of classes and ``resident`` (as in ``LocalSpec``)."""

    image_size: int
    hw: Hardware
    batch_size: int = 64
    num_classes: int = 3
    resident: bool | None = None


@torch.no_grad()
def evaluate(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, indices: np.ndarray | None = None, **options
) -> EvalResult:
    """Loss and confusion matrix without augmentation; leaves the model's train/eval mode as found.
    Both accumulate on the device and are read once. ``options``: ``EvalOptions``' fields
    (``image_size`` and ``hw`` are required)."""
    opts = EvalOptions(**options)
    hw, num_classes, batch_size = opts.hw, opts.num_classes, opts.batch_size
    was_training = model.training
    model.eval()
    if indices is None:
        indices = np.arange(len(labels))
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=hw.device)
    total = torch.zeros((), dtype=torch.float64, device=hw.device)
    try:
        store = _resident_images(images, indices, hw, opts.resident)
        ys = torch.from_numpy(labels[indices]).to(hw.device, non_blocking=hw.non_blocking)
        start = 0
        for idx in batches(indices, batch_size, rng=None):
            end = start + len(idx)
            raw = _to_device(images, idx, hw) if store is None else store[start:end]
            x = _prepare_input(eval_batch(raw, opts.image_size), hw)
            y = ys[start:end]
            with _autocast(hw):
                logits = model(x)
            total += F.cross_entropy(logits.float(), y, reduction="sum").double()
            pairs = y * num_classes + logits.argmax(1)
            confusion.index_add_(0, pairs, torch.ones_like(pairs))  # bincount would wait for the GPU
            start = end
    finally:
        model.train(was_training)
    matrix = confusion.view(num_classes, num_classes).cpu().numpy()
    return EvalResult(loss=total.item() / max(len(indices), 1), confusion=matrix)
