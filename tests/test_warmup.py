"""PDMP's default warm-up: 5% of the main training's epochs (the paper's 5 of 100), resolved at train start."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
from lightning.pytorch.loggers import CSVLogger

from pdmp_lightning import PDMPCallback, PDMPConfigurationError
from tests.helpers import MODALITIES, StopAfterTrainStart, TwoModalityModel, trainer


class ModulationRecorder(pl.Callback):
    """Records, per epoch, whether the PDMP hooks were attached during its training steps."""

    def __init__(self, callback: PDMPCallback) -> None:
        self.callback = callback
        self.by_epoch: dict[int, bool] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.by_epoch[trainer.current_epoch] = self.callback.is_modulating


def resolved_start(**trainer_options: Any) -> int:
    callback = PDMPCallback(MODALITIES, ranking=["visual", "audio"])
    options: dict[str, Any] = {"max_steps": -1, **trainer_options}
    trainer(callbacks=[callback, StopAfterTrainStart()], **options).fit(TwoModalityModel(batch_size=8))
    return callback.start_epoch


# 48 samples in batches of 8: 6 train batches per epoch.
@pytest.mark.parametrize(
    ("trainer_options", "expected"),
    [
        ({"max_epochs": 100}, 5),  # the paper's recipe
        ({"max_epochs": 15}, 1),  # 0.75 rounds up
        ({"max_epochs": 30}, 2),  # 1.5 rounds half up
        ({"max_epochs": 10}, 1),
        ({"max_epochs": 9}, 0),
        ({"max_epochs": 100, "max_steps": 120}, 1),  # max_steps ends it after 20 epochs
        ({"max_epochs": 40, "accumulate_grad_batches": 2}, 2),  # epochs, not optimizer steps
        ({"max_epochs": 40, "limit_train_batches": 3}, 2),
    ],
)
def test_default_warmup_is_five_percent_of_the_training(trainer_options: dict[str, Any], expected: int) -> None:
    assert resolved_start(**trainer_options) == expected


def test_unbounded_training_falls_back_to_the_papers_five_epochs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assert resolved_start(max_epochs=-1) == 5
    assert "no known length; warm-up of 5 epochs" in caplog.text


def test_explicit_start_epoch_is_kept() -> None:
    callback = PDMPCallback(MODALITIES, ranking=["visual", "audio"], start_epoch=3)
    trainer(callbacks=[callback, StopAfterTrainStart()], max_steps=-1, max_epochs=100).fit(TwoModalityModel())
    assert callback.start_epoch == 3


def test_modulation_starts_at_the_resolved_epoch() -> None:
    callback = PDMPCallback(MODALITIES, ranking=["visual", "audio"])
    recorder = ModulationRecorder(callback)
    trainer(callbacks=[callback, recorder], max_steps=-1, max_epochs=20).fit(TwoModalityModel(batch_size=16))
    assert callback.start_epoch == 1
    assert recorder.by_epoch == {0: False, **{epoch: True for epoch in range(1, 20)}}


def test_a_second_fit_resolves_the_warmup_again() -> None:
    callback, model = PDMPCallback(MODALITIES, ranking=["visual", "audio"]), TwoModalityModel()
    trainer(callbacks=[callback, StopAfterTrainStart()], max_steps=-1, max_epochs=100).fit(model)
    trainer(callbacks=[callback, StopAfterTrainStart()], max_steps=-1, max_epochs=20).fit(model)
    assert callback.start_epoch == 1


def test_warmup_past_end_epoch_fails_before_anything_runs(tmp_path: Path) -> None:
    model = TwoModalityModel()
    callback = PDMPCallback(MODALITIES, end_epoch=2)  # probes would run: the error must come first
    with pytest.raises(PDMPConfigurationError, match=r"`start_epoch`: got None; .*end_epoch \(2\).*is 5; set"):
        trainer(callbacks=[callback], logger=CSVLogger(tmp_path), max_steps=-1, max_epochs=100).fit(model)
    assert callback.probe_outcome is None and not list(tmp_path.rglob("*probe*"))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
