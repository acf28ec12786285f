"""The official repositories' ``AVClassifier`` pattern at a small size, wrapped in a plain LightningModule.

As in GeWu-Lab/OGM-GE_CVPR2022 ``models/basic_model.py`` and lihong2303/AGM_ICCV2023
``model/CREMAD_net.py``: two conv nets that return feature maps (the visual one folds its frames into
the batch, ``[B*T, C, H, W]``), pooling in the classifier's forward, and a fusion module called with
tensors, ``fusion_module(a, v)``, returning ``(logits, features)`` from its linear layer ``fc_out``.
No method of :mod:`pdmp_lightning.protocol`: the baselines reach it with ``head=`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from pdmp_lightning.data import TensorMultimodalDataset

CLASSES, FRAMES, WIDTH = 4, 2, 8
MODALITIES = {"audio": "model.audio_net", "visual": "model.visual_net"}
HEAD = "model.fusion_module.fc_out"


def conv_net(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, WIDTH, 3, padding=1, bias=False),
        nn.BatchNorm2d(WIDTH),
        nn.ReLU(),
    )


class VisualNet(nn.Module):
    """``[B, C, T, H, W]`` -> ``[B*T, WIDTH, H, W]``: frames folded into the batch, as the official resnet18."""

    def __init__(self) -> None:
        super().__init__()
        self.net = conv_net(3)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        out: Tensor = self.net(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
        return out


class ConcatFusion(nn.Module):
    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.fc_out = nn.Linear(input_dim, output_dim)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        encoded = torch.cat((x, y), dim=1)
        return self.fc_out(encoded), encoded


class AVClassifier(nn.Module):
    """The official late-fusion classifier; ``pad_*`` zero an input, as the official AGM's ``AVClassifier``."""

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = gain  # scales the pooled features (large head gradients: AGM's clip acts)
        self.audio_net = conv_net(1)
        self.visual_net = VisualNet()
        self.fusion_module = ConcatFusion(2 * WIDTH, CLASSES)

    def features(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        a = self.audio_net(audio)
        v = self.visual_net(visual)
        (_, c, h, w) = v.size()
        v = v.view(audio.shape[0], -1, c, h, w).permute(0, 2, 1, 3, 4)
        a = torch.flatten(F.adaptive_avg_pool2d(a, 1), 1)
        v = torch.flatten(F.adaptive_avg_pool3d(v, 1), 1)
        return self.gain * a, self.gain * v

    def forward(self, audio: Tensor, visual: Tensor, pad_audio: bool = False, pad_visual: bool = False) -> Tensor:
        if pad_audio:
            audio = torch.zeros_like(audio, device=audio.device)
        if pad_visual:
            visual = torch.zeros_like(visual, device=visual.device)
        a, v = self.features(audio, visual)
        out, _ = self.fusion_module(a, v)
        return out


class AVModule(pl.LightningModule):
    """The user's LightningModule: ``self.model = AVClassifier()``, cross-entropy, nothing else."""

    def __init__(self, optimizer: Callable[[Any], torch.optim.Optimizer], gain: float = 1.0) -> None:
        super().__init__()
        self.model = AVClassifier(gain)
        self.optimizer = optimizer

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        logits = self.model(batch["audio"], batch["visual"])
        return F.cross_entropy(logits, batch["label"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.parameters())


def av_module(optimizer: Callable[[Any], torch.optim.Optimizer], seed: int = 0, gain: float = 1.0) -> AVModule:
    torch.manual_seed(seed)
    return AVModule(optimizer, gain).double()


def av_loader(steps: int, batch: int, seed: int = 1) -> DataLoader[Any]:
    """Audio ``[N, 1, 8, 8]``, visual ``[N, 3, T, 8, 8]``; visual carries the label more strongly."""
    generator = torch.Generator().manual_seed(seed)
    count = steps * batch
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    audio = torch.randn(count, 1, 8, 8, generator=generator, dtype=torch.float64)
    visual = torch.randn(count, 3, FRAMES, 8, 8, generator=generator, dtype=torch.float64)
    audio[torch.arange(count), 0, labels, labels] += 1.0
    visual[torch.arange(count), :, :, labels, labels] += 2.0
    return DataLoader(TensorMultimodalDataset({"audio": audio, "visual": visual}, labels), batch_size=batch)
