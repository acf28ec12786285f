"""PDMP beyond single-label classification: joint training and PDMP on generated regression and multi-label tasks.

Both tasks use the generated data's default modalities, a fast-but-weak ``audio`` (informative share
0.6) beside a slow-but-strong ``visual`` (0.95), so that ``visual`` is the performance-dominant
modality and the one joint training leaves behind. The model is the other benchmarks' (MLP encoders,
concat fusion) with the task's loss; PDMP runs with its defaults (its probes infer the task and rank
by R2 or macro average precision). As in ``benchmarks.tuned``, each method trains at every rate of
a grid per optimizer (SGD with momentum 0.9; AdamW) on 3 seeds, 15 epochs; per task, seed, method
and optimizer the rate with the best validation score (R2 / average precision) is selected and its
test score reported. Writes ``docs/benchmarks/tasks.{json,md}``; ``--append`` keeps other tasks' rows.

    python -m benchmarks.tasks                      # both tasks: about 6 minutes on 2 cores
    python -m benchmarks.tasks --tasks regression --append
    python -m benchmarks.tasks --quick              # one seed, one rate per optimizer, 3 epochs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

import pdmp_lightning
from benchmarks.common import OPTIMIZERS, OUT, benchmark_trainer, machine, mean_std, run_all, write_results
from pdmp_lightning.data import SyntheticMultimodalDataModule
from pdmp_lightning.models import MLPEncoder, MultimodalClassifier

#: Task -> (its data and model options, the validation / test metric that ranks the runs).
TASKS: dict[str, tuple[dict[str, Any], str]] = {
    "regression": ({"task": "regression", "num_classes": 1}, "r2"),
    "multilabel": ({"task": "multilabel", "num_classes": 4}, "average_precision"),
}
METHODS = ("joint", "pdmp")
GRID = {"sgd": (0.002, 0.005, 0.02, 0.05), "adamw": (0.0003, 0.001, 0.003, 0.01)}
EPOCHS = 15


@dataclass(frozen=True)
class TaskRun:
    task: str
    method: str
    seed: int
    optimizer: str
    lr: float
    epochs: int = EPOCHS


def execute(run: TaskRun) -> dict[str, Any]:
    """Trains one run; the checkpoint with the best validation score is tested."""
    options, metric = TASKS[run.task]
    pl.seed_everything(run.seed, workers=True, verbose=False)
    data = SyntheticMultimodalDataModule(num_samples=3000, batch_size=64, seed=run.seed, **options)
    encoders = {m: MLPEncoder(in_features=data.feature_dims[m], hidden=[64], out_features=64) for m in data.modalities}
    optimizer = OPTIMIZERS[run.optimizer]
    model = MultimodalClassifier(
        encoders,
        optimizer=lambda parameters: optimizer(parameters, run.lr),
        **options,  # type: ignore[arg-type]
    )
    paths = {m: f"encoders.{m}" for m in data.modalities}
    callback = pdmp_lightning.PDMPCallback(paths) if run.method == "pdmp" else None
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = ModelCheckpoint(dirpath=scratch, monitor=f"val_{metric}", mode="max")
        trainer = benchmark_trainer(run.epochs, [callback, checkpoint], scratch)
        started = time.perf_counter()
        trainer.fit(model, datamodule=data)
        seconds = time.perf_counter() - started
        test = trainer.test(model, datamodule=data, ckpt_path="best", verbose=False)[0]
    row: dict[str, Any] = {
        "task": run.task,
        "method": run.method,
        "seed": run.seed,
        "optimizer": run.optimizer,
        "lr": run.lr,
        "metric": metric,
        "test_score": test[f"test_{metric}"],
        "best_val_score": None if checkpoint.best_model_score is None else float(checkpoint.best_model_score),
        "train_seconds": round(seconds, 2),
    }
    if callback is not None and callback.probe_outcome is not None:
        row.update(
            probe_ranking=callback.ranking, probe_scores=callback.probe_scores, probe_task=callback.probe_outcome.task
        )
    return row


def selected(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (task, method, seed, optimizer), the rate with the best validation score."""
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = (row["task"], row["method"], row["seed"], row["optimizer"])
        if key not in best or (row["best_val_score"] or -1e9) > (best[key]["best_val_score"] or -1e9):
            best[key] = row
    return list(best.values())


def report(payload: dict[str, Any]) -> str:
    rows = selected(payload["rows"])
    cells: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    rankings: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        cells[(row["task"], row["optimizer"], row["method"])].append(100 * row["test_score"])
        if row.get("probe_ranking"):
            rankings[row["task"]].add(row["probe_ranking"][0])
    lines = [
        f"Test score x 100 (R2 for regression, macro average precision for multi-label), mean ± std over seeds, "
        f"each method at its own tuned rate ({payload['epochs']} epochs). {payload['machine']}.",
        "",
        "| task | optimizer | joint | PDMP (defaults) | PDMP - joint | probes' dominant modality |",
        "|---|---|---|---|---|---|",
    ]
    for task in dict.fromkeys(r["task"] for r in rows):
        for optimizer in dict.fromkeys(r["optimizer"] for r in rows if r["task"] == task):
            joint, pdmp = (cells[(task, optimizer, m)] for m in METHODS)
            (jm, js), (pm, ps) = mean_std(joint), mean_std(pdmp)
            gaps = [p - j for p, j in zip(pdmp, joint, strict=False)]
            gm, gs = mean_std(gaps)
            dominant = ", ".join(sorted(rankings[task])) or "-"
            scores = f"{jm:.2f} ± {js:.2f} | {pm:.2f} ± {ps:.2f} | {gm:+.2f} ± {gs:.2f}"
            lines.append(f"| {task} | {optimizer} | {scores} | {dominant} |")
    return "\n".join(lines) + "\n"


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--append", action="store_true", help="keep the other tasks' rows of tasks.json")
    parser.add_argument("--quick", action="store_true", help="one seed, one rate per optimizer, 3 epochs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    options = parse(argv)
    grid = {o: rates[1:2] for o, rates in GRID.items()} if options.quick else GRID
    seeds = options.seeds[:1] if options.quick else options.seeds
    epochs = 3 if options.quick else EPOCHS
    runs = [
        TaskRun(task, method, seed, optimizer, lr, epochs)
        for task in options.tasks
        for seed in seeds
        for optimizer, rates in grid.items()
        for lr in rates
        for method in METHODS
    ]
    rows = run_all(runs, function=execute)
    name = "tasks_quick" if options.quick else "tasks"
    path = OUT / f"{name}.json"
    if options.append and path.is_file():
        rows = [r for r in json.loads(path.read_text())["rows"] if r["task"] not in options.tasks] + rows
    payload = {"machine": machine(), "epochs": epochs, "grid": grid, "rows": rows}
    write_results(name, payload, report(payload))


if __name__ == "__main__":
    main()
