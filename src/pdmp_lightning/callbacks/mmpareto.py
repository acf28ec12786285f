"""MMPareto: Pareto integration of the multimodal and unimodal gradients (Wei & Hu, ICML 2024)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from pdmp_lightning import protocol
from pdmp_lightning.batch import BatchKey
from pdmp_lightning.callbacks.balancing import BalancingCallback
from pdmp_lightning.errors import config_error
from pdmp_lightning.modality import ModalitySpecInput
from pdmp_lightning.modulation.coefficients import check_gamma
from pdmp_lightning.modulation.mechanisms import Modulator, at_least_float32
from pdmp_lightning.types import NonNegativeInt, PositiveFloat, PositiveInt


def pareto_weights(g_mm: Tensor, g_u: Tensor) -> tuple[float, float, float]:
    """MMPareto's weights of the multimodal and unimodal gradients of one encoder, and their cosine.

    No conflict (cosine > 0): (1/2, 1/2). Conflict: the two-objective min-norm solution
    ``w_mm = clip((|g_u|^2 - <g_mm, g_u>) / |g_mm - g_u|^2, 0.001, 0.999)``, ``w_u = 1 - w_mm``.

    Examples:
        >>> multimodal, unimodal = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
        >>> w_mm, w_u, cosine = pareto_weights(multimodal, unimodal)
        >>> round(w_mm, 6), round(w_u, 6), round(cosine, 4)  # cos < 0: a conflict
        (0.6, 0.4, -0.7071)
    """
    dot = float(torch.dot(g_mm, g_u))
    norms = float(g_mm.norm()) * float(g_u.norm())
    cosine = dot / norms if norms > 0 else 1.0
    if cosine > 0:
        return 0.5, 0.5, cosine
    gap = float((g_mm - g_u).pow(2).sum())
    w_mm = min(0.999, max(0.001, (float(g_u.pow(2).sum()) - dot) / gap)) if gap > 0 else 0.5
    return w_mm, 1.0 - w_mm, cosine


def mmpareto_gradients(
    g_mm: Sequence[Tensor], g_u: Sequence[Tensor], gamma: float
) -> tuple[list[Tensor], tuple[float, float, float]]:
    """One encoder's final gradients, tensor by tensor, and its (w_mm, w_u, cosine).

    Direction ``d = 2 (w_mm g_mm + w_u g_u)``; each tensor gets ``gamma * max(1, |g_sum| / |d|) * d``
    with ``g_sum = g_mm + g_u`` (a tensor with ``d = 0`` gets zeros). Without conflict this is
    ``gamma * g_sum``.
    """
    weights = pareto_weights(torch.cat([g.flatten() for g in g_mm]), torch.cat([g.flatten() for g in g_u]))
    w_mm, w_u, _ = weights
    finals = []
    for a, b in zip(g_mm, g_u, strict=True):
        direction = 2.0 * (w_mm * a + w_u * b)
        length = float(direction.norm())
        factor = max(1.0, float((a + b).norm()) / length) if length > 0 else 0.0
        finals.append(gamma * factor * direction)
    return finals, weights


class _ReplacingModulator(Modulator):
    """Parameter hooks that replace this backward's gradient with a precomputed one (one use each)."""

    name = "replace"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.replacements: dict[int, Tensor] = {}

    def attach(self, optimizers: Sequence[Optimizer]) -> None:
        self.detach()
        for parameters in self.group_parameters.values():
            for parameter in parameters:
                if parameter.requires_grad:
                    self._handles.append(parameter.register_hook(self._replacer(parameter)))
        self.attached = True

    def detach(self) -> None:
        super().detach()
        self.replacements.clear()

    def _replacer(self, parameter: nn.Parameter) -> Callable[[Tensor], Tensor]:
        def hook(grad: Tensor) -> Tensor:
            replacement = self.replacements.pop(id(parameter), None)
            return grad if replacement is None else replacement.to(grad.dtype)

        return hook


class MMParetoCallback(BalancingCallback):
    """MMPareto: for each encoder, a conflict-free mix of the multimodal and unimodal gradients.

    The module needs unimodal heads and the training loss ``CE(fused) + sum_m CE(unimodal_m)``
    (``MultimodalClassifier(unimodal_heads=True, unimodal_loss_weight=1.0)``). Before each backward,
    for every encoder the gradients of the multimodal loss (``fuse``) and of the unimodal losses
    (``unimodal_logits``) are computed separately from the step's features; when they conflict
    (negative cosine) the min-norm Pareto weights replace the plain sum, and each tensor's gradient
    is rescaled to at least the summed gradient's norm times ``gamma`` (see
    ``mmpareto_gradients``). The encoder's gradient in the backward is replaced by that result
    (scaled like the loss: accumulation, AMP); the heads keep the plain summed gradient. It neither
    boosts nor suppresses a modality by ranking: it removes conflicts inside each encoder. Under
    DDP each process combines its own batch's gradients; the results are then averaged.

    Args:
        modalities: Modality -> encoder submodule path (its output are the features).
        gamma: Magnitude factor (1.5 in the paper).
        features: Modality -> submodule whose output are its features (default: the modality's path).
        target: Batch key or index of the labels.
        start_epoch: First modulated epoch.
        end_epoch: First epoch after the window (exclusive), or None.
        log_every_n_steps: Interval of the logs (``mmpareto/cosine/*``, ``mmpareto/w_mm/*``).

    Examples:
        >>> modalities = {"audio": "encoders.audio", "visual": "encoders.visual"}
        >>> callback = MMParetoCallback(modalities)
    """

    required = ("fuse", "unimodal_logits")
    own_mechanism = "replace"  # its own parameter hooks replace each encoder's gradient

    def __init__(
        self,
        modalities: Mapping[str, ModalitySpecInput],
        gamma: PositiveFloat = 1.5,
        features: Mapping[str, str] | None = None,
        target: BatchKey = "label",
        start_epoch: NonNegativeInt = 0,
        end_epoch: PositiveInt | None = None,
        log_every_n_steps: NonNegativeInt | None = None,
    ) -> None:
        super().__init__(
            modalities,
            features=features,
            target=target,
            start_epoch=start_epoch,
            end_epoch=end_epoch,
            log_every_n_steps=log_every_n_steps,
            log_prefix="mmpareto",
        )
        self.gamma = check_gamma("gamma", gamma)
        self.last: dict[str, float] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        weight = getattr(pl_module, "unimodal_loss_weight", None)
        if weight is not None and (weight != 1.0 or getattr(pl_module, "unimodal_heads", None) is None):
            raise config_error(
                "unimodal_loss_weight",
                weight,
                "1.0 with unimodal_heads=True: MMPareto's training loss is CE(fused) + sum of unimodal CEs",
                "set model.init_args.unimodal_heads: true and unimodal_loss_weight: 1.0.",
            )

    def _check_strategy(self, trainer: pl.Trainer) -> None:
        self._refuse_sharded(
            trainer,
            "MMParetoCallback",
            "it replaces each encoder's gradient through parameter hooks, which sharded parameters do not support.",
        )
        super()._check_strategy(trainer)

    def _check_the_modulation_reaches_the_model(self) -> None:
        assert isinstance(self._modulator, _ReplacingModulator)
        missed = [
            n
            for m, g in self.groups.items()
            for n, p in zip(g.parameter_names, self._modulator.group_parameters[m], strict=True)
            if id(p) in self._modulator.replacements
        ]
        if missed:
            raise config_error(
                "modalities",
                f"{len(missed)} encoder parameters whose gradient was never replaced ({', '.join(missed[:5])})",
                "encoders whose parameters the training loss reaches",
                "the backward did not reach them, so MMPareto's gradients were computed and dropped.",
            )

    def _build_modulator(self, mechanism: str, pl_module: pl.LightningModule) -> Modulator | None:
        return _ReplacingModulator(self.groups, dict(pl_module.named_parameters()), self._coefficients)

    def update_coefficients(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        assert isinstance(self._modulator, _ReplacingModulator)
        labels, features = self.labels(), self.features()
        multimodal = F.cross_entropy(at_least_float32(protocol.fuse(pl_module, features)), labels)
        unimodal_logits = protocol.unimodal_logits(pl_module, features)
        unimodal = torch.stack([F.cross_entropy(at_least_float32(u), labels) for u in unimodal_logits.values()]).sum()
        groups = {m: [p for p in ps if p.requires_grad] for m, ps in self._modulator.group_parameters.items()}
        parameters = [p for ps in groups.values() for p in ps]
        g_mm = _gradients(multimodal, parameters)
        g_u = _gradients(unimodal, parameters)
        total = float((multimodal + unimodal).detach())
        # The backward that follows differentiates `loss` = scale * (multimodal + unimodal).
        scale = float(loss.detach()) / total if total > 0 else 1.0
        replacements: dict[int, Tensor] = {}
        start = 0
        for modality, params in groups.items():
            stop = start + len(params)
            finals, (w_mm, w_u, cosine) = mmpareto_gradients(g_mm[start:stop], g_u[start:stop], self.gamma)
            replacements.update({id(p): scale * g for p, g in zip(params, finals, strict=True)})
            self.last.update({f"cosine/{modality}": cosine, f"w_mm/{modality}": w_mm, f"w_u/{modality}": w_u})
            start = stop
        self._modulator.replacements = replacements

    def _method_metrics(self) -> dict[str, float | Tensor]:
        return {f"mmpareto/{name}": value for name, value in self.last.items()}


def _gradients(loss: Tensor, parameters: Sequence[nn.Parameter]) -> list[Tensor]:
    grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, grads, strict=True)]
