"""Two CPU processes (gloo): every rank probes its own shard and ends identical.

``ddp_spawn`` in pytest; ``ddp`` (the CLI) and FSDP2 (``ModelParallelStrategy`` with ``fully_shard`` per
encoder) through ``tests/fsdp2_run.py`` or the command line in subprocesses, since their launchers run the
script again for rank 1. Marked ``distributed``: ``pytest -m distributed`` runs this part alone.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from pdmp_lightning import AGMCallback, MMParetoCallback, OGMGECallback, OPMCallback, PDMPCallback, ProbeSettings
from pdmp_lightning.data import SyntheticMultimodalDataModule
from pdmp_lightning.models import MLPEncoder, MultimodalClassifier
from tests.helpers import MultiplierHistory, WithValidation, pdmp, plateau_task, trainer
from tests.test_update_mechanism import GroupedModel

pytestmark = pytest.mark.distributed


class RankRecorder(pl.Callback):
    """Saves what each rank holds at the end of training."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.boost_at_start: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Listed after the PDMPCallback: its own on_train_start (probes or restore) has run.
        callback = next(c for c in trainer.callbacks if isinstance(c, PDMPCallback))  # type: ignore[attr-defined]
        self.boost_at_start = copy.deepcopy(callback.state_dict()["boost"])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        callback = next(c for c in trainer.callbacks if isinstance(c, PDMPCallback))  # type: ignore[attr-defined]
        outcome = callback.probe_outcome
        torch.save(
            {
                "ranking": callback.ranking,
                "coefficients": callback.coefficients,
                "boost": callback.state_dict()["boost"],
                "scores": callback.probe_scores,
                "first_train_loss": {m: c.train_losses[0] for m, c in outcome.curves.items()} if outcome else None,
                "start_epoch": callback.start_epoch,
                "probe_sizes": (outcome.epoch_batches, outcome.val_samples) if outcome else None,
                "probe_curves": {m: (c.stopped, c.epochs) for m, c in outcome.curves.items()} if outcome else None,
                "doubts": outcome.doubts() if outcome else None,
                "probes_ran": outcome is not None,
                "boost_at_start": self.boost_at_start,
                "parameters": full_parameters(pl_module),
            },
            self.directory / f"rank{trainer.global_rank}.pt",
        )


def full_parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter, whole: gathered from its shards under FSDP2 (DTensors), as is otherwise."""
    return {n: getattr(p, "full_tensor", p.detach)().detach().cpu().clone() for n, p in module.named_parameters()}


def two_process_trainer(tmp_path: Path, callbacks: list[pl.Callback], **overrides: Any) -> pl.Trainer:
    """Two CPU processes (``ddp_spawn``, gloo) in float32, training by epochs, logs under ``tmp_path``."""
    options: dict[str, Any] = dict(strategy="ddp_spawn", devices=2, max_steps=-1, precision="32-true")
    return trainer(callbacks=callbacks, default_root_dir=tmp_path, **{**options, **overrides})


def saved_by_each_rank(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """What ``RankRecorder`` or ``MultiplierRecorder`` saved on rank 0 and on rank 1."""
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    return rank0, rank1


@pytest.mark.parametrize("mechanism", ["activation", "update"])
def test_ddp_spawn_ranks_agree(tmp_path: Path, mechanism: str) -> None:
    torch.manual_seed(0)
    model = WithValidation(data=plateau_task(256), val_data=plateau_task(128, seed=1), batch_size=16, num_classes=4)
    callback = PDMPCallback(
        {"audio": "audio_encoder", "visual": "visual_encoder"},
        probes=ProbeSettings(max_epochs=2),
        mechanism=mechanism,
        report_path=str(tmp_path / "report.json"),
    )
    run = two_process_trainer(tmp_path, [callback, RankRecorder(tmp_path)], max_epochs=1)
    run.fit(model)
    rank0, rank1 = saved_by_each_rank(tmp_path)
    assert rank0["ranking"] == rank1["ranking"] and sorted(rank0["ranking"]) == ["audio", "visual"]
    assert rank0["coefficients"] == rank1["coefficients"] and rank0["coefficients"][rank0["ranking"][1]] == 1.0
    assert rank0["boost"] == rank1["boost"] and 1.0 <= rank0["coefficients"][rank0["ranking"][0]] <= 10.0
    assert rank0["scores"] == rank1["scores"] and rank0["doubts"] == rank1["doubts"]
    # Probe epochs are the per-rank loader's 8 batches of 16 on both ranks; validation samples are counted over
    # both ranks (64 each); every probe stops at the same pass, for the same reason, on both ranks.
    assert rank0["probe_sizes"] == rank1["probe_sizes"] == (8, 128)
    assert rank0["probe_curves"] == rank1["probe_curves"]
    assert rank0["start_epoch"] == rank1["start_epoch"] == 0
    # The probes really saw different shards on the two ranks.
    assert rank0["first_train_loss"] != rank1["first_train_loss"]
    for name, value in rank0["parameters"].items():
        assert torch.equal(rank1["parameters"][name], value), name
    assert (tmp_path / "report.json").is_file() and not (tmp_path / "pdmp_probe_report.json").exists()


class MultiplierRecorder(MultiplierHistory):
    """Keeps every step's multipliers of the callback under test and saves them with the parameters."""

    def __init__(self, directory: Path, watched: pl.Callback) -> None:
        super().__init__(watched)
        self.directory = directory

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.save(
            {
                "history": self.history,
                "parameters": {n: p.detach().cpu().clone() for n, p in pl_module.named_parameters()},
            },
            self.directory / f"rank{trainer.global_rank}.pt",
        )


BASELINES = {
    "ogm_ge": lambda m: OGMGECallback(m, alpha=0.8),
    "opm": lambda m: OPMCallback(m, start_epoch=0, p_exe=0.99),
    "agm": lambda m: AGMCallback(m),
    "mmpareto": lambda m: MMParetoCallback(m),
}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_ddp_spawn_baselines_agree_across_ranks(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    heads = name == "mmpareto"
    encoders = {m: MLPEncoder(in_features=16, hidden=[16], out_features=16) for m in ("audio", "visual")}
    model = MultimodalClassifier(
        encoders, num_classes=4, unimodal_heads=heads, unimodal_loss_weight=1.0 if heads else 0.0
    )
    callback = BASELINES[name]({"audio": "encoders.audio", "visual": "encoders.visual"})
    recorder = MultiplierRecorder(tmp_path, callback)
    run = two_process_trainer(tmp_path, [callback, recorder], max_epochs=1, accumulate_grad_batches=2)
    # 300 samples: 210 train, 105 per rank, batches of 16 -> the 7th holds 9; 2 micro-batches per step.
    run.fit(model, datamodule=SyntheticMultimodalDataModule(num_samples=300, batch_size=16))
    rank0, rank1 = saved_by_each_rank(tmp_path)
    assert len(rank0["history"]) == 4 and rank0["history"] == rank1["history"]
    if name in ("ogm_ge", "agm"):
        assert any(value != 1.0 for step in rank0["history"] for value in step.values())
    for parameter, value in rank0["parameters"].items():
        assert torch.equal(rank1["parameters"][parameter], value), parameter


@pytest.mark.parametrize(("adaptation", "lr"), [("hypergradient", 0.3), ("backoff", 1.0)])
def test_ddp_spawn_adaptive_boost_is_identical_on_every_rank(tmp_path: Path, adaptation: str, lr: float) -> None:
    torch.manual_seed(0)
    # SGD rates at which the boosted encoder overshoots; each rank sees its own shard, its own losses.
    model = WithValidation(
        data=plateau_task(512), val_data=plateau_task(64, seed=1), batch_size=16, num_classes=4, lr=lr, shuffle=True
    )
    callback = PDMPCallback(
        {"audio": "audio_encoder", "visual": "visual_encoder"},
        ranking=["visual", "audio"],
        start_epoch=0,
        adaptation=adaptation,  # type: ignore[arg-type]
    )
    recorder = MultiplierRecorder(tmp_path, callback)
    run = two_process_trainer(tmp_path, [recorder, callback], max_epochs=3)
    run.fit(model)
    rank0, rank1 = saved_by_each_rank(tmp_path)
    # 16 steps per rank and epoch, 48 in all: 4 updates of the boost, identical on both ranks.
    assert len(rank0["history"]) == 48 and rank0["history"] == rank1["history"]
    assert len({step["visual"] for step in rank0["history"]}) > 1
    for name, value in rank0["parameters"].items():
        assert torch.equal(rank1["parameters"][name], value), name


def test_ddp_spawn_with_accumulation_and_an_uneven_last_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # 250 samples on 2 ranks: 125 each, batches of 16 -> the 8th batch holds 13; 3 micro-batches per step.
    model = WithValidation(data=plateau_task(250), val_data=plateau_task(64, seed=1), batch_size=16, num_classes=4)
    callback = PDMPCallback(
        {"audio": "audio_encoder", "visual": "visual_encoder"}, start_epoch=0, probes=ProbeSettings(max_epochs=2)
    )
    run = two_process_trainer(tmp_path, [callback, RankRecorder(tmp_path)], max_epochs=2, accumulate_grad_batches=3)
    run.fit(model)
    rank0, rank1 = saved_by_each_rank(tmp_path)
    assert rank0["ranking"] == rank1["ranking"] and rank0["coefficients"] == rank1["coefficients"]
    # 8 batches per rank and probe epoch, the last holding 13; validation counted over both ranks.
    assert rank0["probe_sizes"] == rank1["probe_sizes"] == (8, 64)
    assert rank0["probe_curves"] == rank1["probe_curves"]
    for name, value in rank0["parameters"].items():
        assert torch.equal(rank1["parameters"][name], value), name


class ParameterSaver(pl.Callback):
    """Saves each rank's full parameters (gathered from their shards under FSDP2) at the end of training."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pdmp = next((c for c in trainer.callbacks if isinstance(c, PDMPCallback)), None)  # type: ignore[attr-defined]
        torch.save(
            {"parameters": full_parameters(pl_module), "mechanism": pdmp.mechanism_in_use if pdmp else None},
            self.directory / f"rank{trainer.global_rank}.pt",
        )


def update_runs(tmp_path: Path, model: GroupedModel, **overrides: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parameters after the update mechanism, and after per-modality rates, on two processes; ranks agree."""
    results = []
    for name, per_modality in (("modulated", False), ("reference", True)):
        directory = tmp_path / name
        directory.mkdir()
        copy_ = copy.deepcopy(model)
        copy_.per_modality = per_modality
        callbacks = [ParameterSaver(directory)] + ([] if per_modality else [pdmp(mechanism="update")])
        options: dict[str, Any] = dict(max_steps=4, default_root_dir=directory, **overrides)
        trainer(callbacks=callbacks, devices=2, precision="32-true", **options).fit(copy_)
        rank0, rank1 = saved_by_each_rank(directory)
        for parameter, value in rank0["parameters"].items():
            assert torch.equal(rank1["parameters"][parameter], value), parameter
        results.append(rank0["parameters"])
    return results[0], results[1]


def test_ddp_spawn_update_equals_per_modality_learning_rates(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = GroupedModel(optimizer="adamw_decay", scheduler="exponential", batch_size=4)
    modulated, reference = update_runs(tmp_path, model, strategy="ddp_spawn", accumulate_grad_batches=2)
    for name, value in modulated.items():
        torch.testing.assert_close(value, reference[name], rtol=1e-6, atol=1e-7, msg=name)


ROOT = Path(__file__).parents[1]


def two_process_script(mode: str, directory: Path) -> None:
    """``tests/fsdp2_run.py MODE DIR``: ModelParallelStrategy and ``ddp`` start rank 1 by running the script again."""
    command = [sys.executable, "-m", "tests.fsdp2_run", mode, str(directory)]
    subprocess.run(command, check=True, timeout=300, cwd=ROOT, capture_output=True)


@pytest.mark.parametrize(("optimizer", "mechanism"), [("adamw", "update"), ("sgd", "grad")])
def test_fsdp2_steps_equal_per_modality_learning_rates(tmp_path: Path, optimizer: str, mechanism: str) -> None:
    """FSDP2 (``fully_shard`` per encoder, 2 CPU processes): PDMP's steps equal per-modality rates exactly."""
    results = []
    for role in ("modulated", "reference"):
        two_process_script(f"{optimizer}-{role}", tmp_path / role)
        rank0, rank1 = saved_by_each_rank(tmp_path / role)
        for parameter, value in rank0["parameters"].items():
            assert torch.equal(rank1["parameters"][parameter], value), parameter
        results.append(rank0["parameters"])
    modulated, reference = results
    assert rank0["mechanism"] is None  # the reference runs without the callback
    for name, value in modulated.items():
        torch.testing.assert_close(value, reference[name], rtol=1e-6, atol=1e-7, msg=name)
    assert torch.load(tmp_path / "modulated" / "rank0.pt", weights_only=True)["mechanism"] == mechanism


def test_fsdp2_probes_rank_exactly_as_under_ddp(tmp_path: Path) -> None:
    """Sharded encoders are probed from their gathered weights: the same probes, scores and ranking as DDP."""
    for mode in ("probes-fsdp2", "probes-ddp"):
        two_process_script(mode, tmp_path / mode)
    (sharded0, sharded1), (ddp0, ddp1) = (saved_by_each_rank(tmp_path / m) for m in ("probes-fsdp2", "probes-ddp"))
    for key in ("ranking", "scores", "coefficients", "probe_sizes", "probe_curves"):
        assert sharded0[key] == sharded1[key] == ddp0[key] == ddp1[key], key
    assert sharded0["probes_ran"] and sharded0["first_train_loss"] == ddp0["first_train_loss"]
    assert sharded1["first_train_loss"] == ddp1["first_train_loss"] != sharded0["first_train_loss"]  # own shards
    for name, value in sharded0["parameters"].items():
        torch.testing.assert_close(value, ddp0["parameters"][name], rtol=1e-5, atol=1e-6, msg=name)


def test_fsdp2_resume_restores_the_ranking_and_the_boost_without_probing(tmp_path: Path) -> None:
    two_process_script("resume-fsdp2", tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_dir() and len(list(last.glob("*.distcp"))) == 2  # a distributed checkpoint, one shard per rank
    first, second = saved_by_each_rank(tmp_path / "first"), saved_by_each_rank(tmp_path / "second")
    assert first[0]["probes_ran"] and not second[0]["probes_ran"] and not second[1]["probes_ran"]
    assert first[0]["boost"]["value"] != 10.0  # the adaptive boost moved before the checkpoint
    for rank in (0, 1):
        assert second[rank]["ranking"] == first[rank]["ranking"]
        assert second[rank]["boost_at_start"] == first[rank]["boost"]
    assert second[0]["boost"] == second[1]["boost"]


def test_the_cli_under_the_ddp_launcher_agrees_on_both_ranks(tmp_path: Path) -> None:
    """``strategy=ddp`` runs the command again for rank 1 (what most users run): both ranks probe and agree."""
    recorder = {"class_path": "tests.test_distributed.RankRecorder", "init_args": {"directory": str(tmp_path)}}
    command = [
        sys.executable,
        "-m",
        "pdmp_lightning",
        "fit",
        "--config",
        "examples/configs/quickstart.yaml",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--trainer.max_epochs=2",
        f"--trainer.default_root_dir={tmp_path}",
        "--data.init_args.num_samples=600",
        f"--trainer.callbacks+={json.dumps(recorder)}",
    ]
    subprocess.run(command, check=True, timeout=300, cwd=ROOT, capture_output=True)
    rank0, rank1 = saved_by_each_rank(tmp_path)
    assert rank0["probes_ran"] and rank1["probes_ran"]
    assert rank0["ranking"] == rank1["ranking"] and rank0["coefficients"] == rank1["coefficients"]
    assert rank0["scores"] == rank1["scores"] and rank0["probe_curves"] == rank1["probe_curves"]
    assert rank0["first_train_loss"] != rank1["first_train_loss"]  # each rank probed its own shard
    for name, value in rank0["parameters"].items():
        assert torch.equal(rank1["parameters"][name], value), name
    reports = list(tmp_path.rglob("pdmp_probe_report.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["ranking"] == rank0["ranking"]
