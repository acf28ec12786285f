"""A reference multimodal model: one encoder per modality, a fusion, optional unimodal heads.

It classifies (``task="multiclass"``, the default), tags (``"multilabel"``) or regresses
(``"regression"``); see ``pdmp_lightning.tasks`` for what each task changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, overload

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelAveragePrecision,
    MultilabelF1Score,
)
from torchmetrics.regression import MeanSquaredError, R2Score

from pdmp_lightning.data.base import LABEL_KEY
from pdmp_lightning.errors import config_error
from pdmp_lightning.models.fusion import FUSIONS, Fusion, FusionName, build_fusion
from pdmp_lightning.tasks import Task, check_task, task_loss, task_predictions


def _default_optimizer(parameters: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=0.01, momentum=0.9)


class MultimodalClassifier(pl.LightningModule):
    """Encoders per modality, a fusion, class logits; accuracy and macro-F1 for validation and test.

    Batches are dicts ``{<modality>: Tensor, "label": Tensor}``. ``task`` sets the loss, the metrics
    (logged with the prefixes ``val_`` and ``test_``) and what ``predict_step`` returns:

    - ``"multiclass"`` (default): ``num_classes`` >= 2 logits, cross-entropy; ``accuracy`` and
      ``macro_f1``; softmax probabilities.
    - ``"multilabel"``: ``num_classes`` >= 2 labels, float 0/1 targets ``[B, num_classes]``, binary
      cross-entropy with logits; ``average_precision`` (macro) and ``macro_f1`` (at 0.5); sigmoid
      probabilities.
    - ``"regression"``: ``num_classes`` outputs (1: targets ``[B]``, else ``[B, num_classes]``), mean
      squared error; ``mse`` and ``r2``; the predicted values.

    The validation loss is logged as ``val_loss`` in every task. The encoders are reachable as
    ``encoders.<modality>``, so a callback selects them with
    ``modalities={"audio": "encoders.audio", ...}``.

    Args:
        encoders: Modality -> encoder (any ``nn.Module`` returning ``[B, features]``; its feature
            size is read from an ``out_features`` attribute unless ``feature_dims`` gives it).
        num_classes: Number of classes (``"multiclass"``), labels (``"multilabel"``) or regression
            outputs (``"regression"``, 1 for a scalar target); the model has this many outputs.
        modalities: The data's modality names; when given, the encoders must match them exactly.
        fusion: ``"concat"``, ``"sum"``, ``"film"`` or ``"gated"``.
        fusion_hidden: Width of the projection in the ``film`` and ``gated`` fusions.
        fusion_condition: Modality that conditions ``film`` / ``gated`` (default: the first).
        feature_dims: Modality -> feature size, for encoders without ``out_features``.
        unimodal_heads: Add a linear head per modality (its logits are ``unimodal_logits``).
        unimodal_loss_weight: Weight of the unimodal heads' loss (the task's loss) in the training loss.
        optimizer: Optimizer factory (default: SGD, lr 0.01, momentum 0.9).
        lr_scheduler: Learning-rate scheduler factory, or None.
        task: ``"multiclass"``, ``"multilabel"`` or ``"regression"``.

    Examples:
        >>> from pdmp_lightning.models import MLPEncoder
        >>> encoders = {"audio": MLPEncoder(8, out_features=4),
        ...             "visual": MLPEncoder(6, out_features=4)}
        >>> model = MultimodalClassifier(encoders, num_classes=3)
        >>> batch = {"audio": torch.randn(2, 8), "visual": torch.randn(2, 6)}
        >>> model(batch).shape
        torch.Size([2, 3])
        >>> regressor = MultimodalClassifier(encoders, num_classes=1, task="regression")
        >>> regressor.predict_step(batch, 0).shape
        torch.Size([2])
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        num_classes: int,
        modalities: list[str] | None = None,
        fusion: FusionName = "concat",
        fusion_hidden: int = 256,
        fusion_condition: str | None = None,
        feature_dims: dict[str, int] | None = None,
        unimodal_heads: bool = False,
        unimodal_loss_weight: float = 0.0,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        task: Task = "multiclass",
    ) -> None:
        super().__init__()
        if not isinstance(encoders, Mapping) or len(encoders) < 1:
            raise config_error("encoders", encoders, "a mapping of modality name -> nn.Module")
        if modalities is not None and sorted(modalities) != sorted(encoders):
            raise config_error(
                "encoders",
                sorted(encoders),
                f"one encoder for each of the data's modalities {sorted(modalities)}",
                "add or rename the encoders in the model config.",
            )
        check_task(task, num_classes)
        if fusion not in FUSIONS:
            raise config_error("fusion", fusion, f"one of {list(FUSIONS)}")
        if fusion_condition is not None and fusion_condition not in encoders:
            raise config_error("fusion_condition", fusion_condition, f"None or one of {sorted(encoders)}")
        if unimodal_loss_weight < 0 or (unimodal_loss_weight > 0 and not unimodal_heads):
            raise config_error(
                "unimodal_loss_weight", unimodal_loss_weight, ">= 0, and > 0 only with unimodal_heads=True"
            )
        self.save_hyperparameters(ignore=["encoders", "optimizer", "lr_scheduler"])
        self.encoders = nn.ModuleDict(dict(encoders))
        self.feature_dims = {m: self._feature_dim(m, e, feature_dims) for m, e in encoders.items()}
        self.num_classes = num_classes
        self.task: Task = task
        self.fusion: Fusion = build_fusion(fusion, self.feature_dims, num_classes, fusion_hidden, fusion_condition)
        self.unimodal_heads = (
            nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in self.feature_dims.items()})
            if unimodal_heads
            else None
        )
        self.unimodal_loss_weight = unimodal_loss_weight
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        metrics = MetricCollection(_task_metrics(task, num_classes))
        self.val_metrics = metrics.clone(prefix="val_")
        self.test_metrics = metrics.clone(prefix="test_")

    @property
    def modalities(self) -> list[str]:
        """The modality names, in fusion order."""
        return list(self.encoders)

    # --- forward pieces (also what the baselines' model protocol uses) ---------------------------

    def encode(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each modality's features ``[B, d]``."""
        missing = [m for m in self.encoders if m not in batch]
        if missing:
            raise KeyError(f"the batch has no {missing}; its keys are {list(batch)}")
        return {m: encoder(batch[m]).flatten(1) for m, encoder in self.encoders.items()}

    def fuse(self, features: Mapping[str, Tensor]) -> Tensor:
        """Class logits from modality features."""
        logits: Tensor = self.fusion(features)
        return logits

    def split_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each modality's share of the fused logits (``concat`` and ``sum`` fusions); they add up to the logits."""
        split = getattr(self.fusion, "split_logits", None)
        if split is None:
            raise config_error(
                "fusion",
                self.hparams["fusion"],
                "'concat' or 'sum' for per-modality logits",
                "film and gated fusions mix the modalities before the head, so their logits do not split.",
            )
        shares: dict[str, Tensor] = split(features)
        return shares

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each unimodal head's logits (requires ``unimodal_heads=True``)."""
        if self.unimodal_heads is None:
            raise RuntimeError("this MultimodalClassifier was built with unimodal_heads=False")
        return {m: head(features[m]) for m, head in self.unimodal_heads.items()}

    @overload
    def forward(self, batch: Mapping[str, Tensor]) -> Tensor: ...

    @overload
    def forward(
        self, batch: Mapping[str, Tensor], return_features: Literal[True]
    ) -> tuple[Tensor, dict[str, Tensor]]: ...

    def forward(self, batch: Mapping[str, Tensor], return_features: bool = False) -> Any:
        """Logits or regression outputs ``[B, num_classes]`` (and each modality's features with ``return_features``)."""
        features = self.encode(batch)
        logits = self.fuse(features)
        return (logits, features) if return_features else logits

    # --- Lightning ------------------------------------------------------------------------------

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        # One call of the module itself: a callback can rerun the whole forward (AGM's masked passes).
        logits, features = self(batch, return_features=True)
        labels = batch[LABEL_KEY]
        loss = self.loss(logits, labels)
        self.log("train_loss", loss, prog_bar=True)
        if self.unimodal_heads is not None and self.unimodal_loss_weight > 0:
            unimodal = sum(self.loss(logits, labels) for logits in self.unimodal_logits(features).values())
            self.log("train_unimodal_loss", unimodal)
            loss = loss + self.unimodal_loss_weight * unimodal
        return loss

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        logits = self(batch)
        self.log("val_loss", self.loss(logits, batch[LABEL_KEY]))
        self._update_metrics(self.val_metrics, logits, batch[LABEL_KEY])
        self.log_dict(self.val_metrics, prog_bar=True)

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        logits = self(batch)
        self._update_metrics(self.test_metrics, logits, batch[LABEL_KEY])
        self.log_dict(self.test_metrics)

    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        """Class probabilities ``[B, num_classes]`` (softmax), label probabilities (sigmoid) or regression values."""
        return task_predictions(self.task, self(batch))

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The task's loss of outputs ``[B, num_classes]`` against the batch's targets (also the unimodal heads')."""
        return task_loss(self.task, logits, targets)

    def setup(self, stage: str) -> None:
        """Checks that the datamodule, when it says its task, has the model's."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        data_task = getattr(datamodule, "task", None)
        if isinstance(data_task, str) and data_task != self.task:
            raise config_error(
                "task",
                self.task,
                f"the datamodule's task {data_task!r}",
                "set the same `task` on the model and the data.",
            )

    def _update_metrics(self, metrics: MetricCollection, logits: Tensor, targets: Tensor) -> None:
        if self.task == "multilabel":
            metrics.update(logits.sigmoid(), targets.long())
        elif self.task == "regression":
            metrics.update(task_predictions(self.task, logits), targets.to(logits.dtype))
        else:
            metrics.update(logits, targets)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler_factory(optimizer)}

    @staticmethod
    def _feature_dim(modality: str, encoder: nn.Module, given: Mapping[str, int] | None) -> int:
        if given and modality in given:
            return int(given[modality])
        size = getattr(encoder, "out_features", None)
        if isinstance(size, int) and size > 0:
            return size
        raise config_error(
            f"encoders[{modality!r}]",
            type(encoder).__name__,
            "an encoder with an int `out_features` attribute",
            f"or pass feature_dims={{{modality!r}: <its output size>}}.",
        )


def _task_metrics(task: str, num_classes: int) -> dict[str, Any]:
    """The validation and test metrics of ``task``, by their logged name (without the prefix)."""
    if task == "multilabel":
        return {
            "average_precision": MultilabelAveragePrecision(num_classes, average="macro"),
            "macro_f1": MultilabelF1Score(num_classes, average="macro"),
        }
    if task == "regression":
        return {"mse": MeanSquaredError(), "r2": R2Score()}
    return {
        "accuracy": MulticlassAccuracy(num_classes, average="micro"),
        "macro_f1": MulticlassF1Score(num_classes, average="macro"),
    }
