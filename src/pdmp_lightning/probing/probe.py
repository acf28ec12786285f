"""A unimodal probe: a copy of one modality's encoder with a fresh linear classifier on top."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from pdmp_lightning.errors import config_error
from pdmp_lightning.modality import ModalityGroup

PROBE_ENCODER_HOOK = "probe_encoder"


class UnimodalProbe(nn.Module):
    """``encoder`` followed by a linear head on its flattened output.

    A tuple or list output contributes its first element (many encoders return ``(features, extra)``).

    Args:
        encoder: The modality's encoder (a copy; the module being trained is never touched).
        num_features: Size of the flattened encoder output.
        num_classes: Number of classes.
    """

    def __init__(self, encoder: nn.Module, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(num_features, num_classes, dtype=torch.float32)

    def forward(self, inputs: Tensor) -> Tensor:
        """Logits of shape ``[batch, num_classes]``."""
        logits: Tensor = self.head(encoder_features(self.encoder, inputs))
        return logits


def encoder_features(encoder: nn.Module, inputs: Tensor) -> Tensor:
    """The encoder's output as a float32 ``[batch, features]`` matrix."""
    output: Any = encoder(inputs)
    if isinstance(output, tuple | list):
        output = output[0]
    if not isinstance(output, Tensor):
        raise TypeError(
            f"the probe encoder returned a {type(output).__name__}; "
            "it must return a tensor (or a tuple whose first element is one)"
        )
    features: Tensor = output.flatten(1).float()
    return features


def copy_encoder(pl_module: nn.Module, modality: str, group: ModalityGroup) -> nn.Module:
    """A deep copy, at its current weights, of what encodes ``modality`` in ``pl_module``.

    The module's own ``probe_encoder(modality)`` method is used when it has one; otherwise the
    group's submodule (several submodules are chained in the order given).

    Raises:
        PDMPConfigurationError: The modality was given by regex and the module has no
            ``probe_encoder`` method, so there is no encoder to copy.
    """
    custom = getattr(pl_module, PROBE_ENCODER_HOOK, None)
    if callable(custom):
        encoder = custom(modality)
        if not isinstance(encoder, nn.Module):
            raise config_error(
                f"{type(pl_module).__name__}.{PROBE_ENCODER_HOOK}({modality!r})", encoder, "an nn.Module"
            )
        return copy.deepcopy(encoder)
    if not group.modules:
        raise config_error(
            f"modalities[{modality!r}]",
            "a 're:' pattern",
            "submodule paths when the callback has to probe",
            f"pass `ranking` to skip the probes, or give your LightningModule a method "
            f"`{PROBE_ENCODER_HOOK}(self, modality) -> nn.Module` returning the encoder to probe.",
        )
    modules = [copy.deepcopy(module) for module in group.modules]
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


def build_probe(encoder: nn.Module, sample: Tensor, num_classes: int) -> UnimodalProbe:
    """Builds a probe whose head fits ``encoder``'s output on ``sample`` (found by one forward pass)."""
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        num_features = encoder_features(encoder, sample[:2]).shape[1]
    encoder.train(was_training)
    return UnimodalProbe(encoder, num_features, num_classes).to(sample.device)
