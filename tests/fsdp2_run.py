"""FSDP2 on two CPU processes for tests/test_distributed.py: ``python -m tests.fsdp2_run {modulated,reference} DIR``.

``modulated``: one parameter group, ``PDMPCallback(mechanism="update")``. ``reference``: one group per
modality with the rate multiplied by its k, no callback. Each rank saves its gathered parameters to
``DIR/rank{r}.pt``. Lightning's ModelParallelStrategy starts rank 1 by running this script again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.fsdp import fully_shard

from tests.helpers import pdmp, trainer
from tests.test_distributed import ParameterSaver
from tests.test_update_mechanism import GroupedModel


class ShardedGroupedModel(GroupedModel):
    """The update-mechanism test model, each encoder and the root sharded with FSDP2."""

    def configure_model(self) -> None:
        mesh = self.device_mesh["data_parallel"]
        for module in (self.audio_encoder, self.visual_encoder):
            fully_shard(module, mesh=mesh)
        fully_shard(self, mesh=mesh)


def main(mode: str, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = ShardedGroupedModel(optimizer="adamw_decay", scheduler="exponential", batch_size=4)
    model.per_modality = mode == "reference"
    callbacks = [ParameterSaver(directory)] + ([] if model.per_modality else [pdmp(mechanism="update")])
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    run = trainer(
        callbacks=callbacks, strategy=strategy, devices=2, precision="32-true", max_steps=4, default_root_dir=directory
    )
    run.fit(model)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
