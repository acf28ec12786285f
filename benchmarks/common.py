"""What the benchmark scripts share: the tasks, the methods, one training run, parallel execution, reports.

Every method trains the same model (MLP encoders, concat fusion, SGD lr 0.005 momentum 0.9) for the
same number of epochs on the same seeded splits; the checkpoint with the best validation accuracy
is tested. Runs execute in worker processes (one torch thread each), several at a time.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

import pdmp_lightning
from pdmp_lightning.data import (
    AVDigitsDataModule,
    SyntheticModality,
    SyntheticMultimodalDataModule,
    UCIMultipleFeaturesDataModule,
)
from pdmp_lightning.models import ConvEncoder, MLPEncoder, MultimodalClassifier

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks"
METHODS = ("joint", "pdmp", "ogm_ge", "opm", "agm", "mmpareto")
#: Ablations run on request: PDMP on MMPareto's model (unimodal heads and losses), PDMP with the
#: paper's constant coefficients, PDMP with the loss back-off rule.
EXTRA_METHODS = ("pdmp_heads", "pdmp_constant", "pdmp_backoff")
#: PDMPCallback options of each PDMP method (the run's own options are added to them).
PDMP_OPTIONS: dict[str, dict[str, Any]] = {
    "pdmp": {},
    "pdmp_heads": {},
    "pdmp_constant": {"adaptation": "none"},
    "pdmp_backoff": {"adaptation": "backoff"},
}
#: Methods whose model has unimodal heads and losses.
WITH_HEADS = ("mmpareto", "pdmp_heads")


@dataclass(frozen=True)
class Task:
    """A dataset configuration, its training budget and whether its modalities are imbalanced."""

    name: str
    imbalanced: bool
    epochs: int
    modalities: tuple[str, ...]
    description: str
    #: Generated tasks only: samples in all (train + validation + test) and classes.
    num_samples: int = 3000
    num_classes: int = 4
    #: The task whose data and model this one uses, when it only trains for another length.
    data: str | None = None


TASKS = {
    task.name: task
    for task in (
        Task("synthetic2", True, 15, ("audio", "visual"), "generated: fast audio (0.6) + slow visual (0.95)"),
        Task("synthetic3", True, 15, ("rgb", "depth", "ir"), "generated: slow rgb (0.95) + fast depth (0.6), ir (0.5)"),
        Task("synthetic2_balanced", False, 15, ("left", "right"), "generated: two fast modalities of 0.75 each"),
        Task("mfeat_fou_kar", True, 30, ("fou", "kar"), "UCI digits, Fourier (~0.82) + Karhunen-Loeve (~0.96) views"),
        Task("mfeat_mor_pix", True, 30, ("mor", "pix"), "UCI digits, morphological (~0.79) + pixel (~0.98) views"),
        Task("mfeat_fac_pix", False, 30, ("fac", "pix"), "UCI digits, profile correlations (~0.97) + pixels (~0.98)"),
        Task("mfeat_all", True, 30, ("fou", "fac", "kar", "pix", "zer", "mor"), "UCI digits, all six views"),
        Task("avdigits", True, 15, ("audio", "visual"), "digit images + espeak-ng speech in noise (CNN encoders)"),
        # Slow learners: the strong modality starts at chance and overtakes the weak one late.
        Task("slow8", True, 15, ("audio", "visual"), "generated, 8 classes: fast audio (0.6) + slow XOR visual (0.95)",
             num_samples=4000, num_classes=8),
        Task("slow_ring3", True, 15, ("fast", "xor", "ring"),
             "generated: fast (0.6), slow XOR (0.8), slower ring-coded (0.9): the order flips twice"),
        # Built to break the boost: the fast, weaker modality is worth keeping, so starving it costs accuracy.
        Task("complementary", True, 15, ("audio", "visual"),
             "generated: fast audio (0.8) + slow XOR visual (0.9), informative on independent samples"),
    )
}  # fmt: skip

#: The generated tasks, and their shorter variant (the accuracy benchmark's 8-epoch rows).
GENERATED = ("synthetic2", "synthetic3", "synthetic2_balanced", "slow8", "slow_ring3")
SHORT_EPOCHS = 8
SHORT_TASKS = {
    f"{name}_{SHORT_EPOCHS}ep": replace(
        TASKS[name],
        name=f"{name}_{SHORT_EPOCHS}ep",
        epochs=SHORT_EPOCHS,
        description=f"{TASKS[name].description}; {SHORT_EPOCHS} epochs",
        data=name,
    )
    for name in GENERATED
}
#: Every task a run may name: the benchmark tasks and their shorter variants.
ALL_TASKS = {**TASKS, **SHORT_TASKS}

SYNTHETIC = {
    "synthetic2": None,  # the datamodule's default
    "synthetic3": [
        SyntheticModality("rgb", 0.95, "slow", dim=16, noise=0.3),
        SyntheticModality("depth", 0.6, "fast", dim=16, noise=0.5),
        SyntheticModality("ir", 0.5, "fast", dim=16, noise=0.5),
    ],
    "synthetic2_balanced": [
        SyntheticModality("left", 0.75, "fast", dim=16, noise=0.5),
        SyntheticModality("right", 0.75, "fast", dim=16, noise=0.5),
    ],
    "slow8": None,  # the default modalities, 8 classes, 4000 samples: probes misranked it at short trainings
    # Alone, xor overtakes fast after about 5 epochs, ring overtakes fast after about 20 and xor after about 30.
    "slow_ring3": [
        SyntheticModality("fast", 0.6, "fast", dim=16, noise=0.5),
        SyntheticModality("xor", 0.8, "slow", dim=16, noise=0.3),
        SyntheticModality("ring", 0.9, "radial", dim=16, noise=0.3),
    ],
    "complementary": [
        SyntheticModality("audio", 0.8, "fast", dim=16, noise=0.5),
        SyntheticModality("visual", 0.9, "slow", dim=16, noise=0.3),
    ],
}


@dataclass(frozen=True)
class Run:
    """One training run: a task, a method (or ``unimodal:<modality>``), a seed and method options."""

    task: str
    method: str
    seed: int
    options: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    test: bool = True
    #: Stop right after the probes (probe cost and ranking only); the probes still see the main training's length.
    probe_only: bool = False
    #: Seed of the weights and batch order when it should differ from the data split's ``seed``.
    init_seed: int | None = None
    #: With ``lr``: the optimizer (a key of ``OPTIMIZERS``) and its learning rate; without: the task's fixed SGD.
    optimizer: str = "sgd"
    lr: float | None = None
    #: Train to a validation plateau instead of a fixed length: early stopping on ``val_accuracy``
    #: (patience ``CONVERGE_PATIENCE`` epochs), at most ``epochs`` or ``CONVERGE_MAX_EPOCHS`` epochs.
    converge: bool = False


#: Validation epochs without a better ``val_accuracy`` after which a ``converge`` run has plateaued.
CONVERGE_PATIENCE = 10
#: Epoch cap of a ``converge`` run when it sets no ``epochs``.
CONVERGE_MAX_EPOCHS = 200


def datamodule(task: Task, seed: int) -> pl.LightningDataModule:
    if task.name == "avdigits":
        return AVDigitsDataModule(batch_size=64, seed=seed)
    if task.name.startswith("mfeat"):
        return UCIMultipleFeaturesDataModule(views=list(task.modalities), batch_size=64, seed=seed)  # type: ignore[arg-type]
    return SyntheticMultimodalDataModule(
        SYNTHETIC[task.data or task.name],
        num_samples=task.num_samples,
        num_classes=task.num_classes,
        batch_size=64,
        seed=seed,
    )


def sgd(parameters: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=0.005, momentum=0.9)


def sgd_avdigits(parameters: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=0.01, momentum=0.9)  # as examples/configs/avdigits.yaml


def sgd_momentum(parameters: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=lr, momentum=0.9)


def adamw(parameters: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=lr)


#: Optimizers a run may name with its own learning rate (the tuned comparison): name -> (parameters, lr) factory.
OPTIMIZERS: dict[str, Callable[[Any, float], torch.optim.Optimizer]] = {"sgd": sgd_momentum, "adamw": adamw}


def model(
    data: Any, modalities: Sequence[str], heads: bool = False, optimizer: Callable[..., Any] | None = None
) -> Any:
    """The benchmark model of ``data``; ``optimizer`` None: the task's fixed-rate SGD."""
    if isinstance(data, AVDigitsDataModule):  # spectrograms and images: the CNN of examples/configs/avdigits.yaml
        encoders: dict[str, Any] = {m: ConvEncoder(1, [16, 32, 64, 128], 128) for m in modalities}
        optimizer = optimizer or sgd_avdigits
    else:
        dims = data.feature_dims
        encoders = {m: MLPEncoder(in_features=dims[m], hidden=[64], out_features=64) for m in modalities}
        optimizer = optimizer or sgd
    return MultimodalClassifier(
        encoders,
        num_classes=data.num_classes,
        unimodal_heads=heads,
        unimodal_loss_weight=1.0 if heads else 0.0,
        optimizer=optimizer,
    )


def method_callback(method: str, modalities: Sequence[str], options: dict[str, Any]) -> Callback | None:
    paths = {m: f"encoders.{m}" for m in modalities}
    if method in PDMP_OPTIONS:
        return pdmp_lightning.PDMPCallback(paths, **{**PDMP_OPTIONS[method], **options})
    factories: dict[str, Callable[..., Callback]] = {
        "ogm_ge": pdmp_lightning.OGMGECallback,
        "opm": pdmp_lightning.OPMCallback,
        "agm": pdmp_lightning.AGMCallback,
        "mmpareto": pdmp_lightning.MMParetoCallback,
    }
    return factories[method](paths, **options) if method in factories else None


def benchmark_trainer(max_epochs: int, callbacks: Sequence[Callback | None], scratch: str) -> pl.Trainer:
    """The Trainer of every benchmark run: one CPU, deterministic, no logger or bar, files under ``scratch``."""
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[c for c in callbacks if c is not None],
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=scratch,
    )


def execute(run: Run) -> dict[str, Any]:
    """Trains one run and returns its metrics, timings and (for PDMP) the probe outcome."""
    task = ALL_TASKS[run.task]
    pl.seed_everything(run.seed, workers=True, verbose=False)
    data = datamodule(task, run.seed)
    if run.init_seed is not None:  # same split, other weights and batch order
        pl.seed_everything(run.init_seed, workers=True, verbose=False)
    unimodal = run.method.startswith("unimodal:")
    modalities = [run.method.split(":", 1)[1]] if unimodal else list(task.modalities)
    optimizer = None if run.lr is None else partial(OPTIMIZERS[run.optimizer], lr=run.lr)
    module = model(data, modalities, heads=run.method in WITH_HEADS, optimizer=optimizer)
    callback = None if unimodal else method_callback(run.method, task.modalities, run.options)
    with tempfile.TemporaryDirectory() as scratch:
        # A probe-only run stops before any training step or validation: nothing to select.
        checkpoint = None if run.probe_only else ModelCheckpoint(dirpath=scratch, monitor="val_accuracy", mode="max")
        stop = StopAfterTrainStart() if run.probe_only else None
        plateau = (
            EarlyStopping(monitor="val_accuracy", mode="max", patience=CONVERGE_PATIENCE) if run.converge else None
        )
        timer = EpochTimer()
        epochs = run.epochs or (CONVERGE_MAX_EPOCHS if run.converge else task.epochs)
        trainer = benchmark_trainer(epochs, [callback, checkpoint, stop, plateau, timer], scratch)
        started = time.perf_counter()
        trainer.fit(module, datamodule=data)
        train_seconds = time.perf_counter() - started
        tested = run.test and not run.probe_only
        test = trainer.test(module, datamodule=data, ckpt_path="best", verbose=False)[0] if tested else {}
    row: dict[str, Any] = {
        "task": run.task,
        "imbalanced": task.imbalanced,
        "method": run.method,
        "seed": run.seed,
        "options": run.options,
        **({"optimizer": run.optimizer, "lr": run.lr} if run.lr is not None else {}),
        "test_accuracy": test.get("test_accuracy"),
        "test_macro_f1": test.get("test_macro_f1"),
        "best_val_accuracy": None
        if checkpoint is None or checkpoint.best_model_score is None
        else float(checkpoint.best_model_score),
        "train_seconds": round(train_seconds, 2),
        "epochs_trained": 0 if run.probe_only else trainer.current_epoch,
        "epoch_seconds": timer.steady_epoch_seconds(),
    }
    if run.converge:
        row["init_seed"] = run.init_seed
    if isinstance(callback, pdmp_lightning.PDMPCallback) and callback.boost is not None:
        row["boost_final"] = round(callback.boost.value, 4)
    if isinstance(callback, pdmp_lightning.PDMPCallback) and callback.probe_outcome is not None:
        row.update(
            probe_ranking=callback.ranking,
            probe_scores=callback.probe_scores,
            probe_seconds=round(callback.probe_outcome.seconds, 2),
            probe_stopped={m: curve.stopped for m, curve in callback.probe_outcome.curves.items()},
            probe_doubts=callback.probe_outcome.doubts(),
        )
    return row


class EpochTimer(Callback):
    """Wall time of the training epochs (their validation included), from each epoch's start to the next's."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.end: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.end = time.perf_counter()

    def steady_epoch_seconds(self) -> float | None:
        """Mean seconds per epoch after the first (which also pays for warming up); None under 2 epochs."""
        if self.end is None or len(self.starts) < 2:
            return None
        return round((self.end - self.starts[1]) / (len(self.starts) - 1), 4)


class StopAfterTrainStart(Callback):
    """Ends fit after on_train_start (after the probes), so the probes see the main training's full length."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.should_stop = True


def _initialise_worker() -> None:
    torch.set_num_threads(1)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def run_all(
    runs: Iterable[Any],
    processes: int | None = None,
    progress: bool = True,
    function: Callable[[Any], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Executes the runs in worker processes (default: one per core), in order of submission.

    ``function`` (a module-level function, picklable) executes one run; default :func:`execute`.
    """
    runs = list(runs)
    processes = processes or max(1, min(os.cpu_count() or 1, len(runs)))
    context = multiprocessing.get_context("spawn")
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with context.Pool(processes, initializer=_initialise_worker) as pool:
        for index, row in enumerate(pool.imap(function or execute, runs), start=1):
            rows.append(row)
            if progress:
                elapsed = time.perf_counter() - started
                print(f"[{index}/{len(runs)} {elapsed:.0f}s] {row['task']} {row['method']} seed {row['seed']}: "
                      f"{_outcome(row)}", flush=True)  # fmt: skip
    return rows


def _outcome(row: dict[str, Any]) -> str:
    """What a progress line shows of a run: its test accuracy, else its best validation accuracy or probe ranking."""
    if row.get("test_score") is not None:
        return f"test {row['metric']} {row['test_score']:.4f}"
    if row["test_accuracy"] is not None:
        return f"test acc {row['test_accuracy']}"
    if row["best_val_accuracy"] is not None:
        return f"best val acc {row['best_val_accuracy']:.4f} after {row['epochs_trained']} epochs"
    return f"probe ranking {row.get('probe_ranking')} in {row.get('probe_seconds')} s"


def machine() -> str:
    """The machine the figures come from."""
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, lightning {pl.__version__}, CPU only"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_json(name: str, payload: Any, out: Path = OUT) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    return path


def write_results(name: str, payload: Any, report: str, out: Path = OUT) -> None:
    """Writes ``<name>.json`` and the Markdown ``report`` as ``<name>.md`` into ``out``, and prints the report."""
    write_json(f"{name}.json", payload, out)
    (out / f"{name}.md").write_text(report)
    print(report)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return str(value)
