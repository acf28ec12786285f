"""What the probes learn: the task (inferred from the targets, or told), its loss, metric and chance level.

==============  ==========================================  ===========  ===========================
task            targets                                     probe loss   metrics (first: default)
==============  ==========================================  ===========  ===========================
``multiclass``  integer class labels ``[B]``                cross-entropy ``accuracy``, ``macro_f1``
``multilabel``  float or bool 0/1 ``[B, L]``                BCE          ``average_precision`` (macro),
                                                                          ``macro_f1``
``regression``  float ``[B]`` or ``[B, k]`` (not all 0/1)   MSE          ``r2``, ``neg_mse``
==============  ==========================================  ===========  ===========================

Any torchmetrics ``Metric`` instance can score the probes instead; it receives the probe's predictions
(class probabilities, label probabilities or values) and the targets, and its ``higher_is_better``
decides the direction: a metric where lower is better is negated, so that the ranking always puts the
highest score first. The *chance level* of a metric is the score of an uninformed predictor: ``1/C`` for
multiclass, and for the other tasks the score of a constant prediction (every label at probability 0.5;
the mean of the training targets), measured on the validation data at the first pass.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelAveragePrecision,
    MultilabelF1Score,
)
from torchmetrics.regression import MeanSquaredError, R2Score

from pdmp_lightning.errors import config_error
from pdmp_lightning.tasks import Task as TaskKind
from pdmp_lightning.tasks import task_loss, task_outputs

ProbeTaskName = Literal["auto", "multiclass", "multilabel", "regression"]
PROBE_TASKS: tuple[str, ...] = get_args(ProbeTaskName)
#: Each task's metric names, the default first.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "multiclass": ("accuracy", "macro_f1"),
    "multilabel": ("average_precision", "macro_f1"),
    "regression": ("r2", "neg_mse"),
}


def infer_task(targets: Tensor, requested: str = "auto") -> TaskKind:
    """The task ``targets`` (one batch) imply, checked against ``requested`` when it is not ``"auto"``.

    Examples:
        >>> infer_task(torch.tensor([0, 2, 1]))
        'multiclass'
        >>> infer_task(torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
        'multilabel'
        >>> infer_task(torch.tensor([0.3, -1.2]))
        'regression'
        >>> infer_task(torch.tensor([[0.0, 1.0]]), "regression")
        'regression'
    """
    integer = not (targets.dtype.is_floating_point or targets.dtype == torch.bool)
    binary = bool(((targets == 0) | (targets == 1)).all()) if targets.numel() else False
    wide = targets.dim() == 2 and targets.shape[1] > 1
    if integer and not (targets.dim() == 1 or (targets.dim() == 2 and targets.shape[1] == 1)):
        inferred: TaskKind = "multilabel" if binary and targets.dim() == 2 else "regression"
    elif integer:
        inferred = "multiclass"
    elif wide and binary:
        inferred = "multilabel"
    else:
        inferred = "regression"
    if requested == "auto" or requested == inferred:
        return inferred
    fits = {
        "multiclass": integer and not wide,
        "multilabel": wide and binary,
        "regression": targets.dim() in (1, 2) and not integer,
    }
    if requested not in fits:
        raise config_error("probes.task", requested, f"one of {list(PROBE_TASKS)}")
    if not fits[requested]:
        allowed = {
            "multiclass": "integer class labels [B]",
            "multilabel": "0/1 targets [B, L] with L > 1",
            "regression": "float targets [B] or [B, k]",
        }[requested]
        raise config_error(
            "probes.task",
            f"{requested!r} for targets of dtype {targets.dtype} and shape {tuple(targets.shape)}",
            f"targets that fit it: {allowed}",
            f"these targets look like a {inferred} task; use probes.task='auto' or convert the targets.",
        )
    return requested  # type: ignore[return-value]


@dataclass
class ProbeTask:
    """A resolved task: how the probes are trained and scored.

    Attributes:
        kind: ``"multiclass"``, ``"multilabel"`` or ``"regression"``.
        outputs: Width of the probe head (classes, labels or regression outputs).
        metric_name: The metric's name (a task metric, or the class name of a metric instance).
        metric: None for a named metric, else the user's metric instance (cloned for each probe).
        chance: Score of an uninformed predictor (1/C for multiclass; measured at the first
            validation pass for the others; None before).
        top: Best possible score (1 for the bounded metrics; 0 for ``neg_mse``).
        target_mean: Mean of the training targets (regression's constant prediction).
    """

    kind: TaskKind
    outputs: int
    metric_name: str
    metric: Metric | None = None
    chance: float | None = None
    top: float = 1.0
    target_mean: Tensor | None = None

    @classmethod
    def resolve(cls, kind: TaskKind, outputs: int, metric: Any) -> ProbeTask:
        """Checks ``metric`` (a name, None for the task's default, or a Metric instance) against ``kind``."""
        names = TASK_METRICS[kind]
        if metric is None:
            return cls(kind, outputs, names[0], top=_top(names[0]))
        if isinstance(metric, Metric):
            higher = getattr(metric, "higher_is_better", None)
            if higher is None:
                raise config_error(
                    "probes.metric",
                    type(metric).__name__,
                    "a torchmetrics Metric whose `higher_is_better` is True or False",
                    "the ranking needs the metric's direction.",
                )
            bound = getattr(metric, "plot_upper_bound" if higher else "plot_lower_bound", None)
            top = float(bound) * (1 if higher else -1) if bound is not None else (1.0 if higher else 0.0)
            return cls(kind, outputs, type(metric).__name__, metric=metric, top=top)
        if metric not in names:
            raise config_error("probes.metric", metric, f"for a {kind} task, one of {list(names)} or a Metric instance")
        return cls(kind, outputs, str(metric), top=_top(str(metric)))

    @property
    def higher_is_better(self) -> bool:
        """Direction of the underlying metric (scores are always reported higher-is-better)."""
        if self.metric is not None:
            return bool(self.metric.higher_is_better)
        return self.metric_name != "neg_mse"

    def new_metric(self) -> Metric:
        """A fresh metric for one probe."""
        if self.metric is not None:
            return copy.deepcopy(self.metric)
        c = self.outputs
        if self.kind == "multiclass":
            return MulticlassF1Score(c, average="macro") if self.metric_name == "macro_f1" else MulticlassAccuracy(c)
        if self.kind == "multilabel":
            if self.metric_name == "macro_f1":
                return MultilabelF1Score(c, average="macro")
            return MultilabelAveragePrecision(c, average="macro")
        return (
            MeanSquaredError(num_outputs=c) if self.metric_name == "neg_mse" else R2Score(multioutput="uniform_average")
        )

    def targets(self, raw: Tensor) -> Tensor:
        """The batch's targets in the form the loss and metric take."""
        if self.kind == "multiclass":
            return raw.reshape(-1).long()
        if self.kind == "regression" and self.outputs == 1:
            return raw.reshape(-1).float()  # [B], as the model's regression loss takes it
        return raw.reshape(raw.shape[0], -1).float()

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The probe's training loss: the task's (``pdmp_lightning.tasks.task_loss``)."""
        return task_loss(self.kind, outputs, targets)

    def update(self, metric: Metric, outputs: Tensor, targets: Tensor) -> None:
        """Feeds one batch of probe outputs (logits or values) to ``metric``."""
        outputs = outputs.float()
        if self.kind == "multiclass":
            predictions = outputs.softmax(dim=1) if self.metric is not None else outputs.argmax(dim=1)
            metric.update(predictions, targets)
        elif self.kind == "multilabel":
            metric.update(outputs.sigmoid(), targets.long())
        else:
            metric.update(task_outputs(self.kind, outputs), targets.float())

    def constant_outputs(self, targets: Tensor) -> Tensor:
        """An uninformed predictor's outputs: 0 logits (probability 0.5), or the training targets' mean."""
        if self.kind == "regression" and self.target_mean is not None:
            return self.target_mean.to(targets.device, torch.float32).reshape(1, -1).expand(targets.shape[0], -1)
        return torch.zeros(targets.shape[0], self.outputs, device=targets.device)

    def score(self, value: float) -> float:
        """The metric's value as a higher-is-better score."""
        return value if self.higher_is_better else -value


def _top(name: str) -> float:
    """Best possible score of a named metric: 0 for the negated mean squared error, 1 for the others."""
    return 0.0 if name == "neg_mse" else 1.0
