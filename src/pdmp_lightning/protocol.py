"""What the baseline methods need from a LightningModule: one small protocol.

A callback captures each modality's features from the training forward (the output of the
modality's submodule, flattened to ``[B, d]``) and asks the module for what it cannot compute
alone. Any LightningModule can implement the methods a method needs;
``MultimodalClassifier`` implements all of them.

=====================  ==============================================================  ==================
method / attribute     contract                                                        used by
=====================  ==============================================================  ==================
``split_logits``       ``(features: dict[str, Tensor]) -> dict[str, Tensor]``: each     OGM-GE, OPM
                       modality's share of the fused logits (``W[:, S_m] z_m + b / M``
                       for a late-fusion linear head)
``fuse``               ``(features: dict[str, Tensor]) -> Tensor``: fused logits from   AGM, MMPareto
                       features; a zero tensor stands for a masked modality
``unimodal_logits``    ``(features: dict[str, Tensor]) -> dict[str, Tensor]``: each     MMPareto
                       modality's own head; the training loss must be
                       ``CE(fused) + sum_m CE(unimodal_m)``
``fusion``             an ``nn.Module`` called with the features dict as its first      OPM
                       argument
=====================  ==============================================================  ==================

Feature dicts are keyed by the callback's modality names, which must be the module's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from pdmp_lightning.errors import config_error

CONTRACTS = {
    "split_logits": "a method `split_logits(features: dict[str, Tensor]) -> dict[str, Tensor]` returning each "
    "modality's share of the fused logits",
    "fuse": "a method `fuse(features: dict[str, Tensor]) -> Tensor` returning the fused logits (a zero tensor "
    "stands for a masked modality)",
    "unimodal_logits": "a method `unimodal_logits(features: dict[str, Tensor]) -> dict[str, Tensor]` returning each "
    "modality's own head's logits",
    "fusion": "an attribute `fusion`: the nn.Module that receives the features dict as its first argument",
}


def require(module: Any, callback: str, *names: str) -> None:
    """Raises a configuration error naming what ``module`` must add for ``callback``.

    Args:
        module: The LightningModule.
        callback: The callback's class name.
        names: Protocol members the callback uses (keys of ``CONTRACTS``).

    Examples:
        >>> try:
        ...     require(nn.Linear(2, 2), "OGMGECallback", "split_logits")
        ... except ValueError as error:
        ...     print(str(error).split(";")[0])
        `OGMGECallback model`: got 'Linear'
    """
    for name in names:
        member = getattr(module, name, None)
        present = isinstance(member, nn.Module) if name == "fusion" else callable(member)
        if not present:
            raise config_error(
                f"{callback} model",
                type(module).__name__,
                f"a LightningModule with {CONTRACTS[name]}",
                "for a late-fusion model, name its final linear layer instead: head='<path of that nn.Linear>' "
                "(e.g. 'model.fusion_module.fc_out'); or implement it (see pdmp_lightning.protocol; "
                "pdmp_lightning.models.MultimodalClassifier does).",
            )


def split_logits(module: Any, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``module.split_logits(features)``."""
    shares: dict[str, Tensor] = module.split_logits(features)
    return shares


def fuse(module: Any, features: Mapping[str, Tensor]) -> Tensor:
    """``module.fuse(features)``."""
    logits: Tensor = module.fuse(features)
    return logits


def unimodal_logits(module: Any, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``module.unimodal_logits(features)``."""
    logits: dict[str, Tensor] = module.unimodal_logits(features)
    return logits
