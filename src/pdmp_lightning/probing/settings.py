"""How the unimodal probes train, stop and are scored: one typed, validated settings object."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

from torchmetrics import Metric

from pdmp_lightning.errors import check_int, config_error, is_number
from pdmp_lightning.probing.task import PROBE_TASKS, ProbeTaskName
from pdmp_lightning.types import NonNegativeFloat, OpenUnitInterval, PositiveFloat, PositiveInt

ProbeMetric = Literal["accuracy", "macro_f1", "average_precision", "r2", "neg_mse"]
PROBE_METRICS: tuple[str, ...] = get_args(ProbeMetric)


@dataclass(frozen=True)
class ProbeSettings:
    """How the unimodal probes train, when each one stops, and how they are scored.

    Nothing here depends on the main training's length: the probes train each modality until the
    ranking is settled, so a 3-epoch and a 100-epoch training get the same ranking. ``cost_target``
    only decides when the callback says that the probes cost more than you may want.

    Attributes:
        task: What the probes learn: ``"auto"`` (from the targets: integer labels -> multiclass, 0/1
            ``[B, L]`` -> multilabel, other floats -> regression) or one of those three.
        metric: Validation metric that ranks the modalities: None for the task's default
            (``accuracy``; ``average_precision`` for multilabel; ``r2`` for regression), a name
            (multiclass: ``accuracy``, ``macro_f1``; multilabel: ``average_precision``, ``macro_f1``;
            regression: ``r2``, ``neg_mse``), or any torchmetrics ``Metric`` instance (its
            ``higher_is_better`` gives the direction). See ``pdmp_lightning.probing.task``.
        max_epochs: Hard cap, in passes over the probe train data, on every probe. A probe stopped
            here while still climbing towards the leader raises a ``ProbeRankingWarning``.
        val_check_interval: Probe epochs between two validation passes (the probes' curves have one
            point per pass; 0.5: twice per epoch).
        min_epochs: Probe epochs every probe trains before it may stop early (slow starters get a
            chance); at or above ``max_epochs``, every probe trains to the cap.
        patience: Validation passes over which a probe must improve by more than the validation
            noise (one standard error) or ``min_delta``; one that does not has plateaued (only
            once it is clearly above chance).
        min_delta: Smallest gain over ``patience`` passes that counts as improvement, when larger
            than the validation noise.
        cost_target: Share of the main training's time the probes are expected to stay within;
            when they take more (short trainings), the callback says so and prints the ``ranking``
            argument that skips them. None: never say so. It never truncates a probe.
        val_fraction: Share of the train set held out for scoring when there is no validation loader.
        lr: Adam learning rate of the probes.
        num_classes: Number of classes (multiclass); None takes ``pl_module.num_classes`` (or its
            hparams), else scans the labels.
        seed: Seed of the held-out split.

    Examples:
        >>> ProbeSettings(max_epochs=10, metric="macro_f1").patience
        3
        >>> ProbeSettings(max_epochs=0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pdmp_lightning.errors.PDMPConfigurationError: `probes.max_epochs`: got 0; ...
    """

    task: ProbeTaskName = "auto"
    metric: ProbeMetric | Metric | None = None
    max_epochs: PositiveFloat = 20.0
    val_check_interval: PositiveFloat = 0.5
    min_epochs: NonNegativeFloat = 1.0
    patience: PositiveInt = 3
    min_delta: NonNegativeFloat = 0.0
    cost_target: PositiveFloat | None = 0.15
    val_fraction: OpenUnitInterval = 0.2
    lr: PositiveFloat = 3e-3
    num_classes: PositiveInt | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in PROBE_TASKS:
            raise config_error("probes.task", self.task, f"one of {list(PROBE_TASKS)}")
        if self.metric is not None and not isinstance(self.metric, Metric) and self.metric not in PROBE_METRICS:
            raise config_error(
                "probes.metric", self.metric, f"None, one of {list(PROBE_METRICS)} or a torchmetrics Metric instance"
            )
        if not is_number(self.max_epochs, above=0):
            raise config_error("probes.max_epochs", self.max_epochs, "a finite number > 0 (probe epochs)")
        if not is_number(self.val_check_interval, above=0, at_most=self.max_epochs):
            raise config_error(
                "probes.val_check_interval",
                self.val_check_interval,
                f"a number of probe epochs in (0, max_epochs={self.max_epochs:g}]",
                "0.5 validates twice per probe epoch.",
            )
        if not is_number(self.min_epochs, at_least=0):
            raise config_error("probes.min_epochs", self.min_epochs, "a finite number of probe epochs >= 0")
        check_int("probes.patience", self.patience, 1)
        if not is_number(self.min_delta, at_least=0):
            raise config_error("probes.min_delta", self.min_delta, "a finite number >= 0")
        if self.cost_target is not None and not is_number(self.cost_target, above=0):
            raise config_error(
                "probes.cost_target",
                self.cost_target,
                "a finite number > 0 (share of the main training's time) or None",
                "0.15 says so when the probes take more than 15% of the main training's time.",
            )
        if not is_number(self.val_fraction, above=0, below=1):
            raise config_error("probes.val_fraction", self.val_fraction, "a number in (0, 1)")
        if not is_number(self.lr, above=0):
            raise config_error("probes.lr", self.lr, "a finite number > 0")
        check_int("probes.num_classes", self.num_classes, 2, optional=True)
        check_int("probes.seed", self.seed)

    @property
    def metric_name(self) -> str:
        """The metric as a name: the given one, a metric instance's class name, or ``"default"``."""
        if isinstance(self.metric, Metric):
            return type(self.metric).__name__
        return self.metric or "default"

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values (a metric instance by its class name)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["metric"] = self.metric_name if isinstance(self.metric, Metric) else self.metric
        return values
