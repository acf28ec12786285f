"""Training the unimodal probes side by side until their ranking is settled.

All probes share the passes over the train batches. Every ``val_check_interval`` probe epochs,
each probe still training is scored on the validation data and the stopping rule of
``pdmp_lightning.probing.stopping`` decides which ones stop. Nothing depends on the main
training's length. The loop follows the Trainer's precision (input conversion, autocast, a gradient
scaler under ``16-mixed``) and reads values back to the host once per validation pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins import MixedPrecision, Precision
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.amp.grad_scaler import GradScaler
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, Subset
from torchmetrics import Metric
from tqdm import tqdm

from pdmp_lightning.batch import BatchKey, select_from_batch
from pdmp_lightning.errors import PDMPConfigurationError, config_error
from pdmp_lightning.modality import ModalityGroup
from pdmp_lightning.probing.outcome import ProbeCost, ProbeCurve, ProbeOutcome
from pdmp_lightning.probing.probe import UnimodalProbe, build_probe, copy_encoder
from pdmp_lightning.probing.settings import ProbeSettings
from pdmp_lightning.probing.stopping import stop_reasons
from pdmp_lightning.probing.task import ProbeTask, infer_task


@dataclass
class _ProbeData:
    """The loaders the probes train and score on, and how many batches of each they use."""

    train: DataLoader[Any]
    val: DataLoader[Any]
    val_source: str
    epoch_batches: int
    val_batches: int


def main_train_batches(trainer: pl.Trainer) -> int | None:
    """Train batches the main training will run on this process (None when its length is unbounded).

    Counted in batches, not optimizer steps: ``estimated_stepping_batches`` times the accumulation.
    """
    steps = trainer.estimated_stepping_batches
    return int(steps) * trainer.accumulate_grad_batches if math.isfinite(steps) else None


class ProbeRunner:
    """Trains one probe per modality on the trainer's data and scores them.

    Args:
        settings: How the probes train, stop and are scored.
        inputs: Modality -> batch key or index of its input.
        target: Batch key or index of the labels.
    """

    def __init__(self, settings: ProbeSettings, inputs: Mapping[str, BatchKey], target: BatchKey) -> None:
        self.settings = settings
        self.inputs = dict(inputs)
        self.target = target
        self._precision: Precision = Precision()
        self._task_in_use: ProbeTask | None = None

    def run(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        groups: Mapping[str, ModalityGroup],
        templates: Mapping[str, nn.Module] | None = None,
    ) -> ProbeOutcome:
        """Trains and scores the probes; leaves ``pl_module`` untouched.

        ``templates`` (submodule path -> its unsharded copy from before ``configure_model``) rebuild
        encoders that a sharded strategy has sharded; see ``copy_encoder``.

        Raises:
            PDMPConfigurationError: Missing batch keys, labels out of range, empty loaders, an
                encoder that cannot be probed (checked for every modality before any probe trains).
            RuntimeError: A probe's loss became NaN or infinite.
        """
        start = time.perf_counter()
        settings = self.settings
        data = self._data(trainer)
        self._precision = trainer.precision_plugin
        first = self._to_device(next(iter(data.train)), pl_module)
        task = self._task(trainer, pl_module, data.train, select_from_batch(first, self.target, "target"))
        self._task_in_use = task
        num_classes = task.outputs
        with self._precision.forward_context():
            probes = {
                m: build_probe(copy_encoder(pl_module, m, g, templates), self._input(first, m), num_classes, m)
                for m, g in groups.items()
            }
        for modality, probe in probes.items():
            if probe.fold > 1:
                order = "frame by frame" if probe.frame_major else "sample by sample"
                rank_zero_info(
                    f"PDMP probes: the '{modality}' encoder folds {probe.fold} frames per sample into the batch "
                    f"({order}); its probe averages the features over them."
                )
        optimizers = {m: torch.optim.Adam(p.parameters(), lr=settings.lr) for m, p in probes.items()}
        scalers = {m: self._gradient_scaler(pl_module) for m in probes}
        metrics = {m: task.new_metric().to(pl_module.device) for m in probes}
        curves = {m: ProbeCurve(m) for m in probes}
        check_batches = max(1, round(settings.val_check_interval * data.epoch_batches))
        cap_batches = max(1, round(settings.max_epochs * data.epoch_batches))
        rank_zero_info(
            f"PDMP probes: {len(probes)} probes, {data.epoch_batches} train batches per probe epoch, a validation pass "
            f"every {check_batches} batches, at most {settings.max_epochs:g} probe epochs; each stops once it has "
            "plateaued or the ranking is settled."
        )
        batches = _cycle(data.train, data.epoch_batches, lambda raw: self._prepare(raw, pl_module))
        setup_seconds = time.perf_counter() - start
        validation_seconds, val_samples, samples, trained = 0.0, 0, 0, 0
        active = set(probes)
        disable_bar = not trainer.is_global_zero or trainer.progress_bar_callback is None
        with (
            closing(batches),
            tqdm(total=settings.max_epochs, desc="PDMP probes", unit="epoch", disable=disable_bar, leave=False) as bar,
        ):
            while active:
                count = min(check_batches, cap_batches - trained)
                losses = self._train(probes, optimizers, scalers, active, batches, count)
                trained += count
                self._raise_if_diverged(trainer, pl_module, losses)
                validating = time.perf_counter()
                scores, val_samples = self._evaluate(probes, metrics, active, data, pl_module)
                validation_seconds += time.perf_counter() - validating
                for modality in sorted(active):
                    curve = curves[modality]
                    curve.epochs.append(trained / data.epoch_batches)
                    curve.train_losses.append(losses[modality])
                    curve.scores.append(scores[modality])
                if not samples:  # the same validation batches every pass: counted across ranks once
                    counted = torch.tensor(float(val_samples), device=pl_module.device)
                    samples = int(trainer.strategy.reduce(counted, reduce_op="sum").item())
                assert task.chance is not None  # measured at the first pass
                reasons = stop_reasons(curves, active, settings, task.chance, samples, task.top)
                for modality, reason in reasons.items():
                    curves[modality].stopped = reason
                active = {m for m in active if not curves[m].stopped}
                bar.update(count / data.epoch_batches)
                bar.set_postfix({m: f"{curves[m].scores[-1]:.3f}" for m in sorted(curves)})
        cost = ProbeCost(
            seconds=time.perf_counter() - start,
            setup_seconds=setup_seconds,
            validation_seconds=validation_seconds,
            target=settings.cost_target,
        )
        return ProbeOutcome(
            curves,
            num_classes,
            cost,
            data.epoch_batches,
            data.val_source,
            samples,
            settings.max_epochs,
            {m: p.fold for m, p in probes.items() if p.fold > 1},
            task=task.kind,
            metric=task.metric_name,
            chance=task.chance,
            top=task.top,
        )

    def _task(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, train: DataLoader[Any], targets: Tensor
    ) -> ProbeTask:
        """The probes' task from the first batch's targets (or ``probes.task``), with its metric checked."""
        kind = infer_task(targets, self.settings.task)
        if kind == "multiclass":
            classes = self._num_classes(trainer, pl_module, train)
            task = ProbeTask.resolve(kind, classes, self.settings.metric)
            task.chance = 1.0 / classes
            return task
        outputs = 1 if targets.dim() == 1 else int(targets.shape[1])
        task = ProbeTask.resolve(kind, outputs, self.settings.metric)
        if kind == "regression":
            # The constant prediction that defines chance: the training targets' mean, the same on every rank.
            mean = targets.float().reshape(targets.shape[0], -1).mean(dim=0)
            reduced = trainer.strategy.reduce(mean.to(pl_module.device), reduce_op="mean")
            assert isinstance(reduced, Tensor)
            task.target_mean = reduced.detach()
        return task

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
        if isinstance(val, DataLoader) and trainer.limit_val_batches != 0:
            # The Trainer's own limits (limit_train_batches, limit_val_batches) apply to the probes too.
            train_limit, val_limit = trainer.num_training_batches, (trainer.num_val_batches or [math.inf])[0]
            return _ProbeData(
                train=train,
                val=val,
                val_source="val_dataloader",
                epoch_batches=self._limit(train, "train_dataloader", train_limit),
                val_batches=self._limit(val, "val_dataloader", val_limit),
            )
        held_train, held_val = self._held_out(train, trainer)
        return _ProbeData(
            train=held_train,
            val=held_val,
            val_source=f"held-out {self.settings.val_fraction:.0%} of train",
            epoch_batches=self._limit(held_train, "train_dataloader", math.inf),
            val_batches=self._limit(held_val, "val_dataloader", math.inf),
        )

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
    def _limit(loader: DataLoader[Any], argument: str, trainer_limit: float) -> int:
        try:
            total = min(len(loader), trainer_limit)
        except TypeError:
            total = 0
        if total == 0:
            raise config_error(argument, "an empty or unsized loader", "a loader with at least one batch and a length")
        return int(max(1, total))

    def _to_device(self, batch: Any, pl_module: pl.LightningModule) -> Any:
        batch = pl_module.on_before_batch_transfer(batch, 0)
        batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
        # The same input conversion the Trainer applies (e.g. float64 under precision="64-true").
        return self._precision.convert_input(pl_module.on_after_batch_transfer(batch, 0))

    def _input(self, batch: Any, modality: str) -> Tensor:
        return select_from_batch(batch, self.inputs[modality], f"inputs[{modality!r}]")

    def _prepare(self, raw: Any, pl_module: pl.LightningModule) -> Any:
        """Moves a loader's batch to the device, checking its labels' range once, on the host.

        The loader's batch is checked before the move (no accelerator read); a batch that only the
        module's transfer hooks give a label key is checked after it, where it stays on the CPU.
        """
        try:
            labels: Tensor | None = select_from_batch(raw, self.target, "target")
        except PDMPConfigurationError:
            labels = None
        batch = self._to_device(raw, pl_module)
        if labels is None:
            labels = select_from_batch(batch, self.target, "target")
        task = self._task_in_use
        assert task is not None  # resolved from the first batch before any batch is prepared
        integer = not (labels.dtype.is_floating_point or labels.dtype == torch.bool)
        if task.kind == "multiclass" and integer and labels.device.type == "cpu":
            self._check_label_range(labels, task.outputs)
        return batch

    def _labels(self, batch: Any) -> Tensor:
        """The prepared batch's targets in the task's form (class labels' range was checked in ``_prepare``)."""
        raw = select_from_batch(batch, self.target, "target")
        assert self._task_in_use is not None
        if self._task_in_use.kind == "multiclass" and (raw.dtype.is_floating_point or raw.dtype == torch.bool):
            raise config_error(
                "target", self.target, "a batch key holding integer class labels", f"its dtype is {raw.dtype}."
            )
        return self._task_in_use.targets(raw)

    def _check_label_range(self, labels: Tensor, num_classes: int) -> None:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise config_error(
                "target",
                f"labels in [{int(labels.min())}, {int(labels.max())}]",
                f"labels in [0, {num_classes - 1}] (num_classes={num_classes})",
                "set `probes.num_classes` or check the labels.",
            )

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

    def _gradient_scaler(self, pl_module: pl.LightningModule) -> GradScaler | None:
        """A scaler of the probe's own under fp16 mixed precision (the Trainer's keeps its state)."""
        plugin = self._precision
        if isinstance(plugin, MixedPrecision) and plugin.precision == "16-mixed":
            return GradScaler(device=pl_module.device.type)
        return None

    def _train(
        self,
        probes: Mapping[str, UnimodalProbe],
        optimizers: Mapping[str, torch.optim.Optimizer],
        scalers: Mapping[str, GradScaler | None],
        active: set[str],
        batches: Generator[Any, None, None],
        count: int,
    ) -> dict[str, float]:
        """Trains the active probes on the next ``count`` batches; their mean losses, read back once."""
        task = self._task_in_use
        assert task is not None
        order = sorted(active)
        for m in order:
            probes[m].train()
        totals: list[Tensor | float] = [0.0] * len(order)
        for _ in range(count):
            batch = next(batches)
            labels = self._labels(batch)
            for index, modality in enumerate(order):
                with self._precision.train_step_context():
                    loss = task.loss(probes[modality](self._input(batch, modality)), labels)
                optimizer, scaler = optimizers[modality], scalers[modality]
                optimizer.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                totals[index] = totals[index] + loss.detach().float()
        means = torch.stack([torch.as_tensor(t, dtype=torch.float32) for t in totals]).cpu() / max(count, 1)
        return dict(zip(order, means.tolist(), strict=True))

    def _raise_if_diverged(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, losses: Mapping[str, float]
    ) -> None:
        names = sorted(losses)
        flags = torch.tensor([float(not math.isfinite(losses[m])) for m in names], device=pl_module.device)
        flags = trainer.strategy.reduce(flags, reduce_op="sum")
        diverged = [m for m, flag in zip(names, flags.tolist(), strict=True) if flag > 0]
        if diverged:
            raise RuntimeError(
                f"The unimodal probe of modality {diverged} diverged (non-finite loss). Hint: lower `probes.lr`, "
                "check that modality's inputs for NaN/inf, or pass `ranking` to skip the probes."
            )

    @torch.no_grad()
    def _evaluate(
        self,
        probes: Mapping[str, UnimodalProbe],
        metrics: Mapping[str, Metric],
        active: set[str],
        data: _ProbeData,
        pl_module: pl.LightningModule,
    ) -> tuple[dict[str, float], int]:
        task = self._task_in_use
        assert task is not None
        for m in active:
            probes[m].eval()
            metrics[m].reset()
        # At the first pass, the chance level: the same metric on an uninformed predictor's outputs.
        chance = task.new_metric().to(pl_module.device) if task.chance is None else None
        seen, samples = 0, 0
        for index, raw in enumerate(data.val):
            if index >= data.val_batches:
                break
            batch = self._prepare(raw, pl_module)
            labels = self._labels(batch)
            samples += labels.shape[0]
            for modality in active:
                with self._precision.val_step_context():
                    outputs = probes[modality](self._input(batch, modality))
                task.update(metrics[modality], outputs, labels)
            if chance is not None:
                task.update(chance, task.constant_outputs(labels), labels)
            seen += 1
        if seen == 0:
            raise PDMPConfigurationError(
                "`val_dataloader`: got an empty loader; expected at least one batch to score the probes."
            )
        # compute() synchronises the metric states across processes, so every rank sees the same score.
        if chance is not None:
            task.chance = task.score(float(chance.compute()))
        return {m: task.score(float(metrics[m].compute())) for m in sorted(active)}, samples


def _cycle(loader: Iterable[Any], epoch_batches: int, prepare: Callable[[Any], Any]) -> Generator[Any, None, None]:
    """The loader's first ``epoch_batches`` batches, over and over, each pass reshuffled where the loader shuffles.

    A distributed sampler gets its own epoch number for each pass (and its original one back at the
    end of probing, which the Trainer overwrites at its first epoch anyway).
    """
    sampler = getattr(loader, "sampler", None)
    settable = sampler if callable(getattr(sampler, "set_epoch", None)) else None
    original = getattr(settable, "epoch", None)
    epoch = 0
    try:
        while True:
            if settable is not None:
                settable.set_epoch(epoch)
            for index, batch in enumerate(loader):
                if index >= epoch_batches:
                    break
                yield prepare(batch)
            epoch += 1
    finally:
        if settable is not None and isinstance(original, int):
            settable.set_epoch(original)
