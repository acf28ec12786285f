"""Datamodules that yield dict batches ``{<modality>: Tensor, "label": Tensor}``."""

from pdmp_lightning.data.base import LABEL_KEY, InMemoryMultimodalDataModule, TensorMultimodalDataset

__all__ = ["LABEL_KEY", "InMemoryMultimodalDataModule", "TensorMultimodalDataset"]
