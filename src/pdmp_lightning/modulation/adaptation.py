"""How strongly the dominant modality is boosted while training: a constant, or a boost that adapts.

A constant ``gamma_p`` multiplies the dominant encoder's step. Whether that helps depends on the
base learning rate: below the encoder's own best rate it is the gain PDMP reports, at a well-tuned
rate it overshoots. An adaptive boost starts at the constant's value (the ceiling) and moves between
a floor (no more than the other modalities get, never less than plain joint training) and that
ceiling, from what the training itself shows:

- ``"hypergradient"``: bounded hypergradient descent on the log of the boost (Baydin et al.,
  "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018), restricted to the
  dominant encoder. At each optimizer step the cosine between the descent direction ``-g_t`` and the
  encoder's previous update ``theta_t - theta_{t-1}`` says whether a longer previous step would have
  lowered the loss further (> 0: the boost is not too strong) or overshot (< 0). The boost's log
  moves by ``rate`` times that cosine. Keeps a copy of the dominant encoder's parameters, or of an
  evenly strided sample of ``MAX_WATCHED_ELEMENTS`` of them for a larger encoder.
- ``"backoff"``: the training loss, averaged over windows of ``interval`` steps (and over ranks),
  is watched for instability. When a window's mean is above the previous one's, the boost is
  halved; otherwise it grows back by a quarter. No copies; one collective per window.

Both read values back to the host once per ``interval`` optimizer steps and hold identical values on
every rank (gradients and parameters are identical under DDP; sums over shards and losses over ranks
are reduced).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import torch
from torch import Tensor

Adaptation = Literal["hypergradient", "backoff", "none"]
ADAPTATIONS: tuple[str, ...] = get_args(Adaptation)

#: Optimizer steps between two reads of the adaptation's signal (one host read, one collective at most).
ADAPTATION_INTERVAL = 10
#: The hypergradient's cosine is measured on every element of encoders up to this size, and on an
#: evenly strided sample of this many elements of larger ones: the snapshot and the per-step work
#: stay small (on a 300,000-element encoder the sampled cosine is within 0.01 of the full one, tested).
MAX_WATCHED_ELEMENTS = 65_536

#: Reduces a tensor over ranks with ``"sum"`` or ``"mean"``; None on a single process.
Reduce = Callable[[Tensor, str], Tensor]


def _at_least_float32(tensor: Tensor) -> Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _local(tensor: Tensor) -> Tensor:
    """The shard this rank holds of a DTensor (FSDP2), else the tensor itself."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


class BoundedBoost:
    """What both rules share: a multiplier between a floor and a ceiling, its last signal, its state.

    Args:
        ceiling: Largest (and first) multiplier: the constant ``gamma_p`` would keep it there.
        floor: Smallest multiplier.
    """

    name = ""

    def __init__(self, ceiling: float, floor: float) -> None:
        self.ceiling, self.floor = ceiling, min(floor, ceiling)
        self.value = ceiling
        #: The rule's signal over its last completed interval (None before the first).
        self.signal: float | None = None

    @property
    def adapts(self) -> bool:
        """Whether there is room to move (a ceiling above the floor)."""
        return self.ceiling > self.floor

    def _clip(self, value: float) -> float:
        return min(self.ceiling, max(self.floor, value))

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "ceiling": self.ceiling, "signal": self.signal}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ceiling = self._clip(float(state.get("ceiling", self.ceiling)))
        self.value = self._clip(float(state["value"]))
        self.signal = state.get("signal")


class HypergradientBoost(BoundedBoost):
    """The dominant modality's multiplier, moved by the hypergradient of its step size.

    ``log k <- clip(log k + rate * cos(-g_t, theta_t - theta_{t-1}), log floor, log ceiling)``,
    summed over the steps of each ``interval`` and applied at its end.

    Args:
        ceiling: Largest (and first) multiplier: the constant ``gamma_p`` would keep it there.
        floor: Smallest multiplier.
        rate: Change of ``log k`` per step at a cosine of 1.
        interval: Optimizer steps between two updates of the multiplier.

    Example:
        >>> boost = HypergradientBoost(ceiling=10.0, floor=1.0)
        >>> boost.value, boost.state_dict()["value"]
        (10.0, 10.0)
    """

    name = "hypergradient"

    def __init__(self, ceiling: float, floor: float, rate: float = 0.5, interval: int = ADAPTATION_INTERVAL) -> None:
        super().__init__(ceiling, floor)
        self.rate, self.interval = rate, interval
        self._previous: list[Tensor] | None = None
        self._stride: int | None = None
        self._cosines: list[Tensor] = []

    def observe_loss(self, loss: Tensor) -> None:
        """Unused: this rule reads the parameters and gradients."""

    def reset(self) -> None:
        """Forgets the previous parameters (the window reopened, or a fit began); the value stays."""
        self._previous = None
        self._stride = None
        self._cosines.clear()

    def step(self, parameters: Sequence[Tensor], reduce: Reduce | None) -> bool:
        """Observes one optimizer step; returns True when the multiplier was updated.

        Args:
            parameters: The dominant encoder's parameters, gradients final (accumulated, unscaled, reduced).
            reduce: Reduces over ranks (used to sum over shards when the parameters are sharded).
        """
        with torch.no_grad():
            locals_ = [_local(p.detach()) for p in parameters]
            if self._previous is None or self._stride is None:
                self._stride = max(1, sum(t.numel() for t in locals_) // MAX_WATCHED_ELEMENTS)
            stride = self._stride
            current = [t.reshape(-1)[::stride] for t in locals_]
            gradients = [None if p.grad is None else _local(p.grad.detach()).reshape(-1)[::stride] for p in parameters]
            previous = self._previous
            if previous is None or [b.shape for b in previous] != [c.shape for c in current]:
                self._previous = [_at_least_float32(c).clone() for c in current]
                return False
            terms: list[Tensor] = []
            for now, before, grad in zip(current, previous, gradients, strict=True):
                if grad is not None:
                    # In place: the snapshot holds the move, then the new parameters (no temporary tensor).
                    moved = torch.sub(now, before, out=before)
                    flat = _at_least_float32(grad).to(moved.dtype)
                    terms.append(torch.stack([-torch.dot(flat, moved), torch.dot(flat, flat), torch.dot(moved, moved)]))
                before.copy_(now)
            if not terms:
                return False
            sums = torch.stack(terms).sum(dim=0)
            if reduce is not None and any(hasattr(p, "to_local") for p in parameters):
                sums = reduce(sums, "sum")
            norm = (sums[1] * sums[2]).sqrt()
            # A step that did not move (skipped by AMP, frozen) says nothing: counted as 0.
            self._cosines.append(torch.where(norm > 0, sums[0] / norm.clamp_min(1e-30), torch.zeros_like(norm)))
        if len(self._cosines) < self.interval:
            return False
        cosines = torch.stack(self._cosines).tolist()  # the interval's only host read
        self._cosines.clear()
        self.signal = sum(cosines) / len(cosines)
        exponent = max(-50.0, min(50.0, self.rate * sum(cosines)))  # bounded: a long interval cannot overflow
        self.value = self._clip(self.value * math.exp(exponent))
        return True


class LossBackoff(BoundedBoost):
    """The dominant modality's multiplier, halved whenever the training loss rises.

    Per window of ``interval`` optimizer steps, the mean training loss (over the window's backward
    passes and over ranks) is compared with the previous window's: higher halves the multiplier,
    otherwise it grows by a quarter; always within ``[floor, ceiling]``.

    Args:
        ceiling: Largest (and first) multiplier.
        floor: Smallest multiplier.
        interval: Optimizer steps per window.
        backoff: Factor applied when the loss rose.
        growth: Factor applied when it did not.

    Example:
        >>> boost = LossBackoff(ceiling=10.0, floor=1.0)
        >>> boost.value
        10.0
    """

    name = "backoff"

    def __init__(
        self,
        ceiling: float,
        floor: float,
        interval: int = ADAPTATION_INTERVAL,
        backoff: float = 0.5,
        growth: float = 1.25,
    ) -> None:
        super().__init__(ceiling, floor)
        self.interval, self.backoff, self.growth = interval, backoff, growth
        self._losses: list[Tensor] = []
        self._steps = 0

    def observe_loss(self, loss: Tensor) -> None:
        """Records one backward pass's loss (no host read)."""
        self._losses.append(loss.detach().float().reshape(()))

    def reset(self) -> None:
        """Starts a new window; the value and the last window's mean stay."""
        self._losses.clear()
        self._steps = 0

    def step(self, parameters: Sequence[Tensor], reduce: Reduce | None) -> bool:
        """Counts one optimizer step; at the end of a window, compares its mean loss with the previous one's.

        Args:
            parameters: Unused (this rule reads the loss).
            reduce: Reduces over ranks (the window's mean loss is averaged over them).
        """
        self._steps += 1
        if self._steps < self.interval or not self._losses:
            return False
        mean = torch.stack(self._losses).mean()
        if reduce is not None:
            mean = reduce(mean, "mean")
        self._losses.clear()
        self._steps = 0
        current = float(mean)  # the window's only host read
        if self.signal is not None and math.isfinite(current):
            factor = self.backoff if current > self.signal else self.growth
            self.value = self._clip(self.value * factor)
        self.signal = current
        return True


Boost = HypergradientBoost | LossBackoff


def build_boost(adaptation: str, ceiling: float, floor: float) -> Boost | None:
    """The adaptive boost named ``adaptation`` between ``floor`` and ``ceiling``; None for ``"none"``."""
    if adaptation == "hypergradient":
        return HypergradientBoost(ceiling, floor)
    if adaptation == "backoff":
        return LossBackoff(ceiling, floor)
    if adaptation == "none":
        return None
    raise ValueError(f"unknown adaptation {adaptation!r}")
