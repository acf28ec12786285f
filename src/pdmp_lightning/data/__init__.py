"""Datamodules that yield dict batches ``{<modality>: Tensor, "label": Tensor}``."""

from pdmp_lightning.data.base import LABEL_KEY, InMemoryMultimodalDataModule, TensorMultimodalDataset
from pdmp_lightning.data.mfeat import UCIMultipleFeaturesDataModule
from pdmp_lightning.data.synthetic import SyntheticModality, SyntheticMultimodalDataModule

__all__ = [
    "LABEL_KEY",
    "InMemoryMultimodalDataModule",
    "SyntheticModality",
    "SyntheticMultimodalDataModule",
    "TensorMultimodalDataset",
    "UCIMultipleFeaturesDataModule",
]
