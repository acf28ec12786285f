"""File-based audio-visual datamodules: CREMA-D, AVE and Kinetics-Sounds as their preprocessing leaves them.

Batches are ``{"audio": float32 [B, ...], "visual": float32 [B, 3, T, H, W], "label": int64 [B]}``;
``num_classes`` and ``modalities`` are known right after ``__init__``.
"""

from pdmp_lightning.data.audiovisual.ave import AVEDataModule
from pdmp_lightning.data.audiovisual.base import (
    AudioVisualClipDataset,
    AudioVisualDataModule,
    Clip,
    ClipDataset,
    ClipListDataModule,
)
from pdmp_lightning.data.audiovisual.cremad import CREMAD_EMOTIONS, CREMADDataModule
from pdmp_lightning.data.audiovisual.kinetics_sounds import KineticsSoundsDataModule
from pdmp_lightning.data.audiovisual.media import FRAME_SELECTIONS, FrameSelection, Resampler, frame_indices
from pdmp_lightning.data.audiovisual.splits import ClipEntry

__all__ = [
    "CREMAD_EMOTIONS",
    "FRAME_SELECTIONS",
    "AVEDataModule",
    "AudioVisualClipDataset",
    "AudioVisualDataModule",
    "CREMADDataModule",
    "Clip",
    "ClipDataset",
    "ClipEntry",
    "ClipListDataModule",
    "FrameSelection",
    "KineticsSoundsDataModule",
    "Resampler",
    "frame_indices",
]
