"""Multi-label and regression (issue 17): generated targets, the model's losses and metrics, the example configs."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch import Tensor

from pdmp_lightning import PDMPConfigurationError
from pdmp_lightning.cli import main
from pdmp_lightning.data import SyntheticModality, SyntheticMultimodalDataModule
from pdmp_lightning.models import MLPEncoder, MultimodalClassifier
from pdmp_lightning.tasks import task_loss
from tests.test_cli import csv_logger_override

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"
NEW_TASKS = ("multilabel", "regression")


@pytest.fixture(autouse=True)
def _no_pytest_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightningCLI warns when sys.argv holds arguments besides `args` (here: pytest's own)."""
    monkeypatch.setattr(sys, "argv", ["pdmp-lightning"])


def _digest(features: dict[str, Tensor], labels: Tensor) -> str:
    digest = hashlib.sha256()
    for name in sorted(features):
        digest.update(features[name].numpy().tobytes())
    digest.update(labels.numpy().tobytes())
    return digest.hexdigest()[:16]


# --- data ---------------------------------------------------------------------------------------


# Computed with the generator as it was before the `task` option (commit 0ad52b2): benchmarks and
# tests rely on the multiclass data staying exactly the same.
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "af95ef8f25656da5"),
        ({"num_samples": 500, "num_classes": 6, "seed": 3}, "57ffd5acae299b29"),
        (
            {
                "modalities": [
                    SyntheticModality("a", 0.7, "radial", 8),
                    SyntheticModality("b", 0.8, "slow", 8),
                    SyntheticModality("c", 0.5),
                ],
                "num_samples": 300,
                "seed": 5,
            },
            "e42ce3250ddef779",
        ),
    ],
)
def test_default_multiclass_data_is_unchanged(kwargs: dict[str, Any], expected: str) -> None:
    data = SyntheticMultimodalDataModule(**kwargs)
    assert data.task == "multiclass"
    assert _digest(*data.load()) == expected


@pytest.mark.parametrize(
    ("task", "num_classes", "shape"),
    [("multilabel", 5, (40, 5)), ("regression", 1, (40,)), ("regression", 3, (40, 3))],
)
def test_targets_shapes_dtypes_and_values(task: str, num_classes: int, shape: tuple[int, ...]) -> None:
    data = SyntheticMultimodalDataModule(num_samples=2000, num_classes=num_classes, task=task, batch_size=40)  # type: ignore[arg-type]
    assert data.task == task and data.num_classes == num_classes
    batch = next(iter(data.train_dataloader()))
    assert {k: (tuple(v.shape), v.dtype) for k, v in batch.items()} == {
        "audio": ((40, 16), torch.float32),
        "visual": ((40, 16), torch.float32),
        "label": (shape, torch.float32),
    }
    targets = data.load()[1]
    if task == "multilabel":
        assert set(targets.unique().tolist()) == {0.0, 1.0}
        assert (targets.sum(dim=1) >= 2).float().mean() > 0.5  # several labels on per sample, often
        assert abs(targets.mean().item() - 0.5) < 0.03
    else:
        assert abs(targets.mean().item()) < 0.1 and abs(targets.var().item() - 1.0) < 0.1
        assert targets.abs().max() <= 3**0.5


@pytest.mark.parametrize("task", NEW_TASKS)
def test_same_seed_same_data_other_seed_differs(task: str) -> None:
    def load(seed: int) -> str:
        return _digest(*SyntheticMultimodalDataModule(num_samples=200, num_classes=2, seed=seed, task=task).load())  # type: ignore[arg-type]

    assert load(1) == load(1) != load(2)


def test_regression_codes_hold_the_value_exactly_in_the_informative_share() -> None:
    specs = [SyntheticModality("slow", 0.8, "slow", 4), SyntheticModality("radial", 0.8, "radial", 4)]
    features, y = SyntheticMultimodalDataModule(specs, num_samples=20000, num_classes=1, task="regression").load()
    slow = features["slow"][:, 1] * features["slow"][:, 0].sign()  # the product code read back
    radial = (features["radial"][:, :2].norm(dim=1) - 1.75) / 0.25 * 3**0.5
    for decoded in (slow, radial):
        assert abs(((decoded - y).abs() < 1e-4).float().mean().item() - 0.8) < 0.01
    # No coordinate of the product code is correlated with the target: it takes a non-linear read-out.
    assert abs(torch.corrcoef(torch.stack([features["slow"][:, 1], y]))[0, 1].item()) < 0.03


def test_multilabel_bits_are_right_in_the_expected_share() -> None:
    spec = SyntheticModality("slow", 0.6, "slow", 8)
    features, labels = SyntheticMultimodalDataModule([spec], num_samples=20000, num_classes=4, task="multilabel").load()
    x = features["slow"]
    decoded = torch.stack([(x[:, 2 * b] * x[:, 2 * b + 1] > 0).float() for b in range(4)], dim=1)
    assert abs((decoded == labels).float().mean().item() - (1 + 0.6) / 2) < 0.01


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"task": "ranking"}, r"`task`: got 'ranking'; expected one of \['multiclass', 'multilabel', 'regression'\]"),
        ({"task": "multilabel", "num_classes": 1}, r"`num_classes`: got 1; expected an integer >= 2 for task='multil"),
        ({"num_classes": 1}, r"`num_classes`: got 1.*only task='regression' has a single output"),
        ({"task": "regression", "num_classes": 0}, r"`num_classes`: got 0; expected an integer >= 1"),
        (
            {"task": "regression", "num_classes": 9},
            r"`modalities\['visual'\].dim`: got 16; expected at least 18",
        ),
        (
            {"task": "regression", "modalities": [SyntheticModality("a", 0.0)]},
            r"`modalities\['a'\].accuracy`: got 0.0; expected in \(0, 1\] for task='regression'",
        ),
    ],
)
def test_bad_task_settings_of_the_data(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(PDMPConfigurationError, match=pattern):
        SyntheticMultimodalDataModule(**kwargs)


# --- model --------------------------------------------------------------------------------------


def _model(
    task: str, num_classes: int, names: tuple[str, ...] = ("audio", "visual"), **kwargs: Any
) -> MultimodalClassifier:
    encoders = {name: MLPEncoder(16, hidden=[32], out_features=32) for name in names}
    return MultimodalClassifier(encoders, num_classes=num_classes, task=task, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"task": "ranking", "num_classes": 2}, r"`task`: got 'ranking'; expected one of"),
        ({"task": "multiclass", "num_classes": 1}, r"`num_classes`: got 1; expected an integer >= 2 for task="),
        ({"task": "multilabel", "num_classes": 1}, r"`num_classes`: got 1; expected an integer >= 2 for task="),
    ],
)
def test_bad_task_settings_of_the_model(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(PDMPConfigurationError, match=pattern):
        _model(**kwargs)


@pytest.mark.parametrize(
    ("task", "num_classes", "metrics", "prediction"),
    [
        ("multilabel", 3, {"average_precision", "macro_f1"}, (6, 3)),
        ("regression", 1, {"mse", "r2"}, (6,)),
        ("regression", 2, {"mse", "r2"}, (6, 2)),
    ],
)
def test_losses_metrics_and_predictions_per_task(
    task: str, num_classes: int, metrics: set[str], prediction: tuple[int, ...]
) -> None:
    model = _model(task, num_classes, unimodal_heads=True, unimodal_loss_weight=0.5)
    assert set(model.val_metrics) == {f"val_{name}" for name in metrics}
    assert set(model.test_metrics) == {f"test_{name}" for name in metrics}
    data = SyntheticMultimodalDataModule(num_samples=100, num_classes=num_classes, task=task, batch_size=6)  # type: ignore[arg-type]
    batch = next(iter(data.train_dataloader()))
    logits, features = model(batch, return_features=True)
    targets = batch["label"]
    if task == "multilabel":
        expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    else:
        expected = torch.nn.functional.mse_loss(logits.reshape(targets.shape), targets)
    assert torch.allclose(model.loss(logits, targets), expected)
    # The unimodal heads are trained with the same loss.
    heads = sum(task_loss(task, head, targets) for head in model.unimodal_logits(features).values())
    model.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no trainer to log to
    assert torch.allclose(model.training_step(batch, 0), expected + 0.5 * heads)
    predicted = model.predict_step(batch, 0)
    assert tuple(predicted.shape) == prediction
    if task == "multilabel":
        assert torch.allclose(predicted, logits.sigmoid())


def test_model_and_data_tasks_must_match() -> None:
    data = SyntheticMultimodalDataModule(num_samples=100, num_classes=2, task="multilabel")
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(PDMPConfigurationError, match=r"`task`: got 'regression'; expected the datamodule's task"):
        trainer.fit(_model("regression", 2), datamodule=data)


def _unimodal_score(task: str, modality: str) -> dict[str, float]:
    """Validation metrics of a model that sees one modality: weak (informative share 0.5) or strong (0.95)."""
    specs = [SyntheticModality("weak", 0.5, "fast", 16, 0.5), SyntheticModality("strong", 0.95, "fast", 16, 0.5)]
    num_classes = 4 if task == "multilabel" else 1
    pl.seed_everything(0, verbose=False)
    data = SyntheticMultimodalDataModule(specs, num_samples=800, num_classes=num_classes, task=task, batch_size=32)  # type: ignore[arg-type]
    model = _model(task, num_classes, (modality,), optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    trainer = pl.Trainer(
        max_epochs=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=data)
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


@pytest.mark.parametrize("task", NEW_TASKS)
def test_the_dominant_modality_alone_beats_the_other(task: str) -> None:
    strong, weak = _unimodal_score(task, "strong"), _unimodal_score(task, "weak")
    if task == "regression":
        # Attainable R2 is the informative share squared: 0.9 and 0.25.
        assert strong["val_r2"] > 0.75 and weak["val_r2"] < 0.5 and strong["val_mse"] < weak["val_mse"] - 0.3
    else:
        assert strong["val_average_precision"] > 0.95 and weak["val_average_precision"] < 0.85
        assert strong["val_macro_f1"] > weak["val_macro_f1"] + 0.1


# --- example configs ----------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "monitor"), [("regression", "val_r2"), ("multilabel", "val_average_precision")])
def test_example_config_parses_and_fits_with_pdmp(
    task: str, monitor: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = CONFIGS / f"{task}.yaml"
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(path), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["task"] == printed["data"]["init_args"]["task"] == task
    callbacks = printed["trainer"]["callbacks"]
    assert callbacks[0]["init_args"]["monitor"] == monitor and callbacks[0]["init_args"]["mode"] == "max"
    assert callbacks[-1]["class_path"] == "pdmp_lightning.PDMPCallback"

    # With PDMP and its probes, which learn the task too (a short run: the probes are capped).
    config = yaml.safe_load(path.read_text())
    pdmp = config["trainer"]["callbacks"][-1]["init_args"]
    pdmp.update(probes={"max_epochs": 2}, start_epoch=0)
    config["trainer"].update(max_epochs=2, limit_train_batches=3, limit_val_batches=2)
    config["trainer"].update(enable_progress_bar=False, enable_model_summary=False)
    config["data"]["init_args"].update(num_samples=300, batch_size=32)
    copy = tmp_path / f"{task}.yaml"
    copy.write_text(yaml.safe_dump(config))
    cli = main(["fit", "--config", str(copy), "--config", csv_logger_override(tmp_path)])
    assert cli.model.task == task and cli.datamodule.task == task
    results = json.loads((Path(str(cli.trainer.log_dir)) / "results.json").read_text())
    metrics = {"regression": {"mse", "r2"}, "multilabel": {"average_precision", "macro_f1"}}[task]
    assert set(results["test"]) == {f"test_{name}" for name in metrics}
    assert {f"val_{name}" for name in metrics} | {"val_loss"} <= set(results["validation"])
    assert results["tested_checkpoint"].endswith(".ckpt")
    report = json.loads((Path(str(cli.trainer.log_dir)) / "pdmp_probe_report.json").read_text())
    assert report["task"] == task and report["metric"] == {"regression": "r2", "multilabel": "average_precision"}[task]
