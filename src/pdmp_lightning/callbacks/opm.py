"""OPM: on-the-fly prediction modulation (Wei et al., TPAMI 2024), acting on the forward pass."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from pdmp_lightning.batch import BatchKey
from pdmp_lightning.callbacks.balancing import BalancingCallback, score_ratios, true_class_probability_sums
from pdmp_lightning.errors import config_error, is_number
from pdmp_lightning.fusion_access import HeadSpec, LinearHeadAccess
from pdmp_lightning.modality import ModalitySpecInput
from pdmp_lightning.types import NonNegativeFloat, NonNegativeInt, OpenUnitInterval, PositiveInt


def drop_probability(rho: float, q_base: float, lam: float) -> float:
    """``q = q_base * (1 + lam * tanh(rho - 1))`` clipped to [0, 1].

    Examples:
        >>> even, ahead = drop_probability(1.0, 0.5, 0.5), drop_probability(3.0, 0.5, 0.5)
        >>> round(even, 6), round(ahead, 4)
        (0.5, 0.741)
    """
    return min(1.0, max(0.0, q_base * (1.0 + lam * math.tanh(rho - 1.0))))


def drop_features(
    features: Mapping[str, Tensor], modality: str, q: float, generator: torch.Generator
) -> tuple[dict[str, Tensor], Tensor, float]:
    """Drops ``modality``'s features per sample with probability ``q`` and rescales what is kept.

    A dropped sample's features of ``modality`` become zero. Every kept feature is divided by
    ``1 - theta``, with ``theta = q * d_modality / sum_j d_j`` the expected share of the fused feature
    dimensions dropped (inverted dropout over the concatenated features).

    Returns:
        The new features, the boolean drop mask ``[B]`` and ``theta``.
    """
    reference = features[modality]
    dropped = torch.rand(reference.shape[0], generator=generator, device=reference.device) < q
    total = sum(f.shape[1] for f in features.values())
    theta = q * reference.shape[1] / total
    scale = 1.0 / (1.0 - theta)
    keep = (~dropped).to(reference.dtype)[:, None]
    out = {m: (f * keep if m == modality else f) * scale for m, f in features.items()}
    return out, dropped, theta


class OPMCallback(BalancingCallback):
    """OPM: drops the currently stronger modality's features, sample by sample, in the forward pass.

    OPM *suppresses* the stronger modality by hiding it from the fusion head (PDMP *boosts* the
    dominant one). Each training step, with probability ``p_exe`` (the same draw on every process),
    the split-logit scores ``s_m`` of the batch (summed over processes) give ``rho``; the modality with
    the largest ``rho > 1`` has its features zeroed per sample with probability
    ``q = q_base (1 + lam tanh(rho - 1))``, and kept features are rescaled by ``1 / (1 - theta)``
    (see ``drop_features``). It acts through a forward pre-hook on the named concat ``head`` (its
    input columns are the features) or on the module's ``fusion`` (called with a dict of features),
    so no gradient is scaled. Only one modality is dropped per step, so no sample ever loses every
    modality (the original's rule for dropping such samples never applies).

    Args:
        modalities: Modality -> encoder submodule path (its output are the features).
        q_base: Base drop probability.
        lam: Strength of the ratio's effect on the drop probability.
        p_exe: Probability that a step modulates at all.
        head: The model's final linear layer, a concat head (e.g. ``"model.fusion_module.fc_out"``):
            its input is dropped and rescaled, nothing is asked of the model.
        head_widths: Each modality's input columns of ``head`` (default: equal).
        q_gradient: Reproduce the official code's extra gradient through ``theta -> q`` (needs
            ``head``): there the drop probability is computed from the encoders' live features and
            the rescaling's backward returns ``theta`` itself as the gradient of ``theta``, so every
            executed step pushes ``theta * d theta / d features`` into the encoders, unrelated to
            the loss. Off by default: the paper's method computes ``q`` without a gradient.
        target: Batch key or index of the labels.
        start_epoch: First modulated epoch. The official code warms up while ``epoch <= 5``, so 6
            (the paper says 5 warm-up epochs).
        end_epoch: First epoch after the window (exclusive), or None.
        seed: Seed of the draws.
        log_every_n_steps: Interval of the logs (``opm/drop_probability``, ``opm/dropped/*``, ...).

    Examples:
        >>> callback = OPMCallback({"audio": "encoders.audio", "visual": "encoders.visual"})
    """

    required = ("split_logits", "fusion")
    needs_features = False
    own_mechanism = "features"  # it changes the fusion's input; no gradient is scaled

    def __init__(
        self,
        modalities: Mapping[str, ModalitySpecInput],
        q_base: OpenUnitInterval = 0.5,
        lam: NonNegativeFloat = 0.5,
        p_exe: OpenUnitInterval = 0.7,
        head: HeadSpec | None = None,
        head_widths: Mapping[str, int] | None = None,
        q_gradient: bool = False,
        target: BatchKey = "label",
        start_epoch: NonNegativeInt = 6,
        end_epoch: PositiveInt | None = None,
        seed: int = 0,
        log_every_n_steps: NonNegativeInt | None = None,
    ) -> None:
        super().__init__(
            modalities,
            head=head,
            head_widths=head_widths,
            target=target,
            start_epoch=start_epoch,
            end_epoch=end_epoch,
            seed=seed,
            log_every_n_steps=log_every_n_steps,
            log_prefix="opm",
        )
        for name, value, low, high in (("q_base", q_base, 0.0, 1.0), ("p_exe", p_exe, 0.0, 1.0)):
            if not is_number(value, above=low, at_most=high):
                raise config_error(name, value, f"a number in ({low:g}, {high:g}]")
        if not is_number(lam, at_least=0):
            raise config_error("lam", lam, "a finite number >= 0")
        if q_gradient and head is None:
            raise config_error(
                "q_gradient",
                q_gradient,
                "False, or True together with head='<the concat head's path>'",
                "the official gradient through q is taken with the head's weights detached, which needs the head.",
            )
        self.q_base, self.lam, self.p_exe = float(q_base), float(lam), float(p_exe)
        self.q_gradient = bool(q_gradient)
        self.last: dict[str, float] = {}
        self._trainer: pl.Trainer | None = None
        self._fusion_handles: list[RemovableHandle] = []
        self._fusion_ran = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self._trainer = trainer
        self.access.fused_module(type(self).__name__)  # refused now, not when the window opens

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self._fusion_ran = False

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        super().on_before_backward(trainer, pl_module, loss)
        if self.is_modulating and not self._fusion_ran:
            where = f"head {self.head!r}" if self.head is not None else "fusion"
            raise config_error(
                where,
                f"{type(self.access.fused_module(type(self).__name__)).__name__}, not called in this training step",
                "the model's fusion called in the training forward",
                "OPM drops features on their way into the fusion; a forward that fuses some other way gives it "
                "nothing to drop, and the step would train as if OPM were not there.",
            )

    def _activate(self, trainer: pl.Trainer) -> None:
        super()._activate(trainer)
        self._fusion_handles = self.access.register_feature_transform(self._modulate, type(self).__name__)

    def _detach(self) -> None:
        super()._detach()
        for handle in self._fusion_handles:
            handle.remove()
        self._fusion_handles.clear()

    def _modulate(self, features: dict[str, Tensor]) -> dict[str, Tensor] | None:
        self._fusion_ran = True
        trainer = self._trainer
        assert trainer is not None
        labels = self.labels()
        if features[self.modality_names[0]].shape[0] != labels.shape[0]:
            rows = features[self.modality_names[0]].shape[0]
            raise config_error(
                "head" if self.head is not None else "fusion",
                f"features with {rows} rows",
                f"one row per sample ({labels.shape[0]} labels in this batch)",
                "OPM drops whole samples of a modality; its fusion input must be pooled, one row per sample.",
            )
        with torch.no_grad():
            shares = self.access.split_logits({m: f.detach() for m, f in features.items()})
        ratios = score_ratios(self.reduce(trainer, true_class_probability_sums(shares, labels), op="sum"))
        device = next(iter(features.values())).device
        execute = float(torch.rand((), generator=self.step_generator(trainer, device), device=device)) < self.p_exe
        strongest = max(sorted(ratios), key=lambda m: ratios[m])
        self.last = {f"ratio/{m}": r for m, r in ratios.items()} | {"executed": float(execute)}
        if not execute or ratios[strongest] <= 1.0:
            self.last.update(drop_probability=0.0)
            return None
        q = drop_probability(ratios[strongest], self.q_base, self.lam)
        # Its own stream: on rank 0 the per-rank key would otherwise equal the execute draw's, and the
        # first sample's drop would be decided by the very number that decided to execute.
        generator = self.step_generator(trainer, device, per_rank=True, stream="drop")
        new_features, dropped, theta = drop_features(features, strongest, q, generator)
        self.last.update({"drop_probability": q, "theta": theta, f"dropped/{strongest}": float(dropped.float().mean())})
        if self.q_gradient:
            live_theta = self._live_theta(features, labels, strongest)
            new_features[strongest] = _ThetaAsItsGradient.apply(new_features[strongest], live_theta)
        return new_features

    def _live_theta(self, features: Mapping[str, Tensor], labels: Tensor, strongest: str) -> Tensor:
        """``theta`` as the official code computes it: from the live features, the head's weights detached."""
        assert isinstance(self.access, LinearHeadAccess)
        shares = self.access.split_logits(features, detach_weights=True)
        performance = true_class_probability_sums(shares, labels)
        others = torch.stack([p for m, p in performance.items() if m != strongest]).mean()
        advantage = torch.tanh(torch.relu(performance[strongest] / others - 1))
        q = torch.clip(self.q_base * (1 + self.lam * advantage), 0.0, 1.0)
        total = sum(f.shape[1] for f in features.values())
        return q * features[strongest].shape[1] / total

    def _method_metrics(self) -> dict[str, float | Tensor]:
        return {f"opm/{name}": value for name, value in self.last.items()}


class _ThetaAsItsGradient(torch.autograd.Function):
    """Identity on the features; ``theta``'s gradient is ``theta`` (the official ``custom_autograd.backward``)."""

    @staticmethod
    def forward(ctx: Any, features: Tensor, theta: Tensor) -> Tensor:
        ctx.save_for_backward(theta)
        return features.view_as(features)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:
        (theta,) = ctx.saved_tensors
        return grad, theta.detach().clone()
