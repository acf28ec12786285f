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
  evenly spaced sample of at most about ``MAX_WATCHED_ELEMENTS`` of them for a larger encoder (three
  rows of them, 96 KiB in float32), and does a handful of tensor operations per step whatever the
  encoder's size.
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
#: evenly spaced sample of about this many elements of larger ones: its memory (three rows of this
#: size, 96 KiB in float32, under 1% of any encoder above 2.5 M parameters) and per-step work stay
#: small (on a 300,000-element encoder the sampled cosine is within 0.02 of the full one, tested).
MAX_WATCHED_ELEMENTS = 8_192
#: A sample is taken in runs of this many consecutive elements (whole cache lines): scattered single
#: elements of a large encoder cost a cache miss each, which on a 20 ms step was 2% of its time.
SAMPLE_RUN = 16

#: Reduces a tensor over ranks with ``"sum"`` or ``"mean"``; None on a single process.
Reduce = Callable[[Tensor, str], Tensor]


def _at_least_float32(tensor: Tensor) -> Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _local(tensor: Tensor) -> Tensor:
    """The shard this rank holds of a DTensor (FSDP2), else the tensor itself."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def _runs(tensor: Tensor, spacing: int) -> Tensor:
    """``tensor``'s runs of ``SAMPLE_RUN`` consecutive elements, one every ``spacing``, as a (runs, SAMPLE_RUN) view.

    A tensor shorter than a run gives no run.
    """
    flat = tensor.reshape(-1)
    count = 0 if flat.numel() < SAMPLE_RUN else (flat.numel() - SAMPLE_RUN) // spacing + 1
    return flat.as_strided((count, SAMPLE_RUN), (spacing, 1), flat.storage_offset())


def _watched(tensors: Sequence[Tensor], spacing: int | None) -> list[Tensor]:
    """What the hypergradient reads of each tensor: all of it (``spacing`` None) or its sampled runs."""
    if spacing is None:
        return [t.reshape(-1) for t in tensors]
    return [_runs(t, spacing) for t in tensors]


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

    Examples:
        >>> boost = HypergradientBoost(ceiling=10.0, floor=1.0)
        >>> boost.value, boost.state_dict()["value"]
        (10.0, 10.0)
    """

    name = "hypergradient"

    def __init__(self, ceiling: float, floor: float, rate: float = 0.5, interval: int = ADAPTATION_INTERVAL) -> None:
        super().__init__(ceiling, floor)
        self.rate, self.interval = rate, interval
        #: Rows ``[a, gradient, b]``: ``a`` and ``b`` take turns holding the previous parameters, so
        #: that the move (written over them) and the gradient are always two adjacent rows.
        self._buffer: Tensor | None = None
        self._previous_row = 0
        #: The parameters' identities and which of them had a gradient, when the buffer was laid out.
        self._key: tuple[tuple[int, ...], tuple[bool, ...]] | None = None
        self._parameter_views: list[Tensor] = []
        #: Elements between two sampled runs; None while the encoder is small enough to watch whole.
        self._spacing: int | None = None
        self._grams: list[Tensor] = []

    def observe_loss(self, loss: Tensor) -> None:
        """Unused: this rule reads the parameters and gradients."""

    def reset(self) -> None:
        """Forgets the previous parameters (the window reopened, or a fit began); the value stays."""
        self._buffer = None
        self._key = None
        self._parameter_views = []
        self._grams.clear()

    def _gather(self, watched: list[Tensor], row: int) -> None:
        assert self._buffer is not None
        target = self._buffer[row]
        torch.cat(watched, out=target if self._spacing is None else target.view(-1, SAMPLE_RUN))

    def step(self, parameters: Sequence[Tensor], reduce: Reduce | None) -> bool:
        """Observes one optimizer step; returns True when the multiplier was updated.

        Args:
            parameters: The dominant encoder's parameters, gradients final (accumulated, unscaled, reduced).
            reduce: Reduces over ranks (used to sum over shards when the parameters are sharded).
        """
        # Everything below reads detached tensors: no graph is recorded, so no no_grad context is needed.
        grads = [p.grad for p in parameters]
        if not any(g is not None for g in grads):
            return False
        key = (tuple(map(id, parameters)), tuple(g is not None for g in grads))
        if key != self._key or self._buffer is None:
            # The first step, or the parameters with a gradient changed: start again from here.
            watched = [_local(p.detach()) for p, g in zip(parameters, grads, strict=True) if g is not None]
            stride = math.ceil(sum(t.numel() for t in watched) / MAX_WATCHED_ELEMENTS)
            self._spacing = None if stride <= 1 else stride * SAMPLE_RUN
            # Views into the parameters, which the optimizer updates in place: taken once per layout.
            self._parameter_views = _watched(watched, self._spacing)
            size = sum(w.numel() for w in self._parameter_views)
            dtype = torch.promote_types(watched[0].dtype, torch.float32)
            self._buffer = torch.empty(3, size, dtype=dtype, device=watched[0].device)
            self._previous_row = 0
            self._gather(self._parameter_views, 0)
            self._key = key
            return False
        buffer = self._buffer
        previous, current = self._previous_row, 2 - self._previous_row
        self._gather(self._parameter_views, current)
        self._gather(_watched([_local(g.detach()) for g in grads if g is not None], self._spacing), 1)
        torch.sub(buffer[current], buffer[previous], out=buffer[previous])  # the move since the previous step
        pair = buffer[0:2] if previous == 0 else buffer[1:3]
        # [[g.g, g.d], [d.g, d.d]], or its mirror [[d.d, d.g], [g.d, g.g]]: read symmetrically below.
        self._grams.append(pair @ pair.T)
        self._previous_row = current
        if len(self._grams) < self.interval:
            return False
        grams = torch.stack(self._grams)
        self._grams.clear()
        if reduce is not None and any(hasattr(p, "to_local") for p in parameters):
            grams = reduce(grams, "sum")  # sums over shards: one collective per interval
        norms = (grams[:, 0, 0] * grams[:, 1, 1]).sqrt()  # |g| |d| in either orientation
        # A step that did not move (skipped by AMP, frozen) says nothing: counted as 0.
        cosines = torch.where(norms > 0, -grams[:, 0, 1] / norms.clamp_min(1e-30), torch.zeros_like(norms))
        values = cosines.tolist()  # the interval's only host read
        self.signal = sum(values) / len(values)
        exponent = max(-50.0, min(50.0, self.rate * sum(values)))  # bounded: a long interval cannot overflow
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

    Examples:
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
