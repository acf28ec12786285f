"""Where the baselines meet a model's fusion: its features, their share of the logits, the fused logits.

Two ways in, one contract (``FusionAccess``):

- ``LinearHeadAccess`` (``head=`` on the baseline callbacks): the model's final linear layer is
  named, and everything is derived from it, with no change to the model. A single ``nn.Linear``
  is a *concat* fusion: its input columns are the modalities' features side by side, in the order
  of ``modalities`` (``head_widths`` gives their widths; equal widths by default), modality m's
  share of the logits is ``W[:, S_m] z_m + b / M``, and the features are read where the head sees
  them, pooled, one row per sample. A mapping ``{modality: path}`` of linear layers is a *sum*
  fusion (``logits = sum_m head_m(z_m)``, as the official OGM-GE ``SumFusion``); each share is
  ``head_m(z_m)``. This is the official repositories' own way (OGM-GE, OPM and AGM split
  ``fusion_module.fc_out``'s weight).
- ``ModuleProtocolAccess``: the LightningModule implements ``pdmp_lightning.protocol``
  (``split_logits``, ``fuse``, ``fusion``) and each modality's features are its encoder's output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from pdmp_lightning import protocol
from pdmp_lightning.errors import config_error
from pdmp_lightning.modulation.capture import FeatureCapture

#: A callback's change of the features on their way into the fusion (None: leave them).
FeatureTransform = Callable[[dict[str, Tensor]], "dict[str, Tensor] | None"]
#: The ``head`` argument: one linear layer (concat fusion) or one per modality (sum fusion).
HeadSpec = str | Mapping[str, str]


class FusionAccess:
    """The contract: capture the step's features, split and fuse logits, intercept the fusion.

    Attributes:
        modality_names: The modalities, in order.
    """

    modality_names: list[str]

    def where(self, modality: str) -> str:
        """Where ``modality``'s features are read, for messages."""
        raise NotImplementedError

    def attach(self) -> None:
        """Starts capturing each training forward's features (idempotent)."""
        raise NotImplementedError

    def detach(self) -> None:
        """Removes every hook and drops what was captured."""
        raise NotImplementedError

    def clear(self) -> None:
        """Drops the captured features (their graph is done with)."""
        raise NotImplementedError

    def features(self) -> dict[str, Tensor]:
        """The features of the last training forward, with their graph; raises if the forward did not run."""
        raise NotImplementedError

    def split_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each modality's share of the fused logits; the shares add up to the logits."""
        raise NotImplementedError

    def fuse(self, features: Mapping[str, Tensor]) -> Tensor:
        """The fused logits from features (a zero tensor stands for a masked modality)."""
        raise NotImplementedError

    def fused_module(self, callback: str) -> nn.Module:
        """The one module whose output are the fused logits; raises naming ``callback`` if there is none."""
        raise NotImplementedError

    def fused_weights(self) -> list[Tensor]:
        """The weights of the layer(s) that produce the logits (AGM's clipping test reads their gradient)."""
        raise NotImplementedError

    def register_feature_transform(self, transform: FeatureTransform, callback: str) -> list[RemovableHandle]:
        """Calls ``transform`` on each training forward's features on their way into the fusion."""
        raise NotImplementedError


class ModuleProtocolAccess(FusionAccess):
    """Through ``pdmp_lightning.protocol``: encoder outputs as features, the module's own methods.

    Args:
        module: The LightningModule.
        feature_modules: Modality -> the submodule whose output are its features.
        feature_paths: Modality -> that submodule's path (for messages).
    """

    def __init__(
        self, module: nn.Module, feature_modules: Mapping[str, nn.Module], feature_paths: Mapping[str, str]
    ) -> None:
        self.module = module
        self.modality_names = list(feature_modules)
        self.feature_paths = dict(feature_paths)
        self._capture = FeatureCapture(feature_modules)

    def where(self, modality: str) -> str:
        return f"the output of `{self.feature_paths[modality]}`"

    def attach(self) -> None:
        self._capture.attach()

    def detach(self) -> None:
        self._capture.detach()

    def clear(self) -> None:
        self._capture.features.clear()

    def features(self) -> dict[str, Tensor]:
        return self._capture.take()

    def split_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return protocol.split_logits(self.module, features)

    def fuse(self, features: Mapping[str, Tensor]) -> Tensor:
        return protocol.fuse(self.module, features)

    def fused_module(self, callback: str) -> nn.Module:
        protocol.require(self.module, callback, "fusion")
        fusion: nn.Module = getattr(self.module, "fusion")  # noqa: B009 - checked to be a module
        return fusion

    def fused_weights(self) -> list[Tensor]:
        fusion = getattr(self.module, "fusion", None)
        if not isinstance(fusion, nn.Module):
            return []
        return [p for p in fusion.parameters() if p.dim() >= 2]

    def register_feature_transform(self, transform: FeatureTransform, callback: str) -> list[RemovableHandle]:
        fusion = self.fused_module(callback)

        def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if not (module.training and torch.is_grad_enabled()):
                return None
            if not args or not isinstance(args[0], Mapping):
                given = ", ".join(type(a).__name__ for a in args) or "no positional argument"
                raise config_error(
                    "fusion",
                    f"a call with ({given})",
                    "a call fusion({modality: features [B, d], ...}), whose features the callback changes",
                    f"{callback} changes the modalities' features on their way into the fusion; a fusion called "
                    "with separate tensors gives it nothing to work on. Name the model's final linear layer "
                    "instead: head='<path of the nn.Linear that produces the logits>'.",
                )
            new = transform(dict(args[0]))
            return None if new is None else ((new, *args[1:]), kwargs)

        return [fusion.register_forward_pre_hook(pre_hook, with_kwargs=True)]


class LinearHeadAccess(FusionAccess):
    """Through the model's final linear layer(s), named by path: nothing asked of the model.

    Args:
        module: The LightningModule.
        head: The path of one ``nn.Linear`` (concat fusion) or modality -> path of each modality's
            ``nn.Linear`` (sum fusion).
        modality_names: The modalities, in the order their features are concatenated.
        head_widths: Modality -> its number of input columns of a concat head; default: equal.
    """

    def __init__(
        self,
        module: nn.Module,
        head: HeadSpec,
        modality_names: Sequence[str],
        head_widths: Mapping[str, int] | None = None,
    ) -> None:
        self.modality_names = list(modality_names)
        self.concat = isinstance(head, str)
        if isinstance(head, str):
            self.layers = {"": _linear(module, head, "head")}
            self.widths = _widths(self.layers[""], self.modality_names, head_widths)
        else:
            self.layers = {m: _linear(module, head[m], f"head[{m!r}]") for m in self.modality_names}
            self.widths = {m: layer.in_features for m, layer in self.layers.items()}
        self.paths: str | dict[str, str] = head if isinstance(head, str) else dict(head)
        self._inputs: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []

    # --- capture ----------------------------------------------------------------------------------

    def where(self, modality: str) -> str:
        if isinstance(self.paths, str):
            start = sum(self.widths[m] for m in self.modality_names[: self.modality_names.index(modality)])
            return f"columns {start}:{start + self.widths[modality]} of the input of `{self.paths}`"
        return f"the input of `{self.paths[modality]}`"

    def attach(self) -> None:
        self._remove(self._handles)
        for key, layer in self.layers.items():
            self._handles.append(layer.register_forward_pre_hook(self._keeper(key)))

    def detach(self) -> None:
        self._remove(self._handles)
        self._inputs.clear()

    def clear(self) -> None:
        self._inputs.clear()

    def features(self) -> dict[str, Tensor]:
        missing = [key or "head" for key in self.layers if key not in self._inputs]
        if missing:
            raise RuntimeError(
                f"the head {self.paths!r} was not called with gradients in this training step, so the features "
                "could not be captured; the callback needs the head called in the training forward."
            )
        if self.concat:
            return self._split_columns(self._inputs[""])
        return {m: self._inputs[m] for m in self.modality_names}

    def _keeper(self, key: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def pre_hook(layer: nn.Module, args: tuple[Any, ...]) -> None:
            if torch.is_grad_enabled() and layer.training and args and isinstance(args[0], Tensor):
                self._inputs[key] = args[0]

        return pre_hook

    # --- logits -----------------------------------------------------------------------------------

    def split_logits(self, features: Mapping[str, Tensor], detach_weights: bool = False) -> dict[str, Tensor]:
        """Each modality's share of the logits; ``detach_weights`` keeps the head's weights out of the graph."""

        def weights(layer: nn.Linear) -> tuple[Tensor, Tensor | None]:
            bias = layer.bias.detach() if detach_weights and layer.bias is not None else layer.bias
            return (layer.weight.detach() if detach_weights else layer.weight), bias

        if not self.concat:
            shares = {}
            for modality in self.modality_names:
                weight, bias = weights(self.layers[modality])
                shares[modality] = torch.nn.functional.linear(features[modality], weight, bias)
            return shares
        weight, bias = weights(self.layers[""])
        shares, start, count = {}, 0, len(self.modality_names)
        for modality in self.modality_names:
            stop = start + self.widths[modality]
            share = bias / count if bias is not None else 0.0
            shares[modality] = features[modality] @ weight[:, start:stop].T + share
            start = stop
        return shares

    def fuse(self, features: Mapping[str, Tensor]) -> Tensor:
        if self.concat:
            logits: Tensor = self.layers[""](torch.cat([features[m] for m in self.modality_names], dim=1))
            return logits
        return torch.stack([self.layers[m](features[m]) for m in self.modality_names]).sum(dim=0)

    def fused_module(self, callback: str) -> nn.Module:
        if not self.concat:
            raise config_error(
                "head",
                self.paths,
                f"one nn.Linear that produces the fused logits (a concat head) for {callback}",
                "a sum fusion adds the heads' outputs in the model's own code, out of the callback's reach; "
                "name the concat head, or implement `fusion`/`fuse` (pdmp_lightning.protocol).",
            )
        return self.layers[""]

    def fused_weights(self) -> list[Tensor]:
        return [layer.weight for layer in self.layers.values()]

    def register_feature_transform(self, transform: FeatureTransform, callback: str) -> list[RemovableHandle]:
        head = self.fused_module(callback)

        def pre_hook(layer: nn.Module, args: tuple[Any, ...]) -> Any:
            if not (layer.training and torch.is_grad_enabled()) or not args:
                return None
            new = transform(self._split_columns(args[0]))
            if new is None:
                return None
            return (torch.cat([new[m] for m in self.modality_names], dim=1), *args[1:])

        return [head.register_forward_pre_hook(pre_hook)]

    # --- helpers ----------------------------------------------------------------------------------

    def _split_columns(self, inputs: Tensor) -> dict[str, Tensor]:
        parts = torch.split(inputs, [self.widths[m] for m in self.modality_names], dim=-1)
        return dict(zip(self.modality_names, parts, strict=True))

    @staticmethod
    def _remove(handles: list[RemovableHandle]) -> None:
        for handle in handles:
            handle.remove()
        handles.clear()


def check_head(head: Any, head_widths: Any, modality_names: Sequence[str], features: Any) -> None:
    """Checks the form of ``head`` / ``head_widths`` (their fit to the model is checked at fit start)."""
    if head is None:
        if head_widths is not None:
            raise config_error("head_widths", head_widths, "None when no `head` is named")
        return
    if features is not None:
        raise config_error(
            "features",
            features,
            "None when `head` is named",
            "with head=..., the features are read where the head sees them; pass one or the other.",
        )
    if isinstance(head, Mapping):
        if sorted(head) != sorted(modality_names) or not all(isinstance(p, str) and p for p in head.values()):
            raise config_error("head", head, f"one linear layer's path for each of {list(modality_names)} (sum fusion)")
        if head_widths is not None:
            raise config_error("head_widths", head_widths, "None with a head per modality (their widths are known)")
    elif not (isinstance(head, str) and head):
        raise config_error(
            "head",
            head,
            "None, the dotted path of the final nn.Linear (concat fusion), or {modality: path} (sum fusion)",
        )
    if head_widths is not None and (
        not isinstance(head_widths, Mapping)
        or sorted(head_widths) != sorted(modality_names)
        or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in head_widths.values())
    ):
        raise config_error(
            "head_widths", head_widths, f"None or a positive column count for each of {list(modality_names)}"
        )


def _linear(module: nn.Module, path: str, argument: str) -> nn.Linear:
    try:
        layer = module.get_submodule(path)
    except AttributeError:
        top = [n for n, _ in module.named_children()]
        raise config_error(argument, path, "the dotted path of an existing submodule", f"top-level: {top}") from None
    if not isinstance(layer, nn.Linear):
        raise config_error(
            argument,
            f"{path} ({type(layer).__name__})",
            "an nn.Linear: the final layer that produces the logits",
            "other heads can implement split_logits/fuse/fusion instead (pdmp_lightning.protocol).",
        )
    return layer


def _widths(head: nn.Linear, names: Sequence[str], given: Mapping[str, int] | None) -> dict[str, int]:
    if given is not None:
        widths = {m: int(given[m]) for m in names}
        if sum(widths.values()) != head.in_features:
            raise config_error(
                "head_widths",
                dict(given),
                f"widths that add up to the head's in_features ({head.in_features})",
                "they are the modalities' feature sizes, in the order of `modalities`.",
            )
        return widths
    if head.in_features % len(names):
        raise config_error(
            "head_widths",
            None,
            f"each modality's column count: the head's {head.in_features} inputs do not split equally "
            f"among {len(names)} modalities",
            f"pass head_widths={{{', '.join(f'{m!r}: ...' for m in names)}}}.",
        )
    return dict.fromkeys(names, head.in_features // len(names))
