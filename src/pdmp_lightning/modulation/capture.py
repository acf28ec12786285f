"""Capturing each modality's features from the training forward, for methods that score modalities."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


def first_tensor(output: Any) -> Tensor:
    """The tensor of a module output (the first element of a tuple or list)."""
    if isinstance(output, tuple | list):
        output = output[0]
    if not isinstance(output, Tensor):
        raise TypeError(f"expected a tensor output, got {type(output).__name__}")
    return output


class FeatureCapture:
    """Keeps the output of each modality's submodule from the last training forward, as ``[B, d]``.

    Only outputs produced with gradients enabled and the submodule in training mode are kept, so
    validation and probing leave no trace. The captured tensors keep their graph.

    Args:
        modules: Modality -> the submodule whose output are its features.
    """

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        self.modules = dict(modules)
        self.features: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []

    def attach(self) -> None:
        """Registers the forward hooks (idempotent)."""
        self.detach()
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def detach(self) -> None:
        """Removes the hooks and drops what was captured."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.features.clear()

    def take(self) -> dict[str, Tensor]:
        """The features of the last training forward; raises if a modality's forward did not run."""
        missing = [name for name in self.modules if name not in self.features]
        if missing:
            raise RuntimeError(
                f"the forward of modalities {missing} did not run with gradients in this training step, so their "
                "features could not be captured; the callback needs each modality's encoder called in forward."
            )
        return dict(self.features)

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if torch.is_grad_enabled() and module.training:
                self.features[name] = first_tensor(output).flatten(1)

        return hook
