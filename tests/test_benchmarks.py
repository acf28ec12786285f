"""The benchmark scripts' building blocks still run (their figures come from the scripts themselves)."""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from benchmarks import common, probes
from benchmarks.accuracy import best_single
from benchmarks.common import TASKS, Run, datamodule, execute

from pdmp_lightning import ProbeSettings


def test_a_benchmark_run_and_a_probe_only_run() -> None:
    row = execute(
        Run("synthetic2", "pdmp", seed=0, options={"start_epoch": 0, "probes": ProbeSettings(max_epochs=2)}, epochs=1)
    )
    assert 0 <= row["test_accuracy"] <= 1 and row["probe_ranking"] is not None
    probe = execute(Run("synthetic2", "pdmp", seed=0, options={"probes": ProbeSettings(max_epochs=1)}, probe_only=True))
    assert probe["test_accuracy"] is None and probe["probe_seconds"] >= 0
    assert set(probe["probe_stopped"]) == {"audio", "visual"} and probe["epochs_trained"] == 0


def test_a_converged_run_stops_on_a_validation_plateau(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "CONVERGE_PATIENCE", 2)
    row = execute(Run("synthetic2", "unimodal:audio", seed=0, test=False, converge=True, epochs=30, init_seed=7))
    assert 0.25 < row["best_val_accuracy"] <= 1 and 3 <= row["epochs_trained"] < 30
    assert row["epoch_seconds"] > 0 and row["init_seed"] == 7 and row["test_accuracy"] is None


def test_the_slow_learner_tasks_set_their_classes_and_samples() -> None:
    slow8 = datamodule(TASKS["slow8"], seed=0)
    assert slow8.num_classes == 8 and slow8.num_samples == 4000 and slow8.modalities == ["audio", "visual"]  # type: ignore[attr-defined]
    ring = datamodule(TASKS["slow_ring3"], seed=0)
    assert ring.modalities == list(TASKS["slow_ring3"].modalities) and ring.num_samples == 3000  # type: ignore[attr-defined]
    assert [spec.learning for spec in ring.specs] == ["fast", "slow", "radial"]  # type: ignore[attr-defined]


def test_best_single_picks_the_best_validation_accuracy() -> None:
    rows = [
        {"task": "t", "seed": 0, "method": "unimodal:a", "best_val_accuracy": 0.6, "test_accuracy": 0.9},
        {"task": "t", "seed": 0, "method": "unimodal:b", "best_val_accuracy": 0.8, "test_accuracy": 0.7},
        {"task": "t", "seed": 0, "method": "joint", "best_val_accuracy": 0.99, "test_accuracy": 0.99},
    ]
    (chosen,) = best_single(rows)
    assert chosen["modality"] == "b" and chosen["test_accuracy"] == 0.7 and chosen["method"] == "best_single"


@pytest.mark.parametrize(
    "script", ["accuracy", "probes", "overhead", "gamma_sweep", "quickstart_seeds", "tuned", "tasks", "loaders"]
)
def test_each_script_parses_its_options(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module(f"benchmarks.{script}")
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code == 0


def test_the_probe_benchmark_options_and_its_planned_runs() -> None:
    options = probes.parse(["--tasks", "synthetic2", "slow8", "--seeds", "3", "4", "--lengths", "10", "--append"])
    assert options.tasks == ["synthetic2", "slow8"] and options.seeds == [3, 4] and options.lengths == [10]
    assert options.append and not options.report and options.parts == list(probes.DEFAULT_PARTS)
    quick = probes.parse(["--quick"])
    assert quick.quick and len(quick.tasks) == 2 and quick.seeds == [0, 1]
    runs = probes.planned(["converged", "main", "probes", "variants"], ["synthetic2"], [0], [3, 100])
    converged = [r for r in runs if r.converge]
    assert len(converged) == 4 and {r.init_seed for r in converged} == {None, probes.REPEAT_SEED}
    assert [r.epochs for r in runs if r.probe_only and not r.options] == [3, 100]
    assert len([r for r in runs if "probes" in r.options]) == len(probes.VARIANT_MAX_EPOCHS)
    with pytest.raises(SystemExit):
        probes.parse(["--tasks", "no_such_task"])


def _fake_execute(run: Run) -> dict[str, Any]:
    """What execute returns, without training: visual beats audio, the probes agree except at 3 epochs."""
    row: dict[str, Any] = {"task": run.task, "method": run.method, "seed": run.seed, "test_accuracy": None}
    if run.converge:
        good = run.method.endswith("visual")
        return {**row, "best_val_accuracy": 0.9 if good else 0.6, "epochs_trained": 20, "init_seed": run.init_seed}
    ranking = ["audio", "visual"] if run.epochs == 3 else ["visual", "audio"]
    row.update(probe_ranking=ranking, probe_seconds=0.2, probe_stopped={"audio": "plateau", "visual": "settled"})
    if run.probe_only:
        return {**row, "best_val_accuracy": None, "epochs_trained": 0}
    return {**row, "best_val_accuracy": 0.9, "epoch_seconds": 0.1, "epochs_trained": 3}


def test_the_probe_benchmark_runs_in_pieces_and_reports_from_its_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(probes, "OUT", tmp_path)
    monkeypatch.setattr(probes, "run_all", lambda runs, processes=None: [_fake_execute(r) for r in runs])
    probes.main(["--tasks", "synthetic2", "--seeds", "0", "--lengths", "3", "30"])
    probes.main(["--tasks", "synthetic2", "--seeds", "1", "--lengths", "3", "30", "100", "10", "--append"])
    probes.main(["--tasks", "synthetic2", "--seeds", "1", "--lengths", "100", "--parts", "probes", "--append"])
    rows = json.loads((tmp_path / "probes.json").read_text())["rows"]
    assert len([r for r in rows if r["part"] == "probes"]) == 2 + 4  # the rerun replaced seed 1's 100-epoch row
    assert len([r for r in rows if r["part"] == "converged"]) == 2 * 4 and not (tmp_path / "probes_quick.json").exists()
    (tmp_path / "probes.md").unlink()
    capsys.readouterr()
    probes.main(["--report"])
    report = (tmp_path / "probes.md").read_text()
    assert report == capsys.readouterr().out
    assert "at every length: missed** (probes = converged ranking vs converged = its repeat: 3 epochs: 0.0%" in report
    assert "at 30 and 100 epochs: met** (30 epochs: 6.7%; 100 epochs: 2.0%)" in report
    assert (
        "| 30 | 2/2 (100%) | 2/2 (100%) | 2/2 (100%) | 2/2 (100%) | - | 6.7% | 6.7% | 0.20 | plateau 2, settled 2 |"
        in report
    )


def test_the_short_variants_train_the_same_data_for_fewer_epochs() -> None:
    short = common.SHORT_TASKS["slow8_8ep"]
    assert short.epochs == common.SHORT_EPOCHS == 8 and short.modalities == TASKS["slow8"].modalities
    first, second = datamodule(short, seed=3), datamodule(TASKS["slow8"], seed=3)
    assert first.num_classes == second.num_classes == 8  # type: ignore[attr-defined]
    assert all(
        (a == b).all()
        for a, b in zip(first.load()[0].values(), second.load()[0].values(), strict=True)  # type: ignore[attr-defined]
    )
    assert set(common.ALL_TASKS) == set(TASKS) | set(common.SHORT_TASKS)


def test_the_tuned_benchmark_selects_each_methods_rate_on_validation() -> None:
    from benchmarks import tuned

    options = tuned.parse(["--tasks", "slow8", "--seeds", "1", "--optimizers", "adamw"])
    runs = tuned.planned(options.tasks, options.methods, options.seeds, options.optimizers)
    assert len(runs) == 4 * len(tuned.DEFAULT_METHODS) and {(r.optimizer, r.lr) for r in runs} == {
        ("adamw", lr) for lr in tuned.GRID["adamw"]
    }

    def row(method: str, lr: float, val: float, test: float) -> dict[str, Any]:
        return {"task": "t", "method": method, "seed": 0, "optimizer": "sgd", "lr": lr, "best_val_accuracy": val,
                "test_accuracy": test}  # fmt: skip

    rows = [row("joint", 0.02, 0.9, 0.5), row("joint", 0.002, 0.8, 0.99), row("pdmp", 0.05, 0.7, 0.1),
            row("pdmp", 0.005, 0.7, 0.2)]  # fmt: skip
    chosen = {r["method"]: (r["lr"], r["test_accuracy"]) for r in tuned.selected(rows)}
    # Selected on validation, never on test; the lower rate on a tie.
    assert chosen == {"joint": (0.02, 0.5), "pdmp": (0.005, 0.2)}
    assert "| t | sgd | 50.00 ± 0.00 | 20.00 ± 0.00 | 0.02; 0.005 |" in tuned.table(rows, ["joint", "pdmp"])


def test_the_tuned_summary_reports_the_four_figures_and_pdmps_worst_rate() -> None:
    from benchmarks import tuned

    def row(method: str, seed: int, lr: float, val: float, test: float) -> dict[str, Any]:
        return {"task": "t", "method": method, "seed": seed, "optimizer": "sgd", "lr": lr, "best_val_accuracy": val,
                "test_accuracy": test}  # fmt: skip

    rows = []
    for seed, noise in enumerate((0.0, 0.02)):
        rows += [
            row("joint", seed, 0.002, 0.5, 0.60 + noise), row("joint", seed, 0.05, 0.9, 0.90 + noise),
            row("pdmp", seed, 0.002, 0.9, 0.93 + noise), row("pdmp", seed, 0.05, 0.8, 0.86 + noise),
            row("pdmp_constant", seed, 0.002, 0.9, 0.92 + noise),
            row("opm", seed, 0.002, 0.9, 0.80 + noise), row("agm", seed, 0.002, 0.9, 0.85 + noise),
        ]  # fmt: skip
    line = next(line for line in tuned.summary(rows) if line.startswith("| t | sgd"))
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    # joint at 0.05, PDMP at 0.002 (selected on validation); the best baseline by its tuned accuracy.
    assert cells[2:6] == ["91.00 ± 1.41", "94.00 ± 1.41", "93.00 ± 1.41", "agm 86.00 ± 1.41"]
    assert cells[6] == "+3.00 ± 1.41"
    # At 0.05 PDMP is 4 points below joint: the standard error of that difference is 1.41 points.
    assert cells[7] == "0.05: -4.00 (-2.8 SE)"


def test_a_run_with_its_own_optimizer_and_rate() -> None:
    row = execute(Run("synthetic2", "joint", seed=0, optimizer="adamw", lr=1e-3, epochs=1))
    assert (row["optimizer"], row["lr"]) == ("adamw", 1e-3) and 0 <= row["test_accuracy"] <= 1


@pytest.mark.filterwarnings("ignore:mechanism='update' copies the modulated parameters")
@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_the_overhead_benchmark_sees_the_parameter_copy_and_not_the_learning_rate_path() -> None:
    from benchmarks import overhead

    size = overhead.SIZES["small"]
    plain = overhead.peak_bytes(size, "adamw", "plain")
    encoder_bytes = overhead.modulated_bytes(size)
    by_rates = overhead.peak_bytes(size, "adamw", "pdmp_update") - plain
    by_copy = overhead.peak_bytes(size, "adamw", "pdmp_update_copy") - plain
    # The copy holds the dominant encoder (half the modulated bytes) at the optimizer step's peak.
    assert by_rates < 0.01 * encoder_bytes < 0.4 * encoder_bytes < by_copy
    options = overhead.parse(["--quick"])
    assert (options.sizes, options.rounds, options.steps) == (["small"], 2, 6)


def test_the_overhead_benchmark_times_one_method_against_plain() -> None:
    from benchmarks import overhead

    options = overhead.parse(["--methods", "agm", "--append"])
    assert options.methods == ["agm"] and options.append
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's notes on the benchmark's bare loops, as its main() does
        rows = overhead.measure("small", rounds=1, steps=2, only=options.methods)
    assert [(r["optimizer"], r["method"], r["mechanism"]) for r in rows] == [
        ("sgd", "agm", "responses"),
        ("adamw", "agm", "responses"),
    ]
    assert all(r["ratio_median"] > 0 and len(r["ratios"]) == 1 for r in rows)


def test_the_task_benchmark_selects_each_seeds_best_rate_and_reports_the_gap() -> None:
    from benchmarks import tasks

    def row(method: str, seed: int, lr: float, val: float, test: float) -> dict[str, Any]:
        scores = {"metric": "r2", "best_val_score": val, "test_score": test, "probe_ranking": ["visual", "audio"]}
        return {"task": "regression", "method": method, "seed": seed, "optimizer": "sgd", "lr": lr, **scores}

    rows = [
        row("joint", 0, 0.01, 0.5, 0.40), row("joint", 0, 0.1, 0.6, 0.50),
        row("pdmp", 0, 0.01, 0.8, 0.70), row("pdmp", 0, 0.1, 0.7, 0.90),
    ]  # fmt: skip
    chosen = {r["method"]: r["lr"] for r in tasks.selected(rows)}
    assert chosen == {"joint": 0.1, "pdmp": 0.01}  # by validation, not by test
    text = tasks.report({"machine": "m", "epochs": 15, "rows": rows})
    assert "| regression | sgd | 50.00 ± 0.00 | 70.00 ± 0.00 | +20.00 ± 0.00 | visual |" in text


def test_the_loader_benchmark_measures_every_loader(tmp_path: Path) -> None:
    """A tiny run: generated media in a temporary folder (removed), results only under --out."""
    from benchmarks import loaders

    loaders.main(["--datasets", "cremad", "--clips", "4", "--rounds", "1", "--workers", "0", "--out", str(tmp_path)])
    payload = json.loads((tmp_path / "loaders.json").read_text())
    assert {row["loader"] for row in payload["rows"]} == {"library", "library_prepared", "official"}
    assert all(row["samples_per_second"] > 0 for row in payload["rows"])
    stages = {(row["loader"], row["stage"]) for row in payload["stages"]}
    assert ("library_prepared", "resample") in stages and ("official", "spectrogram") in stages
    assert "| cremad | 0 |" in (tmp_path / "loaders.md").read_text()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["loaders.json", "loaders.md"]
    assert len(loaders.library_dataset("ave", _generated_ave(tmp_path / "ave"))) == 3  # each clip once


def _generated_ave(root: Path) -> Path:
    from benchmarks import loaders

    root.mkdir()
    loaders.generate("ave", root, 3)
    return root
