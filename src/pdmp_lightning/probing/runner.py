"""Training the unimodal probes side by side and ranking the modalities by their validation scores.

All probes share one pass over the train batches per probe epoch. Each probe stops on its own
validation curve: when its best score has not improved by more than ``min_delta`` for
``patience`` epochs, or at ``max_epochs``. A modality that plateaus early therefore stops early
and cannot beat a slower one that keeps climbing. Patience only starts to count after
``min_epochs`` and once the probe has risen clearly above chance (10% of the way from 1/C to 1):
an encoder that needs a few epochs before it learns anything is not mistaken for a plateau.

The probes' cost follows the main training's: with ``budget`` b, ``max_epochs`` E and a main
training of T train batches, each probe epoch uses at most ``b * T / E`` train batches, so the probes
never train on more than ``b * T`` batches in all (plus one validation pass per probe epoch). A long
training therefore gets full-data probes, a short one small probes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins import Precision
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, Subset
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from tqdm import tqdm

from pdmp_lightning.batch import BatchKey, select_from_batch
from pdmp_lightning.errors import PDMPConfigurationError, config_error
from pdmp_lightning.modality import ModalityGroup
from pdmp_lightning.probing.probe import UnimodalProbe, build_probe, copy_encoder

ProbeMetric = Literal["accuracy", "macro_f1"]
PROBE_METRICS: tuple[str, ...] = get_args(ProbeMetric)


@dataclass(frozen=True)
class ProbeSettings:
    """The probes' budget and scoring.

    Attributes:
        max_epochs: Hard cap on probe epochs (passes over the probe data).
        budget: Share of the main training's train batches the probes may train on in all
            (spread over ``max_epochs``); None: no cap beyond ``data_fraction``.
        min_epochs: Epochs every probe trains before it may stop (slow starters get a chance).
        patience: Epochs without improvement after which a probe stops.
        min_delta: Smallest score increase that counts as improvement.
        data_fraction: Fraction of the train batches used in each probe epoch.
        val_fraction: Share of the train set held out for scoring when there is no validation loader.
        lr: Adam learning rate of the probes.
        metric: ``"accuracy"`` or ``"macro_f1"``.
        num_classes: Number of classes, or None to take it from the module or the labels.
        seed: Seed of the held-out split.
    """

    max_epochs: int = 10
    budget: float | None = 0.15
    min_epochs: int = 3
    patience: int = 3
    min_delta: float = 0.0
    data_fraction: float = 1.0
    val_fraction: float = 0.2
    lr: float = 3e-3
    metric: ProbeMetric = "accuracy"
    num_classes: int | None = None
    seed: int = 0


@dataclass
class ProbeCurve:
    """One probe's validation curve and where it stopped."""

    modality: str
    scores: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    stopped: str = ""

    @property
    def best_score(self) -> float:
        """Best validation score reached."""
        return max(self.scores) if self.scores else float("nan")

    @property
    def best_epoch(self) -> int:
        """Probe epoch (from 0) of the best score."""
        return self.scores.index(self.best_score) if self.scores else -1


@dataclass
class ProbeOutcome:
    """What a probing run produced."""

    curves: dict[str, ProbeCurve]
    num_classes: int
    seconds: float
    train_batches_per_epoch: int
    val_source: str
    #: The main training's train batches the budget was taken from (None: unbounded or no budget).
    main_train_batches: int | None = None
    #: Validation samples each score was computed on (all processes together).
    val_samples: int = 0

    @property
    def scores(self) -> dict[str, float]:
        """Modality -> best validation score."""
        return {m: c.best_score for m, c in self.curves.items()}

    def doubts(self) -> list[str]:
        """Why the ranking may not be what full unimodal training would give; empty when it is clear.

        Two cases: the best probe is barely above chance (the probes learned next to nothing), or
        the best two scores are within one standard error of their difference on ``val_samples``
        (binomial approximation): a tie decided by validation noise.
        """
        ranked = sorted(self.scores.items(), key=lambda item: (-item[1], item[0]))
        (first, best), (second, runner_up) = ranked[0], ranked[1]
        doubts = []
        if not clearly_above_chance(best, self.num_classes):
            doubts.append(
                f"the best probe ({first}: {best:.3f}) is barely above chance ({1 / self.num_classes:.3f}): the "
                "probes learned "
                "next to nothing and the ranking is a guess"
            )
        samples = max(self.val_samples, 1)
        noise = math.sqrt((best * (1 - best) + runner_up * (1 - runner_up)) / samples)
        if best - runner_up <= noise:
            doubts.append(
                f"{first} ({best:.3f}) leads {second} ({runner_up:.3f}) by {best - runner_up:.3f}, within one "
                f"standard error ({noise:.3f}) on {self.val_samples} validation samples: a tie decided by noise"
            )
        return doubts


@dataclass
class _ProbeData:
    """The loaders the probes train and score on, and how many batches of each they use."""

    train: DataLoader[Any]
    val: DataLoader[Any]
    val_source: str
    train_batches: int
    val_batches: int
    owns_samplers: bool = False
    main_train_batches: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Reshuffles the held-out slices each probe epoch (the Trainer's loaders are left alone)."""
        if self.owns_samplers and isinstance(self.train.sampler, DistributedSampler):
            self.train.sampler.set_epoch(epoch)


def main_train_batches(trainer: pl.Trainer) -> int | None:
    """Train batches the main training will run on this process (None when its length is unbounded).

    Counted in batches, not optimizer steps: ``estimated_stepping_batches`` times the accumulation.
    """
    steps = trainer.estimated_stepping_batches
    return int(steps) * trainer.accumulate_grad_batches if math.isfinite(steps) else None


def clearly_above_chance(score: float, num_classes: int) -> bool:
    """Whether ``score`` is at least 10% of the way from chance (1/C) to 1."""
    chance = 1.0 / num_classes
    return score >= chance + 0.1 * (1.0 - chance)


def rank_by_score(scores: Mapping[str, float]) -> list[str]:
    """Modalities best first; ties broken by name, so the ranking is deterministic.

    Example:
        >>> rank_by_score({"b": 0.7, "a": 0.7, "c": 0.9})
        ['c', 'a', 'b']
    """
    return sorted(scores, key=lambda m: (-scores[m], m))


class ProbeRunner:
    """Trains one probe per modality on the trainer's data and scores them.

    Args:
        settings: Budget and scoring.
        inputs: Modality -> batch key or index of its input.
        target: Batch key or index of the labels.
    """

    def __init__(self, settings: ProbeSettings, inputs: Mapping[str, BatchKey], target: BatchKey) -> None:
        self.settings = settings
        self.inputs = dict(inputs)
        self.target = target
        self._precision: Precision = Precision()

    def run(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, groups: Mapping[str, ModalityGroup]
    ) -> ProbeOutcome:
        """Trains and scores the probes; leaves ``pl_module`` untouched.

        Raises:
            PDMPConfigurationError: Missing batch keys, labels out of range, empty loaders, an
                encoder that cannot be probed.
            RuntimeError: A probe's loss became NaN or infinite.
        """
        start = time.perf_counter()
        data = self._data(trainer)
        train_loader, num_batches = data.train, data.train_batches
        if data.main_train_batches is not None:
            rank_zero_info(
                f"PDMP probes: {num_batches} train batches per probe epoch, at most "
                f"{num_batches * self.settings.max_epochs} in all: probe_budget={self.settings.budget:g} of the main "
                f"training's {data.main_train_batches} batches over probe_max_epochs={self.settings.max_epochs} "
                "(raise probe_budget for larger probes, or set it to None for full-data probe epochs)."
            )
        self._precision = trainer.precision_plugin
        first = self._to_device(next(iter(train_loader)), pl_module)
        num_classes = self._num_classes(trainer, pl_module, train_loader)
        with self._precision.forward_context():
            probes = {
                m: build_probe(copy_encoder(pl_module, m, g), self._input(first, m), num_classes)
                for m, g in groups.items()
            }
        optimizers = {m: torch.optim.Adam(p.parameters(), lr=self.settings.lr) for m, p in probes.items()}
        metrics = {m: self._metric(num_classes).to(pl_module.device) for m in probes}
        curves = {m: ProbeCurve(m) for m in probes}
        active, val_samples = set(probes), 0
        disable_bar = not trainer.is_global_zero or trainer.progress_bar_callback is None
        with tqdm(
            total=self.settings.max_epochs, desc="PDMP probes", unit="epoch", disable=disable_bar, leave=False
        ) as bar:
            for epoch in range(self.settings.max_epochs):
                data.set_epoch(epoch)
                losses = self._train_epoch(
                    probes, optimizers, active, train_loader, num_batches, pl_module, num_classes
                )
                self._raise_if_diverged(trainer, pl_module, losses)
                scores, val_samples = self._evaluate(probes, metrics, active, data, pl_module, num_classes)
                for modality in sorted(active):
                    curve = curves[modality]
                    curve.train_losses.append(losses[modality])
                    curve.scores.append(scores[modality])
                    curve.stopped = self._stop_reason(curve, epoch, num_classes)
                active = {m for m in active if not curves[m].stopped}
                bar.update(1)
                bar.set_postfix({m: f"{curves[m].scores[-1]:.3f}" for m in sorted(curves)})
                if not active:
                    break
        for curve in curves.values():
            curve.stopped = curve.stopped or "max_epochs"
        seconds = time.perf_counter() - start
        samples = trainer.strategy.reduce(torch.tensor(float(val_samples), device=pl_module.device), reduce_op="sum")
        return ProbeOutcome(
            curves, num_classes, seconds, num_batches, data.val_source, data.main_train_batches, int(samples.item())
        )

    # --- data -----------------------------------------------------------------------------------

    def _data(self, trainer: pl.Trainer) -> _ProbeData:
        train = trainer.train_dataloader
        if not isinstance(train, DataLoader):
            raise config_error(
                "train_dataloader",
                type(train).__name__,
                "a single torch DataLoader for probing",
                "pass `ranking` to skip the probes when training on several combined loaders.",
            )
        val = trainer.val_dataloaders
        if isinstance(val, list | tuple):
            val = val[0] if val else None
        main_batches = main_train_batches(trainer) if self.settings.budget is not None else None
        per_epoch = self._budget_per_epoch(main_batches)
        if isinstance(val, DataLoader) and trainer.limit_val_batches != 0:
            # The Trainer's own limits (limit_train_batches, limit_val_batches) apply to the probes too.
            train_limit, val_limit = trainer.num_training_batches, (trainer.num_val_batches or [math.inf])[0]
            return _ProbeData(
                train=train,
                val=val,
                val_source="val_dataloader",
                train_batches=self._limit(
                    train, "train_dataloader", train_limit, self.settings.data_fraction, per_epoch
                ),
                val_batches=self._limit(val, "val_dataloader", val_limit),
                main_train_batches=main_batches,
            )
        held_train, held_val = self._held_out(train, trainer)
        return _ProbeData(
            train=held_train,
            val=held_val,
            val_source=f"held-out {self.settings.val_fraction:.0%} of train",
            train_batches=self._limit(held_train, "train_dataloader", math.inf, self.settings.data_fraction, per_epoch),
            val_batches=self._limit(held_val, "val_dataloader", math.inf),
            owns_samplers=True,
            main_train_batches=main_batches,
        )

    def _budget_per_epoch(self, main_batches: int | None) -> float:
        if main_batches is None or self.settings.budget is None:
            return math.inf
        # At least one batch per probe epoch: a probe that never trains cannot rank anything.
        return max(1, math.floor(self.settings.budget * main_batches / self.settings.max_epochs))

    def _held_out(self, train: DataLoader[Any], trainer: pl.Trainer) -> tuple[DataLoader[Any], DataLoader[Any]]:
        dataset = train.dataset
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            raise config_error(
                "val_dataloader",
                None,
                "a validation dataloader when the train dataset is iterable",
                "add a val_dataloader to your module or datamodule, or pass `ranking`.",
            )
        size = len(dataset)
        num_val = max(1, round(size * self.settings.val_fraction))
        if size - num_val < 1:
            raise config_error(
                "train_dataloader", f"{size} samples", "at least 2 samples to hold some out for the probes"
            )
        order = torch.randperm(size, generator=torch.Generator().manual_seed(self.settings.seed)).tolist()
        loaders = []
        for indices, shuffle in ((order[num_val:], True), (order[:num_val], False)):
            subset = Subset(dataset, indices)
            # Explicit replicas and rank: the two slices are split across processes like the Trainer's data.
            sampler: DistributedSampler[Any] = DistributedSampler(
                subset,
                num_replicas=trainer.world_size,
                rank=trainer.global_rank,
                shuffle=shuffle,
                seed=self.settings.seed,
            )
            batch_size = train.batch_size or 1
            loaders.append(
                DataLoader(
                    subset, batch_size, sampler=sampler, collate_fn=train.collate_fn, num_workers=train.num_workers
                )
            )
        return loaders[0], loaders[1]

    @staticmethod
    def _limit(
        loader: DataLoader[Any], argument: str, trainer_limit: float, fraction: float = 1.0, cap: float = math.inf
    ) -> int:
        try:
            total = min(len(loader), trainer_limit)
        except TypeError:
            total = 0
        if total == 0:
            raise config_error(argument, "an empty or unsized loader", "a loader with at least one batch and a length")
        return int(max(1, min(math.ceil(fraction * total), cap)))

    def _to_device(self, batch: Any, pl_module: pl.LightningModule) -> Any:
        batch = pl_module.on_before_batch_transfer(batch, 0)
        batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
        # The same input conversion the Trainer applies (e.g. float64 under precision="64-true").
        return self._precision.convert_input(pl_module.on_after_batch_transfer(batch, 0))

    def _batches(self, loader: Iterable[Any], pl_module: pl.LightningModule, limit: int | None = None) -> Iterator[Any]:
        for index, batch in enumerate(loader):
            if limit is not None and index >= limit:
                return
            yield self._to_device(batch, pl_module)

    def _input(self, batch: Any, modality: str) -> Tensor:
        return select_from_batch(batch, self.inputs[modality], f"inputs[{modality!r}]")

    def _labels(self, batch: Any, num_classes: int) -> Tensor:
        labels = select_from_batch(batch, self.target, "target")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise config_error(
                "target", self.target, "a batch key holding integer class labels", f"its dtype is {labels.dtype}."
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise config_error(
                "target",
                f"labels in [{int(labels.min())}, {int(labels.max())}]",
                f"labels in [0, {num_classes - 1}] (num_classes={num_classes})",
                "set `num_classes` on the callback or check the labels.",
            )
        return labels.reshape(-1).long()

    def _num_classes(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loader: DataLoader[Any]) -> int:
        candidates = [self.settings.num_classes, getattr(pl_module, "num_classes", None)]
        candidates.append(getattr(pl_module, "hparams", {}).get("num_classes"))
        for value in candidates:
            if isinstance(value, int) and not isinstance(value, bool) and value >= 2:
                return value
        largest = max(int(select_from_batch(batch, self.target, "target").max()) for batch in loader)
        largest_t = trainer.strategy.reduce(torch.tensor(float(largest), device=pl_module.device), reduce_op="max")
        return max(2, int(largest_t.item()) + 1)

    # --- training and scoring -------------------------------------------------------------------

    def _train_epoch(
        self,
        probes: Mapping[str, UnimodalProbe],
        optimizers: Mapping[str, torch.optim.Optimizer],
        active: set[str],
        loader: DataLoader[Any],
        num_batches: int,
        pl_module: pl.LightningModule,
        num_classes: int,
    ) -> dict[str, float]:
        totals = {m: 0.0 for m in active}
        for m in active:
            probes[m].train()
        seen = 0
        for batch in self._batches(loader, pl_module, num_batches):
            labels = self._labels(batch, num_classes)
            for modality in sorted(active):
                with self._precision.train_step_context():
                    loss = F.cross_entropy(probes[modality](self._input(batch, modality)), labels)
                optimizers[modality].zero_grad(set_to_none=True)
                loss.backward()
                optimizers[modality].step()
                totals[modality] += float(loss.detach())
            seen += 1
        return {m: total / max(seen, 1) for m, total in totals.items()}

    def _raise_if_diverged(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, losses: Mapping[str, float]
    ) -> None:
        names = sorted(losses)
        flags = torch.tensor([float(not math.isfinite(losses[m])) for m in names], device=pl_module.device)
        flags = trainer.strategy.reduce(flags, reduce_op="sum")
        diverged = [m for m, flag in zip(names, flags.tolist(), strict=True) if flag > 0]
        if diverged:
            raise RuntimeError(
                f"The unimodal probe of modality {diverged} diverged (non-finite loss). Hint: lower `probe_lr`, "
                "check that modality's inputs for NaN/inf, or pass `ranking` to skip the probes."
            )

    def _metric(self, num_classes: int) -> Metric:
        if self.settings.metric == "macro_f1":
            return MulticlassF1Score(num_classes=num_classes, average="macro")
        return MulticlassAccuracy(num_classes=num_classes, average="micro")

    @torch.no_grad()
    def _evaluate(
        self,
        probes: Mapping[str, UnimodalProbe],
        metrics: Mapping[str, Metric],
        active: set[str],
        data: _ProbeData,
        pl_module: pl.LightningModule,
        num_classes: int,
    ) -> tuple[dict[str, float], int]:
        for m in active:
            probes[m].eval()
            metrics[m].reset()
        seen, samples = 0, 0
        for batch in self._batches(data.val, pl_module, data.val_batches):
            labels = self._labels(batch, num_classes)
            samples += labels.numel()
            for modality in active:
                with self._precision.val_step_context():
                    logits = probes[modality](self._input(batch, modality))
                metrics[modality].update(logits.argmax(dim=1), labels)
            seen += 1
        if seen == 0:
            raise PDMPConfigurationError(
                "`val_dataloader`: got an empty loader; expected at least one batch to score the probes."
            )
        # compute() synchronises the metric states across processes, so every rank sees the same score.
        return {m: float(metrics[m].compute()) for m in sorted(active)}, samples

    def _stop_reason(self, curve: ProbeCurve, epoch: int, num_classes: int) -> str:
        if epoch + 1 >= self.settings.max_epochs:
            return "max_epochs"
        if epoch + 1 < self.settings.min_epochs or not clearly_above_chance(curve.best_score, num_classes):
            return ""
        reference, since_improvement = -math.inf, 0
        for score in curve.scores:
            if score > reference + self.settings.min_delta:
                reference, since_improvement = score, 0
            else:
                since_improvement += 1
        return "patience" if since_improvement >= self.settings.patience else ""
