"""The benchmark scripts' building blocks still run (their figures come from the scripts themselves)."""

from __future__ import annotations

import importlib
import sys

import pytest
from benchmarks.accuracy import best_single
from benchmarks.common import Run, execute


def test_a_benchmark_run_and_a_probe_only_run() -> None:
    row = execute(Run("synthetic2", "pdmp", seed=0, options={"start_epoch": 0, "probe_max_epochs": 2}, epochs=1))
    assert 0 <= row["test_accuracy"] <= 1 and row["probe_ranking"] is not None
    probe = execute(Run("synthetic2", "pdmp", seed=0, options={"probe_max_epochs": 1}, probe_only=True))
    assert probe["test_accuracy"] is None and probe["probe_seconds"] >= 0


def test_best_single_picks_the_best_validation_accuracy() -> None:
    rows = [
        {"task": "t", "seed": 0, "method": "unimodal:a", "best_val_accuracy": 0.6, "test_accuracy": 0.9},
        {"task": "t", "seed": 0, "method": "unimodal:b", "best_val_accuracy": 0.8, "test_accuracy": 0.7},
        {"task": "t", "seed": 0, "method": "joint", "best_val_accuracy": 0.99, "test_accuracy": 0.99},
    ]
    (chosen,) = best_single(rows)
    assert chosen["modality"] == "b" and chosen["test_accuracy"] == 0.7 and chosen["method"] == "best_single"


@pytest.mark.parametrize("script", ["accuracy", "probes", "overhead", "gamma_sweep", "quickstart_seeds"])
def test_each_script_parses_its_options(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module(f"benchmarks.{script}")
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code == 0
