"""The probes beyond single-label classification: regression and multi-label targets, any metric."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchmetrics.regression import MeanAbsoluteError

from pdmp_lightning import PDMPCallback, PDMPConfigurationError, ProbeSettings
from pdmp_lightning.probing.task import ProbeTask, infer_task
from tests.helpers import trainer

MODALITIES = {"audio": "audio_encoder", "visual": "visual_encoder"}


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        (torch.tensor([0, 3, 1]), "multiclass"),
        (torch.tensor([[2], [0]]), "multiclass"),
        (torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]), "multilabel"),
        (torch.tensor([[True, False], [False, False]]), "multilabel"),
        (torch.tensor([0.5, -1.0, 2.0]), "regression"),
        (torch.tensor([[0.5, 1.0], [0.0, 3.0]]), "regression"),
        (torch.tensor([0.0, 1.0, 1.0]), "regression"),  # one float column of 0/1: a regression target
    ],
)
def test_the_task_is_inferred_from_the_targets(targets: Tensor, expected: str) -> None:
    assert infer_task(targets) == expected


def test_a_requested_task_that_does_not_fit_the_targets_is_named() -> None:
    with pytest.raises(PDMPConfigurationError, match=r"`probes.task`: got \"'multiclass' for targets of dtype"):
        infer_task(torch.tensor([0.5, 1.5]), "multiclass")
    assert infer_task(torch.tensor([[0.0, 1.0], [1.0, 1.0]]), "regression") == "regression"  # allowed: floats


def test_metrics_are_checked_against_the_task() -> None:
    assert ProbeTask.resolve("regression", 1, None).metric_name == "r2"
    assert ProbeTask.resolve("multilabel", 3, None).metric_name == "average_precision"
    with pytest.raises(PDMPConfigurationError, match=r"`probes.metric`: got 'accuracy'; expected for a regression"):
        ProbeTask.resolve("regression", 1, "accuracy")
    with pytest.raises(PDMPConfigurationError, match=r"`probes.metric`: got 'r3'"):
        ProbeSettings(metric="r3")  # type: ignore[arg-type]
    mae = ProbeTask.resolve("regression", 1, MeanAbsoluteError())
    assert mae.metric_name == "MeanAbsoluteError" and not mae.higher_is_better and mae.score(0.5) == -0.5


class TaskModel(pl.LightningModule):
    """Two MLP encoders, a concat head of ``outputs`` units, and the task's own loss."""

    def __init__(self, data: list[dict[str, Tensor]], task: str, outputs: int) -> None:
        super().__init__()
        self.audio_encoder = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
        self.visual_encoder = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
        self.head = nn.Linear(32, outputs)
        self.data, self.task = data, task

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.head(torch.cat([self.audio_encoder(batch["audio"]), self.visual_encoder(batch["visual"])], 1))
        if self.task == "multilabel":
            return F.binary_cross_entropy_with_logits(out, batch["label"])
        return F.mse_loss(out.squeeze(1), batch["label"])

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        pass

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.data[:256], batch_size=32, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.data[256:], batch_size=64)


def generated(task: str, count: int = 384) -> list[dict[str, Tensor]]:
    """Visual carries the target; audio only a faint, noisy trace of it: visual is the dominant modality."""
    generator = torch.Generator().manual_seed(0)
    visual = torch.randn(count, 8, generator=generator)
    weights = torch.randn(8, 3, generator=generator)
    signal = visual @ weights
    if task == "multilabel":
        target = (signal > 0).float()  # [N, 3], several labels on per sample
        audio_trace = target[:, :1].repeat(1, 8) - 0.5
    else:
        target = signal[:, 0]
        audio_trace = target[:, None].repeat(1, 8)
    audio = 0.05 * audio_trace + torch.randn(count, 8, generator=generator)
    return [{"audio": audio[i], "visual": visual[i], "label": target[i]} for i in range(count)]


@pytest.mark.parametrize(
    ("task", "outputs", "metric"), [("regression", 1, "r2"), ("multilabel", 3, "average_precision")]
)
def test_the_probes_rank_the_dominant_modality_first(task: str, outputs: int, metric: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TaskModel(generated(task), task, outputs)
    callback = PDMPCallback(MODALITIES, probes=ProbeSettings(max_epochs=6), report_path=str(tmp_path / "report.json"))
    trainer(callbacks=[callback], max_steps=1, precision="32-true").fit(model)
    outcome = callback.probe_outcome
    assert outcome is not None and outcome.task == task and outcome.metric == metric
    assert callback.ranking == ["visual", "audio"]
    scores = outcome.scores
    assert scores["visual"] > scores["audio"] > outcome.chance_level
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["task"], report["metric"]) == (task, metric) and report["chance"] == pytest.approx(outcome.chance)
    if task == "regression":
        assert abs(outcome.chance_level) < 0.1  # R2 of the training mean on the validation data: about 0
    else:
        assert 0.3 < outcome.chance_level < 0.7  # average precision of constant scores: the label frequency


def test_a_metric_instance_ranks_with_its_own_direction() -> None:
    torch.manual_seed(0)
    model = TaskModel(generated("regression"), "regression", 1)
    callback = PDMPCallback(MODALITIES, probes=ProbeSettings(max_epochs=4, metric=MeanAbsoluteError()))
    trainer(callbacks=[callback], max_steps=1, precision="32-true").fit(model)
    outcome = callback.probe_outcome
    assert outcome is not None and outcome.metric == "MeanAbsoluteError"
    assert callback.ranking == ["visual", "audio"]
    assert all(score < 0 for score in outcome.scores.values())  # an error, negated: higher is better
