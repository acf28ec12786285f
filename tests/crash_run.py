"""A training run for tests/test_crash.py to kill: ``python -m tests.crash_run {train,probe} ROOT``.

``train``: once epoch 1 and its checkpoint are done it writes ``ROOT/epoch_1.done`` and blocks, waiting
for SIGKILL.
``probe``: the first probe epoch writes ``ROOT/probing`` and blocks.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from pdmp_lightning import PDMPCallback, ProbeSettings
from pdmp_lightning.probing.runner import ProbeRunner
from tests.helpers import MODALITIES, WithValidation, plateau_task

START_EPOCH = 2


class BlockAfterEpoch(pl.Callback):
    def __init__(self, root: Path, epoch: int) -> None:
        self.root, self.epoch = root, epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch + 1:
            # Epoch `self.epoch` is complete and its checkpoint written (Lightning runs ModelCheckpoint last).
            (self.root / f"epoch_{self.epoch}.done").write_text("")
            time.sleep(600)


def model() -> WithValidation:
    torch.manual_seed(0)
    return WithValidation(data=plateau_task(320), val_data=plateau_task(96, seed=1), batch_size=32, num_classes=4)


def callback() -> PDMPCallback:
    return PDMPCallback(MODALITIES, start_epoch=START_EPOCH, probes=ProbeSettings(max_epochs=2))


def trainer(root: Path, max_epochs: int, extra: list[pl.Callback], version: int = 0) -> pl.Trainer:
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, every_n_epochs=1)
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        callbacks=[checkpoint, *extra],
        logger=CSVLogger(root, name="logs", version=version),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def main(mode: str, root: Path) -> None:
    if mode == "probe":
        original = ProbeRunner._train

        def slow(self: ProbeRunner, *args: Any, **kwargs: Any) -> Any:
            (root / "probing").write_text("")
            time.sleep(600)
            return original(self, *args, **kwargs)

        ProbeRunner._train = slow  # type: ignore[method-assign]
    trainer(root, max_epochs=4, extra=[callback(), BlockAfterEpoch(root, epoch=1)]).fit(model())


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
