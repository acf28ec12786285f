"""The reference multimodal model, its fusions and encoders."""

from pdmp_lightning.models.classifier import MultimodalClassifier
from pdmp_lightning.models.encoders import ConvEncoder, MLPEncoder, ResNet18Encoder, WaveformEncoder
from pdmp_lightning.models.fusion import ConcatFusion, FiLMFusion, Fusion, GatedFusion, SumFusion, build_fusion
from pdmp_lightning.models.transformers import SpectrogramTransformerEncoder, VisionTransformerEncoder

__all__ = [
    "ConcatFusion",
    "ConvEncoder",
    "FiLMFusion",
    "Fusion",
    "GatedFusion",
    "MLPEncoder",
    "MultimodalClassifier",
    "ResNet18Encoder",
    "SpectrogramTransformerEncoder",
    "SumFusion",
    "VisionTransformerEncoder",
    "WaveformEncoder",
    "build_fusion",
]
