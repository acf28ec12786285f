"""A unimodal probe: a copy of one modality's encoder with a fresh linear classifier on top."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from pdmp_lightning.errors import config_error

try:  # public since torch 2.4
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - older torch, or a build without torch.distributed
    try:
        from torch.distributed._tensor import DTensor  # type: ignore[attr-defined]
    except ImportError:
        DTensor = None  # type: ignore[assignment,misc]
from pdmp_lightning.modality import ModalityGroup

PROBE_ENCODER_HOOK = "probe_encoder"


class UnimodalProbe(nn.Module):
    """``encoder`` followed by a linear head on its flattened output.

    A tuple or list output contributes its first element (many encoders return ``(features, extra)``).
    An encoder that folds ``fold`` frames per sample into the batch (``[B * fold, ...]`` outputs, as
    video encoders that run a 2-D network per frame do) has its features averaged over the frames,
    whether its rows run sample by sample (``b * fold + t``) or frame by frame (``t * B + b``).

    Args:
        encoder: The modality's encoder (a copy; the module being trained is never touched).
        num_features: Size of the flattened (and unfolded) encoder output.
        num_classes: Number of classes.
        fold: Frames per sample folded into the encoder output's first dimension (1: none).
        frame_major: Whether the folded rows run frame by frame (``t * B + b``) instead of sample by sample.
        dtype: Floating-point type of the head: the encoder's, so the probe follows the Trainer's precision.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_features: int,
        num_classes: int,
        fold: int = 1,
        frame_major: bool = False,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.fold = fold
        self.frame_major = frame_major
        self.head = nn.Linear(num_features, num_classes, dtype=dtype or torch.float32)

    def forward(self, inputs: Tensor) -> Tensor:
        """Logits of shape ``[batch, num_classes]``."""
        features = encoder_features(self.encoder, inputs, self.fold, self.frame_major)
        logits: Tensor = self.head(features.to(self.head.weight.dtype))
        return logits


def encoder_output(encoder: nn.Module, inputs: Tensor) -> Tensor:
    """The encoder's output tensor (the first element of a tuple or list output)."""
    output: Any = encoder(inputs)
    if isinstance(output, tuple | list):
        output = output[0]
    if not isinstance(output, Tensor):
        raise TypeError(
            f"the probe encoder returned a {type(output).__name__}; "
            "it must return a tensor (or a tuple whose first element is one)"
        )
    return output


def encoder_features(encoder: nn.Module, inputs: Tensor, fold: int = 1, frame_major: bool = False) -> Tensor:
    """The encoder's output as a ``[batch, features]`` matrix, averaged over ``fold`` folded frames."""
    return unfold(encoder_output(encoder, inputs), fold, frame_major)


def unfold(output: Tensor, fold: int, frame_major: bool = False) -> Tensor:
    """``[B * fold, ...]`` rows averaged per sample into ``[B, features]`` (``fold`` 1: only flattened)."""
    if fold > 1:
        batch, rest = output.shape[0] // fold, output.shape[1:]
        if frame_major:
            output = output.reshape(fold, batch, *rest).mean(dim=0)
        else:
            output = output.reshape(batch, fold, *rest).mean(dim=1)
    return output.reshape(output.shape[0], -1)


def copy_encoder(
    pl_module: nn.Module,
    modality: str,
    group: ModalityGroup,
    templates: Mapping[str, nn.Module] | None = None,
) -> nn.Module:
    """An unsharded copy, at its current weights, of what encodes ``modality`` in ``pl_module``.

    The module's own ``probe_encoder(modality)`` method is used when it has one; otherwise the
    group's submodule (several submodules are chained in the order given). A submodule whose
    parameters are sharded (FSDP2 ``fully_shard``, which forbids deep copies) is rebuilt from
    ``templates[path]``, its unsharded copy taken before ``configure_model`` sharded it, and loaded
    with the gathered full state: every process must call this, in the same order.

    Raises:
        PDMPConfigurationError: The modality was given by regex and the module has no
            ``probe_encoder`` method, so there is no encoder to copy; or a sharded encoder has no
            template.
    """
    custom = getattr(pl_module, PROBE_ENCODER_HOOK, None)
    if callable(custom):
        encoder = custom(modality)
        if not isinstance(encoder, nn.Module):
            raise config_error(
                f"{type(pl_module).__name__}.{PROBE_ENCODER_HOOK}({modality!r})", encoder, "an nn.Module"
            )
        return unsharded_copy(encoder, None, f"{type(pl_module).__name__}.{PROBE_ENCODER_HOOK}({modality!r})")
    if not group.modules:
        raise config_error(
            f"modalities[{modality!r}]",
            "a 're:' pattern",
            "submodule paths when the callback has to probe",
            f"pass `ranking` to skip the probes, or give your LightningModule a method "
            f"`{PROBE_ENCODER_HOOK}(self, modality) -> nn.Module` returning the encoder to probe.",
        )
    modules = [
        unsharded_copy(module, (templates or {}).get(path), path)
        for module, path in zip(group.modules, group.module_paths, strict=True)
    ]
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


def is_sharded(module: nn.Module) -> bool:
    """Whether any parameter of ``module`` is a ``DTensor`` (sharded by FSDP2 or a device mesh)."""
    return DTensor is not None and any(isinstance(p, DTensor) for p in module.parameters())


def unsharded_copy(module: nn.Module, template: nn.Module | None, where: str) -> nn.Module:
    """``copy.deepcopy(module)``; for a sharded module, ``template`` loaded with its gathered full state."""
    if not is_sharded(module):
        return copy.deepcopy(module)
    if template is None:
        raise config_error(
            where,
            "a sharded module (its parameters are DTensors)",
            "an encoder the probes can copy: the callback copies each encoder before configure_model shards it",
            "create the encoders in __init__ and shard them in configure_model, give the module a "
            "`probe_encoder(self, modality)` returning an unsharded encoder, or pass `ranking` to skip the probes.",
        )
    full = {
        name: (value.full_tensor() if isinstance(value, DTensor) else value).detach().clone()
        for name, value in module.state_dict().items()
    }
    copied = copy.deepcopy(template)
    copied.load_state_dict(full, assign=True)
    return copied


def build_probe(encoder: nn.Module, sample: Tensor, num_classes: int, modality: str = "") -> UnimodalProbe:
    """Builds a probe whose head fits ``encoder``'s output on ``sample`` (found by forward passes).

    The encoder runs on two and on three samples (fewer when ``sample`` is smaller). Its output's
    first dimension must be the number of samples, or the same multiple of it both times (frames
    folded into the batch, then averaged).

    Raises:
        PDMPConfigurationError: The output's first dimension is neither, so features cannot be
            matched with labels; the message names the modality, both shapes and the
            ``probe_encoder`` hook.
    """
    was_training = encoder.training
    encoder.eval()
    sizes = [n for n in (2, 3) if n <= len(sample)] or [len(sample)]
    with torch.no_grad():
        outputs = [encoder_output(encoder, sample[:n]) for n in sizes]
        folds = {out.shape[0] / n if out.ndim else -1.0 for out, n in zip(outputs, sizes, strict=True)}
        fold = folds.pop() if len(folds) == 1 else -1.0
        # Only folded rows need matching with their samples: the first sample's rows, computed alone.
        alone = encoder_output(encoder, sample[:1]) if fold > 1 and sizes[0] > 1 else None
    encoder.train(was_training)
    shapes = ", ".join(f"{list(sample[:n].shape)} -> {list(out.shape)}" for out, n in zip(outputs, sizes, strict=True))
    hint = (
        f"give your LightningModule a method `{PROBE_ENCODER_HOOK}(self, modality) -> nn.Module` returning a module "
        "that maps this modality's batch input to [batch, ...] features for the probe."
    )
    if fold < 1 or not fold.is_integer():
        raise config_error(
            f"modalities[{modality!r}]",
            f"an encoder whose output does not follow the batch ({shapes})",
            "an output whose first dimension is the batch size, or a multiple of it (frames folded into the batch)",
            hint,
        )
    frame_major = False
    if alone is not None:
        # Which rows belong to the first sample: compare with the encoder's output for that sample alone.
        first = unfold(alone, int(fold))
        if _close(unfold(outputs[0], int(fold))[:1], first):
            frame_major = False
        elif _close(unfold(outputs[0], int(fold), frame_major=True)[:1], first):
            frame_major = True
        else:
            raise config_error(
                f"modalities[{modality!r}]",
                f"an encoder whose {int(fold)} rows per sample cannot be matched with the samples ({shapes})",
                "frames folded sample by sample (b * T + t) or frame by frame (t * B + b), each sample's rows "
                "independent of the others in eval mode",
                hint,
            )
    dtype = next((p.dtype for p in encoder.parameters() if p.is_floating_point()), torch.float32)
    num_features = outputs[0][0].numel()  # per sample, frames averaged
    probe = UnimodalProbe(encoder, num_features, num_classes, int(fold), frame_major, dtype)
    return probe.to(sample.device)


def _close(first: Tensor, second: Tensor) -> bool:
    """Loose equality: rows of another sample differ by far more than batch-size-dependent rounding."""
    return bool(torch.allclose(first.float(), second.float(), rtol=1e-2, atol=1e-3))
