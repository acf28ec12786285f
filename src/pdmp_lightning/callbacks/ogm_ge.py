"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.optim import Optimizer

from pdmp_lightning.batch import BatchKey
from pdmp_lightning.callbacks.balancing import BalancingCallback, score_ratios, true_class_probability_sums
from pdmp_lightning.fusion_access import HeadSpec
from pdmp_lightning.modality import ModalitySpecInput
from pdmp_lightning.modulation.coefficients import check_gamma
from pdmp_lightning.modulation.mechanisms import Mechanism, at_least_float32
from pdmp_lightning.types import NonNegativeInt, PositiveFloat, PositiveInt


def ogm_coefficients(scores: Mapping[str, float], alpha: float) -> dict[str, float]:
    """OGM's coefficients from each modality's summed true-class probability.

    With two modalities, ``rho_a = s_a / s_v``: the modality with ``rho > 1`` (the currently stronger
    one) gets ``1 - tanh(alpha * rho)``, the other 1. With more, each modality is compared with the
    mean of the others, ``rho_m = s_m / mean_{j != m} s_j`` (the same rule for two).

    Examples:
        >>> # rho_audio = 3
        >>> coefficients = ogm_coefficients({"audio": 3.0, "visual": 1.0}, alpha=0.5)
        >>> round(coefficients["audio"], 6), coefficients["visual"]  # 1 - tanh(1.5)
        (0.094852, 1.0)
    """
    return {m: 1.0 - math.tanh(alpha * rho) if rho > 1 else 1.0 for m, rho in score_ratios(scores).items()}


class OGMGECallback(BalancingCallback):
    """OGM-GE: *suppresses* the currently stronger modality, step by step; PDMP *boosts* the dominant one.

    Each step, from the same batch, ``s_m`` = the sum over the batch of the true-class probability
    under modality m's share of the logits (from the named ``head``, or the module's
    ``split_logits``; summed over all processes). The
    modality whose ratio to the others exceeds 1 gets its encoder gradient multiplied by
    ``1 - tanh(alpha * rho)``; the others keep theirs. With generalisation enhancement, Gaussian noise
    with the per-tensor standard deviation of the unmodulated gradient is then added to every
    modulated tensor (the same noise on every process). Like the original it acts after backward,
    before the optimizer step (``mechanism="grad"`` by default). The original touches only the 4-D
    convolution weights of the encoders: to do the same, select them with a regex and say where the
    features come from, e.g. ``modalities={"audio": "re:^encoders\\.audio\\..*conv.*weight$", ...}``,
    ``features={"audio": "encoders.audio", ...}``.

    Args:
        modalities: Modality -> the parameters to modulate (an encoder's submodule path, or regexes).
        alpha: Modulation strength (0.8 for CREMA-D in the paper, 0.1 for VGGSound).
        generalization_enhancement: Add the GE noise.
        features: Modality -> submodule whose output are its features (default: the modality's path).
        head: The model's final linear layer (e.g. ``"model.fusion_module.fc_out"``), or one per
            modality for a sum fusion: the scores come from it, nothing is asked of the model.
        head_widths: Each modality's input columns of a concat ``head`` (default: equal).
        target: Batch key or index of the labels.
        start_epoch: First modulated epoch (the paper: 0).
        end_epoch: First epoch after the window, exclusive (the paper modulates epochs 0-50: 51).
        mechanism: ``"auto"`` (``grad`` for SGD, ``update`` for Adam-family), or force one.
        seed: Seed of the GE noise.
        log_every_n_steps: Interval of the logs (``ogm_ge/coefficient/*``, ``ogm_ge/score/*``).

    Examples:
        >>> modalities = {"audio": "encoders.audio", "visual": "encoders.visual"}
        >>> callback = OGMGECallback(modalities, alpha=0.8)
    """

    required = ("split_logits",)
    default_gradient_mechanism = "grad"

    def __init__(
        self,
        modalities: Mapping[str, ModalitySpecInput],
        alpha: PositiveFloat = 0.8,
        generalization_enhancement: bool = True,
        features: Mapping[str, str] | None = None,
        head: HeadSpec | None = None,
        head_widths: Mapping[str, int] | None = None,
        target: BatchKey = "label",
        start_epoch: NonNegativeInt = 0,
        end_epoch: PositiveInt | None = 51,
        mechanism: Mechanism = "auto",
        seed: int = 0,
        log_every_n_steps: NonNegativeInt | None = None,
    ) -> None:
        super().__init__(
            modalities,
            features=features,
            head=head,
            head_widths=head_widths,
            target=target,
            start_epoch=start_epoch,
            end_epoch=end_epoch,
            mechanism=mechanism,
            seed=seed,
            log_every_n_steps=log_every_n_steps,
            log_prefix="ogm_ge",
        )
        self.alpha = check_gamma("alpha", alpha)
        self.generalization_enhancement = bool(generalization_enhancement)
        self.scores: dict[str, float] = {}
        self._raw_std: dict[int, float] = {}

    def update_coefficients(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        labels = self.labels()
        with torch.no_grad():
            shares = self.access.split_logits({m: f.detach() for m, f in self.features().items()})
        self.scores = self.reduce(trainer, true_class_probability_sums(shares, labels), op="sum")
        self._coefficients.update(ogm_coefficients(self.scores, self.alpha))

    def _before_step_modulation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer) -> None:
        # The GE noise has the spread of the unmodulated gradient: measure it before "grad" scales it.
        self._raw_std.clear()
        if not (self.generalization_enhancement and self.is_modulating and self.mechanism_in_use == "grad"):
            return
        for parameter in self._noised_parameters(optimizer):
            self._raw_std[id(parameter)] = _std(parameter.grad)

    def _after_step_modulation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer) -> None:
        if not (self.generalization_enhancement and self.is_modulating):
            return
        generator = None
        with torch.no_grad():
            for modality, parameters in self._modality_parameters(optimizer).items():
                k = self._coefficients.get(modality, 1.0)
                for parameter in parameters:
                    grad = parameter.grad
                    assert grad is not None
                    if id(parameter) in self._raw_std:
                        std = self._raw_std[id(parameter)]
                    elif self.mechanism_in_use == "update":
                        std = _std(grad)  # the update mechanism leaves the gradient itself unscaled
                    else:
                        std = _std(grad) / k if k > 0 else 0.0  # already k * raw gradient
                    generator = generator or self.step_generator(trainer, grad.device)
                    noise = torch.empty_like(grad).normal_(0.0, std + 1e-8, generator=generator)
                    grad.add_(noise)

    def _modality_parameters(self, optimizer: Optimizer) -> dict[str, list[torch.nn.Parameter]]:
        assert self._modulator is not None
        return {
            m: [p for p in params if p.grad is not None]
            for m, params in self._modulator.parameters_in(optimizer).items()
        }

    def _noised_parameters(self, optimizer: Optimizer) -> list[torch.nn.Parameter]:
        return [p for params in self._modality_parameters(optimizer).values() for p in params]

    def _method_metrics(self) -> dict[str, float | Tensor]:
        return {f"ogm_ge/score/{m}": s for m, s in self.scores.items()}


def _std(grad: Tensor | None) -> float:
    assert grad is not None
    return float(at_least_float32(grad).std()) if grad.numel() > 1 else 0.0
