"""Two CPU processes for tests/test_distributed.py: ``python -m tests.fsdp2_run MODE DIR``.

Lightning's ModelParallelStrategy (FSDP2) and its ``ddp`` strategy start rank 1 by running this script
again, so these runs live in a script, not in pytest. Each rank saves what it holds to ``DIR/rank{r}.pt``.

Modes:
    adamw-modulated / adamw-reference: one parameter group with ``PDMPCallback(mechanism="update")`` /
        one group per modality with the rate multiplied by its k and no callback (FSDP2).
    sgd-modulated / sgd-reference: the same with plain SGD, where ``auto`` resolves to ``grad`` (FSDP2).
    probes-fsdp2 / probes-ddp: PDMP with its probes on the same data and weights, sharded or not.
    resume-fsdp2: PDMP with probes for one epoch with a (distributed) checkpoint, then a new callback
        resumes from it for a second epoch: ``DIR/first/`` and ``DIR/second/``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.fsdp import fully_shard

from pdmp_lightning import PDMPCallback, ProbeSettings
from tests.helpers import WithValidation, pdmp, plateau_task, trainer
from tests.test_distributed import ParameterSaver, RankRecorder
from tests.test_update_mechanism import GroupedModel

MODALITIES = {"audio": "audio_encoder", "visual": "visual_encoder"}


class ShardedGroupedModel(GroupedModel):
    """The update-mechanism test model, each encoder and the root sharded with FSDP2."""

    def configure_model(self) -> None:
        shard(self)


class ShardedWithValidation(WithValidation):
    """The probes' test model; sharded per encoder under FSDP2, left whole under DDP.

    ``configure_model`` also changes the encoders' weights (as loading pretrained weights there
    would): the probes must start from these, not from the copy the callback took in ``setup``.
    """

    def configure_model(self) -> None:
        with torch.no_grad():
            for parameter in [*self.audio_encoder.parameters(), *self.visual_encoder.parameters()]:
                parameter.mul_(0.5)
        if self.device_mesh is not None:
            shard(self)


def shard(model: Any) -> None:
    mesh = model.device_mesh["data_parallel"]
    for module in (model.audio_encoder, model.visual_encoder):
        fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def fsdp2() -> ModelParallelStrategy:
    return ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)


def steps(mode: str, directory: Path) -> None:
    optimizer, role = mode.split("-")
    torch.manual_seed(0)
    model = ShardedGroupedModel(
        optimizer="adamw_decay" if optimizer == "adamw" else "sgd",
        scheduler="exponential" if optimizer == "adamw" else "none",
        batch_size=4,
    )
    model.per_modality = role == "reference"
    mechanism = "update" if optimizer == "adamw" else "auto"
    callbacks = [ParameterSaver(directory)] + ([] if model.per_modality else [pdmp(mechanism=mechanism)])
    run = trainer(
        callbacks=callbacks, strategy=fsdp2(), devices=2, precision="32-true", max_steps=4, default_root_dir=directory
    )
    run.fit(model)


def probe_model(**kwargs: Any) -> ShardedWithValidation:
    torch.manual_seed(0)
    options: dict[str, Any] = dict(data=plateau_task(256), val_data=plateau_task(128, seed=1), batch_size=16)
    return ShardedWithValidation(num_classes=4, **{**options, **kwargs})


def probing_callback(**kwargs: Any) -> PDMPCallback:
    return PDMPCallback(MODALITIES, probes=ProbeSettings(max_epochs=2), **kwargs)


def probes(mode: str, directory: Path) -> None:
    strategy: Any = fsdp2() if mode == "probes-fsdp2" else "ddp"
    run = trainer(
        callbacks=[probing_callback(), RankRecorder(directory)],
        strategy=strategy,
        devices=2,
        precision="32-true",
        max_steps=-1,
        max_epochs=1,
        default_root_dir=directory,
    )
    run.fit(probe_model())


def resume(directory: Path) -> None:
    # An SGD rate at which the boosted encoder overshoots: the adaptive boost moves in the first fit.
    for phase, epochs in (("first", 2), ("second", 3)):
        out = directory / phase
        out.mkdir(parents=True, exist_ok=True)
        checkpoint = ModelCheckpoint(dirpath=directory / "checkpoints", save_last=True)
        run = trainer(
            callbacks=[probing_callback(start_epoch=0), RankRecorder(out), checkpoint],
            strategy=fsdp2(),
            devices=2,
            precision="32-true",
            max_steps=-1,
            max_epochs=epochs,
            enable_checkpointing=True,
            default_root_dir=directory,
        )
        ckpt_path = directory / "checkpoints" / "last.ckpt" if phase == "second" else None
        run.fit(probe_model(data=plateau_task(512), lr=0.3, shuffle=True), ckpt_path=ckpt_path)


def main(mode: str, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if mode.startswith("probes-"):
        probes(mode, directory)
    elif mode == "resume-fsdp2":
        resume(directory)
    else:
        steps(mode, directory)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
