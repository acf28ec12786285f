"""The UCI Multiple Features handwritten digits (six feature views of 2,000 images), shipped with the package."""

from __future__ import annotations

from importlib.resources import files
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from pdmp_lightning.data.base import InMemoryMultimodalDataModule, TensorMultimodalDataset
from pdmp_lightning.errors import config_error

MFeatView = Literal["fou", "fac", "kar", "pix", "zer", "mor"]

#: Feature size of every view, in the canonical order.
VIEW_DIMS: dict[str, int] = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
NUM_SAMPLES = 2000
NUM_CLASSES = 10
RESOURCE = "mfeat.npz"

assert tuple(VIEW_DIMS) == get_args(MFeatView)


class UCIMultipleFeaturesDataModule(InMemoryMultimodalDataModule):
    """UCI Multiple Features: 2,000 handwritten digits (10 classes of 200) seen through up to six feature views.

    Every view is a modality; row ``i`` of every view describes the same image. The views are ``fou`` (76
    Fourier coefficients of the character shapes), ``fac`` (216 profile correlations), ``kar`` (64
    Karhunen-Loeve coefficients), ``pix`` (240 pixel averages in 2 x 3 windows), ``zer`` (47 Zernike moments)
    and ``mor`` (6 morphological features). Batches are ``{<view>: float32 [B, dim], "label": int64 [B]}``.

    The data ship with the package (``data/resources/mfeat.npz``, see ``MFEAT_LICENSE.md`` next to it) under
    CC BY 4.0: cite van Breukelen et al., "Handwritten digit recognition by combined classifiers",
    Kybernetika 34(4):381-386, 1998, and the UCI Machine Learning Repository, Multiple Features data set,
    doi:10.24432/C5HC70.

    Args:
        views: The views to use, in this order (None: all six, as fou, fac, kar, pix, zer, mor).
        standardize: Z-score every feature column with the mean and standard deviation of the train split
            only (no information from validation or test leaks in); columns constant on train are only centred.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        val_fraction: Share of the samples in the validation split.
        test_fraction: Share of the samples in the test split.
        seed: Seed of the split.

    Examples:
        >>> datamodule = UCIMultipleFeaturesDataModule(views=["pix", "mor"])
        >>> datamodule.feature_dims, datamodule.num_classes
        ({'pix': 240, 'mor': 6}, 10)
    """

    def __init__(
        self,
        views: list[MFeatView] | None = None,
        standardize: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
        self.views: list[str] = _checked_views(views)
        if not isinstance(standardize, bool):
            raise config_error("standardize", standardize, "True or False")
        self.standardize = standardize
        #: View -> (mean, std) of the train split used to standardize it (filled by ``setup``).
        self.train_statistics: dict[str, tuple[Tensor, Tensor]] = {}

    @property
    def modalities(self) -> list[str]:
        """The selected views, which are also the batch keys of their features."""
        return list(self.views)

    @property
    def num_classes(self) -> int:
        """Ten digit classes."""
        return NUM_CLASSES

    @property
    def feature_dims(self) -> dict[str, int]:
        """View -> number of features, for the selected views (known before ``setup``)."""
        return {view: VIEW_DIMS[view] for view in self.views}

    def load(self) -> tuple[dict[str, Tensor], Tensor]:
        """Reads the selected views (float32 [2000, dim]) and the labels (int64 [2000]) from the package."""
        resource = files("pdmp_lightning.data") / "resources" / RESOURCE
        with resource.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
            features: dict[str, Tensor] = {}
            for view in self.views:
                array = np.ascontiguousarray(archive[view], dtype=np.float32)
                if array.shape != (NUM_SAMPLES, VIEW_DIMS[view]):
                    raise RuntimeError(
                        f"{RESOURCE}: view {view!r} has shape {array.shape}, expected {(NUM_SAMPLES, VIEW_DIMS[view])}"
                    )
                features[view] = torch.from_numpy(array)
            labels = torch.from_numpy(archive["label"].astype(np.int64))
        if labels.shape != (NUM_SAMPLES,):
            raise RuntimeError(f"{RESOURCE}: labels have shape {tuple(labels.shape)}, expected ({NUM_SAMPLES},)")
        return features, labels

    def setup(self, stage: str | None = None) -> None:
        """Loads the data once, cuts the seeded splits and, if asked, standardizes with train statistics."""
        if self.splits:
            return
        super().setup(stage)
        if self.standardize:
            self._standardize()

    def _standardize(self) -> None:
        train = self.splits["train"]
        dataset = train.dataset
        if not isinstance(dataset, TensorMultimodalDataset):  # pragma: no cover - the base always builds one
            raise TypeError(f"expected the splits to share a TensorMultimodalDataset, got {type(dataset).__name__}")
        train_rows = torch.as_tensor(list(train.indices), dtype=torch.long)
        for view, tensor in dataset.features.items():
            # float64 statistics: a column constant on train gets exactly std 0, hence no division.
            values = tensor.double()
            mean = values[train_rows].mean(dim=0)
            std = values[train_rows].std(dim=0, correction=0)
            std = torch.where(std > 0, std, torch.ones_like(std))
            dataset.features[view] = ((values - mean) / std).float()
            self.train_statistics[view] = (mean.float(), std.float())


def _checked_views(views: list[MFeatView] | None) -> list[str]:
    """``views`` as a list of distinct known view names (all six, canonical order, for None)."""
    allowed = f"a non-empty list of distinct names from {list(VIEW_DIMS)} (or None for all six)"
    if views is None:
        return list(VIEW_DIMS)
    if isinstance(views, str) or not isinstance(views, list | tuple):
        raise config_error("views", views, allowed, hint=f"pass a list, e.g. [{views!r}]")
    if not views:
        raise config_error("views", views, allowed)
    unknown = [view for view in views if not isinstance(view, str) or view not in VIEW_DIMS]
    if unknown:
        raise config_error("views", views, allowed, hint=f"unknown view(s) {unknown}")
    duplicates = sorted({view for view in views if views.count(view) > 1})
    if duplicates:
        raise config_error("views", views, allowed, hint=f"repeated view(s) {duplicates}")
    return list(views)
