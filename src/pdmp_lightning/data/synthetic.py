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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from pdmp_lightning.data.base import InMemoryMultimodalDataModule
from pdmp_lightning.errors import check_int, config_error


@dataclass(frozen=True)
class SyntheticModality:
    """One generated modality.

    Attributes:
        name: Modality name (and batch key).
        accuracy: Accuracy it can attain alone, in (1 / num_classes, 1].
        learning: How the class is written: ``"fast"`` (linear prototypes), ``"slow"`` (XOR-coded
            bits: bit ``b`` is the XOR of the signs of coordinates ``2b`` and ``2b + 1``, magnitudes
            in [0.2, 2.2]) or ``"radial"`` (ring-coded bits: bit ``b`` is the radius of the point
            ``(x[2b], x[2b + 1])``, at a uniform random angle, about 1.5 for 0 and 2.0 for 1, each
            within 0.1).
        dim: Feature size (at least 2 bits x 2 coordinates for ``"slow"`` and ``"radial"``).
        noise: Standard deviation of the Gaussian noise: on every coordinate for ``"fast"``, on the
            coordinates outside the bit code for ``"slow"`` and ``"radial"`` (the code itself is exact).

    Example:
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
LEARNING_KINDS = ("fast", "slow", "radial")

DEFAULT_MODALITIES = (
    SyntheticModality("audio", accuracy=0.6, learning="fast", dim=16, noise=0.5),
    SyntheticModality("visual", accuracy=0.95, learning="slow", dim=16, noise=0.3),
)


class SyntheticMultimodalDataModule(InMemoryMultimodalDataModule):
    """Generated in memory, no files: any number of modalities with their own attainable accuracy and speed.

    Batches are ``{<modality>: float32 [B, dim], "label": int64 [B]}``. The default reproduces the
    under-optimization PDMP targets: a fast-but-weak ``audio`` beside a slow-but-strong ``visual``.

    Args:
        modalities: The modalities to generate; default: fast-but-weak audio (0.6) and
            slow-but-strong visual (0.95).
        num_samples: Samples in all (train + validation + test).
        num_classes: Number of classes.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        val_fraction: Share of the samples in the validation split.
        test_fraction: Share of the samples in the test split.
        seed: Seed of the generation and of the splits.

    Example:
        >>> data = SyntheticMultimodalDataModule(num_samples=100, batch_size=10)
        >>> data.modalities, data.num_classes
        (['audio', 'visual'], 4)
        >>> data.setup()
        >>> data.split_sizes()
        {'test': 15, 'val': 15, 'train': 70}
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
    ) -> None:
        super().__init__(batch_size, num_workers, val_fraction, test_fraction, seed)
        specs = list(modalities) if modalities is not None else list(DEFAULT_MODALITIES)
        check_int("num_classes", num_classes, 2)
        check_int("num_samples", num_samples, 10)
        names = [spec.name for spec in specs]
        if len(specs) < 1 or len(set(names)) != len(names) or "label" in names:
            raise config_error("modalities", names, "one or more modalities with distinct names other than 'label'")
        bits = max(1, math.ceil(math.log2(num_classes)))
        for spec in specs:
            if not 1.0 / num_classes < spec.accuracy <= 1.0:
                raise config_error(f"modalities[{spec.name!r}].accuracy", spec.accuracy, f"in (1/{num_classes}, 1]")
            if spec.learning not in LEARNING_KINDS:
                raise config_error(f"modalities[{spec.name!r}].learning", spec.learning, "'fast', 'slow' or 'radial'")
            minimum = 1 if spec.learning == "fast" else 2 * bits
            if spec.dim < minimum:
                raise config_error(f"modalities[{spec.name!r}].dim", spec.dim, f"at least {minimum}")
        self.specs = specs
        self.num_samples = num_samples
        self._num_classes = num_classes

    @property
    def modalities(self) -> list[str]:
        return [spec.name for spec in self.specs]

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def feature_dims(self) -> dict[str, int]:
        """Modality -> feature size."""
        return {spec.name: spec.dim for spec in self.specs}

    def load(self) -> tuple[dict[str, Tensor], Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        labels = torch.randint(0, self.num_classes, (self.num_samples,), generator=generator)
        features = {spec.name: self._generate(spec, labels, generator) for spec in self.specs}
        return features, labels

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
        if spec.learning == "radial":
            for bit in range(bits):
                value = ((shown >> bit) & 1).float()
                jitter = RADIAL_JITTER * (2 * torch.rand(count, generator=generator) - 1)
                radius = RADIAL_INNER + (RADIAL_OUTER - RADIAL_INNER) * value + jitter
                angle = 2 * math.pi * torch.rand(count, generator=generator)
                features[:, 2 * bit] = radius * torch.cos(angle)
                features[:, 2 * bit + 1] = radius * torch.sin(angle)
            return features
        for bit in range(bits):
            value = ((shown >> bit) & 1).float() * 2 - 1
            magnitude = torch.rand(count, 2, generator=generator) * 2 + 0.2
            first_sign = torch.where(torch.rand(count, generator=generator) < 0.5, -1.0, 1.0)
            features[:, 2 * bit] = first_sign * magnitude[:, 0]
            features[:, 2 * bit + 1] = first_sign * value * magnitude[:, 1]
        return features
