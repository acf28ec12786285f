"""What every in-memory multimodal datamodule shares: dict samples and seeded train/val/test splits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from pdmp_lightning.errors import check_int, config_error, is_number

LABEL_KEY = "label"


class TensorMultimodalDataset(Dataset[dict[str, Tensor]]):
    """Samples ``{<modality>: features[i], "label": labels[i]}`` from tensors held in memory.

    Args:
        features: Modality name -> tensor whose first dimension indexes samples.
        labels: The targets, one per sample (first dimension): class indices, or float multi-label
            or regression targets.

    Examples:
        >>> labels = torch.tensor([0, 1, 1])
        >>> dataset = TensorMultimodalDataset({"audio": torch.zeros(3, 2)}, labels)
        >>> len(dataset), sorted(dataset[1])
        (3, ['audio', 'label'])
    """

    def __init__(self, features: Mapping[str, Tensor], labels: Tensor) -> None:
        sizes = {name: len(tensor) for name, tensor in features.items()}
        if any(size != len(labels) for size in sizes.values()):
            raise ValueError(f"every modality needs one row per label ({len(labels)}); got {sizes}")
        self.features = dict(features)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        sample = {name: tensor[index] for name, tensor in self.features.items()}
        sample[LABEL_KEY] = self.labels[index]
        return sample


class SplitLoaders:
    """Train, validation, test and predict dataloaders over named splits, shared by every datamodule here.

    A subclass provides ``batch_size``, ``num_workers`` and ``split_dataset``. Shuffling (train only)
    follows the global seed (Trainer/CLI ``seed_everything``), not a private generator, so that the
    probes' restored random state also restores the data order.
    """

    batch_size: int
    num_workers: int

    def split_dataset(self, split: str) -> Dataset[dict[str, Tensor]]:
        """The dataset of ``split`` ("train", "val" or "test"), set up on first use."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        return self._loader("test")

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader[dict[str, Tensor]]:
        options: dict[str, Any] = {"persistent_workers": True} if self.num_workers > 0 else {}
        return DataLoader(
            self.split_dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            **options,
        )


class InMemoryMultimodalDataModule(SplitLoaders, pl.LightningDataModule):
    """Base of the datamodules whose data fits in memory; subclasses implement ``load``.

    The samples are shuffled once with ``seed`` and cut into test, validation and train splits, so the
    same seed always gives the same splits, and model selection (validation) never sees the test set.

    Args:
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        val_fraction: Share of the samples in the validation split.
        test_fraction: Share of the samples in the test split.
        seed: Seed of the split (and of any generation the subclass does).

    Examples:
        >>> class Tiny(InMemoryMultimodalDataModule):
        ...     modalities = ["x"]
        ...     num_classes = 2
        ...     def load(self):
        ...         return {"x": torch.randn(20, 3)}, torch.randint(0, 2, (20,))
        >>> tiny = Tiny(batch_size=4)
        >>> tiny.setup()
        >>> tiny.split_sizes()
        {'test': 3, 'val': 3, 'train': 14}
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_int("batch_size", batch_size, 1)
        check_int("num_workers", num_workers, 0)
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not is_number(value, above=0, below=1):
                raise config_error(name, value, "a number in (0, 1)")
        if val_fraction + test_fraction >= 1:
            raise config_error(
                "val_fraction + test_fraction", val_fraction + test_fraction, "less than 1 (train needs samples)"
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.splits: dict[str, Subset[dict[str, Tensor]]] = {}

    # --- what a subclass provides ---------------------------------------------------------------

    @property
    def modalities(self) -> list[str]:
        """The modality names, which are also the batch keys of their inputs."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        """Number of classes (known before ``setup``, so the CLI can link it into the model)."""
        raise NotImplementedError

    @property
    def task(self) -> str:
        """``"multiclass"`` (int64 class labels, the default), ``"multilabel"`` or ``"regression"`` (float targets)."""
        return "multiclass"

    def load(self) -> tuple[dict[str, Tensor], Tensor]:
        """Returns modality -> features and the labels for every sample."""
        raise NotImplementedError

    # --- Lightning hooks ------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Loads the data once and cuts the seeded splits."""
        if self.splits:
            return
        features, labels = self.load()
        dataset = TensorMultimodalDataset(features, labels.long() if self.task == "multiclass" else labels.float())
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed)).tolist()
        num_test = max(1, round(len(order) * self.test_fraction))
        num_val = max(1, round(len(order) * self.val_fraction))
        self.splits = {
            "test": Subset(dataset, order[:num_test]),
            "val": Subset(dataset, order[num_test : num_test + num_val]),
            "train": Subset(dataset, order[num_test + num_val :]),
        }

    def split_sizes(self) -> dict[str, int]:
        """Samples per split (after ``setup``)."""
        return {name: len(split) for name, split in self.splits.items()}

    def split_dataset(self, split: str) -> Dataset[dict[str, Tensor]]:
        if not self.splits:
            self.setup()
        return self.splits[split]
