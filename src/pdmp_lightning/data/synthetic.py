"""A generated multimodal task whose modalities differ in what they can reach and how fast.

Each modality carries the class in a fraction of the samples and is noise in the rest, which fixes
the accuracy it can attain alone: ``accuracy = p + (1 - p) / C`` for an informative fraction ``p``.
How fast it can be learned is set by how the class is written:

- ``"fast"``: a class prototype plus noise; a linear read-out finds it in a few steps.
- ``"slow"``: the class's bits, each written as the XOR of the signs of two coordinates; an encoder
  must first learn a non-linear feature, so it starts at chance and climbs later.
- ``"radial"``: the class's bits, each written as the radius of a point at a random angle in a
  plane of its own (inner ring for 0, outer ring for 1); no coordinate's mean and no sign tells the
  class, an encoder must learn the norm (a quadratic feature). Slower still for an MLP than
  ``"slow"``: near chance for the first epochs, then it climbs to the same accuracy.

The default pairs a fast-but-weak ``audio`` (about 0.6 alone) with a slow-but-strong ``visual``
(about 0.95 alone): joint training fits the easy modality first and leaves the strong one
under-optimized, the situation PDMP targets.

Other tasks (``task=``) keep the same two knobs, so the modality with the highest ``accuracy`` is
the dominant one (its features predict the target best):

- ``"multilabel"``: ``num_classes`` labels, each on with probability 1/2 independently, targets
  float32 0/1 ``[B, num_classes]``. A modality shows the true label vector in a share
  ``p = accuracy`` of the samples and an independent random one in the rest; each label is written
  as a class bit is (``"fast"``: a +-1 times a direction per label; ``"slow"``: an XOR of signs;
  ``"radial"``: a ring), so each label read from it alone is right with probability ``(1 + p) / 2``.
- ``"regression"``: ``num_classes`` outputs (1: targets float32 ``[B]``, else ``[B, num_classes]``),
  each uniform with mean 0 and variance 1. A modality shows the true value in a share ``p = accuracy``
  of the samples and an independent draw in the rest, so the best it allows alone is
  ``R^2 = p^2`` (MSE ``1 - p^2``), less what its noise hides. ``"fast"``: the value times a direction;
  ``"slow"``: ``(s * m, s * y)`` with a random sign ``s`` and magnitude ``m`` (a product recovers
  ``y``); ``"radial"``: ``y`` is the radius (1.5 to 2.0) of a point at a random angle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from pdmp_lightning.data.base import InMemoryMultimodalDataModule
from pdmp_lightning.errors import check_int, config_error
from pdmp_lightning.tasks import Task, check_task


@dataclass(frozen=True)
class SyntheticModality:
    """One generated modality.

    Attributes:
        name: Modality name (and batch key).
        accuracy: Accuracy it can attain alone, in (1 / num_classes, 1]. With ``task="multilabel"``
            or ``"regression"``: the share of samples whose features show the true target, in (0, 1]
            (see the module docstring for what that attains).
        learning: How the class is written: ``"fast"`` (linear prototypes), ``"slow"`` (XOR-coded
            bits: bit ``b`` is the XOR of the signs of coordinates ``2b`` and ``2b + 1``, magnitudes
            in [0.2, 2.2]) or ``"radial"`` (ring-coded bits: bit ``b`` is the radius of the point
            ``(x[2b], x[2b + 1])``, at a uniform random angle, about 1.5 for 0 and 2.0 for 1, each
            within 0.1).
        dim: Feature size (at least 2 bits x 2 coordinates for ``"slow"`` and ``"radial"``).
        noise: Standard deviation of the Gaussian noise: on every coordinate for ``"fast"``, on the
            coordinates outside the bit code for ``"slow"`` and ``"radial"`` (the code itself is exact).

    Examples:
        >>> SyntheticModality("depth", accuracy=0.7, learning="slow", dim=8)
        SyntheticModality(name='depth', accuracy=0.7, learning='slow', dim=8, noise=0.3)
    """

    name: str
    accuracy: float
    learning: Literal["fast", "slow", "radial"] = "fast"
    dim: int = 16
    noise: float = 0.3


# Rings of the "radial" bits: a 0 bit lies at radius INNER +- JITTER, a 1 bit at OUTER +- JITTER.
RADIAL_INNER, RADIAL_OUTER, RADIAL_JITTER = 1.5, 2.0, 0.1
# Multi-label targets: each label is on with this probability, independently of the others.
MULTILABEL_RATE = 0.5
# Regression targets: uniform on [-REGRESSION_HALF_WIDTH, REGRESSION_HALF_WIDTH], variance 1.
REGRESSION_HALF_WIDTH = math.sqrt(3.0)
LEARNING_KINDS = ("fast", "slow", "radial")

DEFAULT_MODALITIES = (
    SyntheticModality("audio", accuracy=0.6, learning="fast", dim=16, noise=0.5),
    SyntheticModality("visual", accuracy=0.95, learning="slow", dim=16, noise=0.3),
)


class SyntheticMultimodalDataModule(InMemoryMultimodalDataModule):
    """Generated in memory, no files: any number of modalities with their own attainable accuracy and speed.

    Batches are ``{<modality>: float32 [B, dim], "label": int64 [B]}``. The default reproduces the
    under-optimization PDMP targets: a fast-but-weak ``audio`` beside a slow-but-strong ``visual``.
    With ``task="multilabel"`` the ``"label"`` is float32 0/1 ``[B, num_classes]``; with
    ``task="regression"`` it is float32 ``[B]`` (``num_classes=1``) or ``[B, num_classes]``.

    Args:
        modalities: The modalities to generate; default: fast-but-weak audio (0.6) and
            slow-but-strong visual (0.95).
        num_samples: Samples in all (train + validation + test).
        num_classes: Number of classes; with ``task="multilabel"`` the number of labels (>= 2), with
            ``task="regression"`` the number of outputs (1 for a scalar target).
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        val_fraction: Share of the samples in the validation split.
        test_fraction: Share of the samples in the test split.
        seed: Seed of the generation and of the splits.
        task: ``"multiclass"`` (default), ``"multilabel"`` or ``"regression"``; the same modalities
            and seed give the same features' kind of code in each.

    Examples:
        >>> data = SyntheticMultimodalDataModule(num_samples=100, batch_size=10)
        >>> data.modalities, data.num_classes
        (['audio', 'visual'], 4)
        >>> data.setup()
        >>> data.split_sizes()
        {'test': 15, 'val': 15, 'train': 70}
        >>> regression = SyntheticMultimodalDataModule(
        ...     num_samples=100, num_classes=1, task="regression"
        ... )
        >>> features, targets = regression.load()
        >>> regression.task, targets.shape, targets.dtype
        ('regression', torch.Size([100]), torch.float32)
    """

    def __init__(
        self,
        modalities: list[SyntheticModality] | None = None,
        num_samples: int = 3000,
        num_classes: int = 4,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        task: Task = "multiclass",
    ) -> None:
        super().__init__(batch_size, num_workers, val_fraction, test_fraction, seed)
        specs = list(modalities) if modalities is not None else list(DEFAULT_MODALITIES)
        check_task(task, num_classes)
        check_int("num_samples", num_samples, 10)
        names = [spec.name for spec in specs]
        if len(specs) < 1 or len(set(names)) != len(names) or "label" in names:
            raise config_error("modalities", names, "one or more modalities with distinct names other than 'label'")
        bits = max(1, math.ceil(math.log2(num_classes))) if task == "multiclass" else num_classes
        lowest = 1.0 / num_classes if task == "multiclass" else 0.0
        for spec in specs:
            if not lowest < spec.accuracy <= 1.0:
                allowed = f"in (1/{num_classes}, 1]" if task == "multiclass" else f"in (0, 1] for task={task!r}"
                raise config_error(f"modalities[{spec.name!r}].accuracy", spec.accuracy, allowed)
            if spec.learning not in LEARNING_KINDS:
                raise config_error(f"modalities[{spec.name!r}].learning", spec.learning, "'fast', 'slow' or 'radial'")
            minimum = 1 if spec.learning == "fast" else 2 * bits
            if spec.dim < minimum:
                raise config_error(f"modalities[{spec.name!r}].dim", spec.dim, f"at least {minimum}")
        self.specs = specs
        self.num_samples = num_samples
        self._num_classes = num_classes
        self._task: Task = task

    @property
    def modalities(self) -> list[str]:
        return [spec.name for spec in self.specs]

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def task(self) -> Task:
        """``"multiclass"``, ``"multilabel"`` or ``"regression"``."""
        return self._task

    @property
    def feature_dims(self) -> dict[str, int]:
        """Modality -> feature size."""
        return {spec.name: spec.dim for spec in self.specs}

    def load(self) -> tuple[dict[str, Tensor], Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        if self.task != "multiclass":
            targets = self._draw_targets(self.num_samples, generator)
            features = {spec.name: self._generate_targets(spec, targets, generator) for spec in self.specs}
            return features, targets.squeeze(1) if self.task == "regression" and self.num_classes == 1 else targets
        labels = torch.randint(0, self.num_classes, (self.num_samples,), generator=generator)
        features = {spec.name: self._generate(spec, labels, generator) for spec in self.specs}
        return features, labels

    def _draw_targets(self, count: int, generator: torch.Generator) -> Tensor:
        """Multi-label or regression targets ``[count, num_classes]``."""
        uniform = torch.rand(count, self.num_classes, generator=generator)
        if self.task == "multilabel":
            return (uniform < MULTILABEL_RATE).float()
        return REGRESSION_HALF_WIDTH * (2 * uniform - 1)

    def _generate_targets(self, spec: SyntheticModality, targets: Tensor, generator: torch.Generator) -> Tensor:
        """A modality's features for multi-label or regression targets ``[count, num_classes]``."""
        count = len(targets)
        informative = torch.rand(count, generator=generator) < spec.accuracy
        # Uninformative samples show an independent draw of the targets, so both kinds look alike.
        shown = torch.where(informative[:, None], targets, self._draw_targets(count, generator))
        if spec.learning == "fast":
            directions = torch.randn(self.num_classes, spec.dim, generator=generator)
            directions = 2.0 * directions / directions.norm(dim=1, keepdim=True)
            code = 2 * shown - 1 if self.task == "multilabel" else shown
            linear: Tensor = code @ directions + spec.noise * torch.randn(count, spec.dim, generator=generator)
            return linear
        features = spec.noise * torch.randn(count, spec.dim, generator=generator)
        if self.task == "multilabel":
            self._write_bits(features, spec.learning, list(shown.T), generator)
            return features
        for output, value in enumerate(shown.T):
            angle_or_sign = torch.rand(count, generator=generator)
            if spec.learning == "radial":
                position = (value + REGRESSION_HALF_WIDTH) / (2 * REGRESSION_HALF_WIDTH)
                radius = RADIAL_INNER + (RADIAL_OUTER - RADIAL_INNER) * position
                features[:, 2 * output] = radius * torch.cos(2 * math.pi * angle_or_sign)
                features[:, 2 * output + 1] = radius * torch.sin(2 * math.pi * angle_or_sign)
            else:
                sign = torch.where(angle_or_sign < 0.5, -1.0, 1.0)
                magnitude = torch.rand(count, generator=generator) * 2 + 0.2
                features[:, 2 * output] = sign * magnitude
                features[:, 2 * output + 1] = sign * value
        return features

    def _generate(self, spec: SyntheticModality, labels: Tensor, generator: torch.Generator) -> Tensor:
        count, classes = len(labels), self.num_classes
        informative_share = (spec.accuracy - 1.0 / classes) / (1.0 - 1.0 / classes)
        informative = torch.rand(count, generator=generator) < informative_share
        # Uninformative samples are written with a random class, so both kinds look alike.
        shown = torch.where(informative, labels, torch.randint(0, classes, (count,), generator=generator))
        if spec.learning == "fast":
            prototypes = torch.randn(classes, spec.dim, generator=generator)
            prototypes = 2.0 * prototypes / prototypes.norm(dim=1, keepdim=True)
            linear: Tensor = prototypes[shown] + spec.noise * torch.randn(count, spec.dim, generator=generator)
            return linear
        bits = max(1, math.ceil(math.log2(classes)))
        features = spec.noise * torch.randn(count, spec.dim, generator=generator)
        self._write_bits(features, spec.learning, [((shown >> bit) & 1).float() for bit in range(bits)], generator)
        return features

    @staticmethod
    def _write_bits(features: Tensor, learning: str, bits: list[Tensor], generator: torch.Generator) -> None:
        """Writes 0/1 ``bits`` into coordinates ``2b``, ``2b + 1`` of ``features`` (``"slow"`` or ``"radial"``)."""
        count = len(features)
        for bit, value in enumerate(bits):
            if learning == "radial":
                jitter = RADIAL_JITTER * (2 * torch.rand(count, generator=generator) - 1)
                radius = RADIAL_INNER + (RADIAL_OUTER - RADIAL_INNER) * value + jitter
                angle = 2 * math.pi * torch.rand(count, generator=generator)
                features[:, 2 * bit] = radius * torch.cos(angle)
                features[:, 2 * bit + 1] = radius * torch.sin(angle)
            else:
                magnitude = torch.rand(count, 2, generator=generator) * 2 + 0.2
                first_sign = torch.where(torch.rand(count, generator=generator) < 0.5, -1.0, 1.0)
                features[:, 2 * bit] = first_sign * magnitude[:, 0]
                features[:, 2 * bit + 1] = first_sign * (value * 2 - 1) * magnitude[:, 1]
