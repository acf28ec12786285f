"""Two CPU processes (``ddp_spawn``, gloo): every rank probes its own shard and ends identical."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from pdmp_lightning import PDMPCallback
from tests.helpers import WithValidation, plateau_task, trainer


class RankRecorder(pl.Callback):
    """Saves what each rank holds at the end of training."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        callback = next(c for c in trainer.callbacks if isinstance(c, PDMPCallback))  # type: ignore[attr-defined]
        outcome = callback.probe_outcome
        torch.save(
            {
                "ranking": callback.ranking,
                "coefficients": callback.coefficients,
                "scores": callback.probe_scores,
                "first_train_loss": {m: c.train_losses[0] for m, c in outcome.curves.items()} if outcome else None,
                "parameters": {n: p.detach().cpu().clone() for n, p in pl_module.named_parameters()},
            },
            self.directory / f"rank{trainer.global_rank}.pt",
        )


@pytest.mark.parametrize("mechanism", ["activation", "update"])
def test_ddp_spawn_ranks_agree(tmp_path: Path, mechanism: str) -> None:
    torch.manual_seed(0)
    model = WithValidation(data=plateau_task(256), val_data=plateau_task(128, seed=1), batch_size=16, num_classes=4)
    callback = PDMPCallback(
        {"audio": "audio_encoder", "visual": "visual_encoder"},
        start_epoch=0,
        probe_max_epochs=2,
        probe_min_epochs=1,
        mechanism=mechanism,
    )
    run = trainer(
        callbacks=[callback, RankRecorder(tmp_path)],
        strategy="ddp_spawn",
        devices=2,
        max_steps=-1,
        max_epochs=1,
        default_root_dir=tmp_path,
        precision="32-true",
    )
    run.fit(model)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["ranking"] == rank1["ranking"] and sorted(rank0["ranking"]) == ["audio", "visual"]
    assert rank0["coefficients"] == rank1["coefficients"] == {rank0["ranking"][0]: 10.0, rank0["ranking"][1]: 1.0}
    assert rank0["scores"] == rank1["scores"]
    # The probes really saw different shards on the two ranks.
    assert rank0["first_train_loss"] != rank1["first_train_loss"]
    for name, value in rank0["parameters"].items():
        assert torch.equal(rank1["parameters"][name], value), name
    assert (tmp_path / "pdmp_probe_report.json").is_file()
