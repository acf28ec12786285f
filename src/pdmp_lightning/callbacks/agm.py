"""AGM: adaptive gradient modulation from Shapley mono-modal responses (Li et al., ICCV 2023)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer

from pdmp_lightning import protocol
from pdmp_lightning.batch import BatchKey
from pdmp_lightning.callbacks.balancing import BalancingCallback
from pdmp_lightning.modality import ModalitySpecInput, unassigned_parameter_names
from pdmp_lightning.modulation.coefficients import check_gamma
from pdmp_lightning.modulation.mechanisms import Mechanism, at_least_float32
from pdmp_lightning.types import NonNegativeInt, PositiveFloat, PositiveInt


def shapley_outputs(fuse: Callable[[dict[str, Tensor]], Tensor], features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Each modality's mono-modal response: its exact Shapley share of the fused logits.

    ``F(S)`` is the fused output with the modalities outside ``S`` zeroed. The value of modality m is
    ``sum over S not containing m of |S|! (M - |S| - 1)! / M! * (F(S + m) - F(S))`` plus ``F(empty) / M``,
    so the responses add up to the fused logits. With two modalities this is AGM's
    ``o_a = (F(a, v) - F(0, v) + F(a, 0)) / 2``.
    """
    names = list(features)
    count = len(names)
    zeros = {m: torch.zeros_like(f) for m, f in features.items()}
    cache: dict[frozenset[str], Tensor] = {}

    def value(subset: frozenset[str]) -> Tensor:
        if subset not in cache:
            cache[subset] = fuse({m: features[m] if m in subset else zeros[m] for m in names})
        return cache[subset]

    empty = value(frozenset())
    outputs = {}
    for modality in names:
        others = [m for m in names if m != modality]
        total = empty / count
        for size in range(count):
            weight = math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)
            for subset in itertools.combinations(others, size):
                base = frozenset(subset)
                total = total + weight * (value(base | {modality}) - value(base))
        outputs[modality] = total
    return outputs


def agm_ratios(scores: Mapping[str, float]) -> dict[str, float]:
    """``r_m = exp(mean_{j != m} s_j - s_m)`` from cross-entropy scores (``exp(s_v - s_a)`` for two).

    A modality whose responses fit the labels better than the others' has ``r > 1``.
    """
    ratios = {}
    for modality, score in scores.items():
        others = [s for m, s in scores.items() if m != modality]
        ratios[modality] = exp_or_inf(sum(others) / len(others) - score)
    return ratios


def exp_or_inf(value: float) -> float:
    """``exp(value)``, ``inf`` where it overflows (as the official code's tensors do) instead of raising.

    Diverging scores (a learning rate far too high) drive the ratio past float range; an infinite
    ratio gives that modality a coefficient of 0 in :func:`agm_coefficients`.
    """
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def agm_coefficients(ratios: Mapping[str, float], averages: Mapping[str, float], alpha: float) -> dict[str, float]:
    """``c_m = exp(alpha * min(r_bar_m - r_m, 10))``: below 1 for a modality ahead of its running average.

    Example:
        >>> agm_coefficients({"audio": 2.0, "visual": 0.5}, {"audio": 1.0, "visual": 1.0}, alpha=1.0)
        {'audio': 0.36787944117144233, 'visual': 1.6487212707001282}
    """
    return {m: math.exp(alpha * min(averages[m] - r, 10.0)) for m, r in ratios.items()}


@contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """Puts every submodule in eval mode (batch norm uses running statistics) and restores each one's flag."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes.items():
            submodule.training = training


class AGMCallback(BalancingCallback):
    """AGM: scales each encoder's gradient by how far its Shapley response runs ahead of its average.

    Each step the mono-modal responses ``o_m`` (exact Shapley shares of the fused logits, from the
    module's ``fuse`` with modalities' features zeroed, batch norm in eval mode) are scored by their
    cross-entropy ``s_m`` (averaged over processes); ``r_m = exp(mean_{j != m} s_j - s_m)`` and its
    running average since the start of training ``r_bar_m`` give ``c_m = exp(alpha * min(r_bar_m - r_m,
    10))``: a modality currently ahead of its average is *suppressed*, one behind is *boosted*. The
    running averages update after ``c`` is computed and are saved in checkpoints. After backward, if
    any element of the gradient of the parameters in no modality (the fusion head) exceeds 1 in
    magnitude, the total gradient norm is clipped to 1, as in the original.

    Args:
        modalities: Modality -> encoder submodule path (its output are the features).
        alpha: Modulation strength (1.5 for CREMA-D in the paper).
        clip_fusion_gradient: Apply the clip described above.
        features: Modality -> submodule whose output are its features (default: the modality's path).
        target: Batch key or index of the labels.
        start_epoch: First modulated epoch.
        end_epoch: First epoch after the window (exclusive), or None (the paper: all epochs).
        mechanism: How the coefficients act (``"auto"``: at the encoder outputs for SGD).
        log_every_n_steps: Interval of the logs (``agm/coefficient/*``, ``agm/ratio/*``, ...).

    Example:
        >>> callback = AGMCallback({"audio": "encoders.audio", "visual": "encoders.visual"}, alpha=1.5)
    """

    required = ("fuse",)

    def __init__(
        self,
        modalities: Mapping[str, ModalitySpecInput],
        alpha: PositiveFloat = 1.5,
        clip_fusion_gradient: bool = True,
        features: Mapping[str, str] | None = None,
        target: BatchKey = "label",
        start_epoch: NonNegativeInt = 0,
        end_epoch: PositiveInt | None = None,
        mechanism: Mechanism = "auto",
        log_every_n_steps: NonNegativeInt | None = None,
    ) -> None:
        super().__init__(
            modalities,
            features=features,
            target=target,
            start_epoch=start_epoch,
            end_epoch=end_epoch,
            mechanism=mechanism,
            log_every_n_steps=log_every_n_steps,
            log_prefix="agm",
        )
        self.alpha = check_gamma("alpha", alpha)
        self.clip_fusion_gradient = bool(clip_fusion_gradient)
        self.ratio_sums: dict[str, float] = {}
        self.steps = 0
        self.last: dict[str, float] = {}
        self._fusion_parameters: list[nn.Parameter] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        named = dict(pl_module.named_parameters())
        self._fusion_parameters = [named[n] for n in unassigned_parameter_names(pl_module, self.groups)]

    def update_coefficients(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        labels = self.labels()
        features = {m: f.detach() for m, f in self.features().items()}
        with torch.no_grad(), evaluation_mode(pl_module):
            outputs = shapley_outputs(lambda masked: protocol.fuse(pl_module, masked), features)
            local = {m: F.cross_entropy(at_least_float32(o), labels) for m, o in outputs.items()}
        scores = self.reduce(trainer, local, op="mean")
        self.multipliers.update(self.step(scores))

    def step(self, scores: Mapping[str, float]) -> dict[str, float]:
        """This step's coefficients from the modalities' scores; then the running averages take the step in.

        Example:
            >>> agm = AGMCallback({"a": "enc_a", "v": "enc_v"}, alpha=1.0)
            >>> agm.step({"a": 1.0, "v": 1.0})  # no history yet: the average is the current ratio
            {'a': 1.0, 'v': 1.0}
            >>> coefficients = agm.step({"a": 0.0, "v": 2.0})  # a pulls ahead of its average (1.0)
            >>> coefficients["a"] < 1.0 < coefficients["v"], agm.steps
            (True, 2)
        """
        ratios = agm_ratios(scores)
        averages = {m: self.ratio_sums[m] / self.steps if self.steps else r for m, r in ratios.items()}
        coefficients = agm_coefficients(ratios, averages, self.alpha)
        # The running averages move only after this step's coefficients are fixed.
        for modality, ratio in ratios.items():
            self.ratio_sums[modality] = self.ratio_sums.get(modality, 0.0) + ratio
        self.steps += 1
        self.last = {f"score/{m}": s for m, s in scores.items()} | {f"ratio/{m}": r for m, r in ratios.items()}
        return coefficients

    def _after_step_modulation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer) -> None:
        if not (self.clip_fusion_gradient and self.is_modulating):
            return
        grads = [p.grad for p in self._fusion_parameters if p.grad is not None]
        if grads and any(bool((g.abs() > 1).any()) for g in grads):
            parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(parameters, max_norm=1.0)
            self.last["fusion_clipped"] = 1.0
        else:
            self.last["fusion_clipped"] = 0.0

    def _method_metrics(self) -> dict[str, float | Tensor]:
        return {f"agm/{name}": value for name, value in self.last.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"ratio_sums": dict(self.ratio_sums), "steps": self.steps, "modalities": self.modality_names}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if sorted(state_dict.get("modalities", [])) != sorted(self.modality_names):
            rank_zero_warn(
                f"AGMCallback: the checkpoint's modalities {state_dict.get('modalities')} differ from "
                f"{self.modality_names}; its running averages are ignored."
            )
            return
        self.ratio_sums = dict(state_dict["ratio_sums"])
        self.steps = int(state_dict["steps"])
