"""Datamodules that yield dict batches ``{<modality>: Tensor, "label": Tensor}``."""

from pdmp_lightning.data.audiovisual import AVEDataModule, CREMADDataModule, KineticsSoundsDataModule
from pdmp_lightning.data.avdigits import AVDigitsDataModule
from pdmp_lightning.data.base import LABEL_KEY, InMemoryMultimodalDataModule, TensorMultimodalDataset
from pdmp_lightning.data.cefa import CeFADataModule
from pdmp_lightning.data.mfeat import UCIMultipleFeaturesDataModule
from pdmp_lightning.data.synthetic import SyntheticModality, SyntheticMultimodalDataModule
from pdmp_lightning.data.ucf101 import UCF101DataModule

__all__ = [
    "LABEL_KEY",
    "AVDigitsDataModule",
    "AVEDataModule",
    "CREMADDataModule",
    "CeFADataModule",
    "InMemoryMultimodalDataModule",
    "KineticsSoundsDataModule",
    "SyntheticModality",
    "SyntheticMultimodalDataModule",
    "TensorMultimodalDataset",
    "UCF101DataModule",
    "UCIMultipleFeaturesDataModule",
]
