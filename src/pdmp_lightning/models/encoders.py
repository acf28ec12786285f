"""Per-modality encoders: plain ``nn.Module``\\ s mapping one modality's batch to features ``[batch, out_features]``.

Every encoder exposes an integer ``out_features`` (the width of its output), so a fusion head can be
sized from it, and takes only simple typed arguments, so it can be chosen from a YAML config with
``class_path: pdmp_lightning.models.encoders.<Name>`` and ``init_args``.

* ``MLPEncoder``: feature vectors, such as the views of the UCI multi-feature data sets.
* ``ConvEncoder``: a small CNN for small images (8x8 digits up to 64x64 crops).
* ``ResNet18Encoder``: ResNet-18 trained from scratch (no pretrained weights), for video frames
  (frames folded into the batch and pooled over time) and 1-channel spectrograms, following the
  ResNet-18 recipe of the PDMP paper and OGM-GE. Needs ``pip install "pdmp-lightning[vision]"``.
* ``WaveformEncoder``: raw audio; a log-mel front end (torchaudio transforms only, no file
  decoding) followed by a ResNet-18 or small CNN backbone. Needs ``pip install "pdmp-lightning[audio]"``.

Transformer encoders with the same contract are in ``pdmp_lightning.models.transformers``
(``VisionTransformerEncoder``,
``SpectrogramTransformerEncoder``).

Examples:
    >>> import torch
    >>> encoder = MLPEncoder(in_features=6, hidden=[16], out_features=8)
    >>> encoder(torch.randn(2, 6)).shape
    torch.Size([2, 8])
    >>> encoder.out_features
    8
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from pdmp_lightning.errors import check_int, config_error

__all__ = ["ConvEncoder", "MLPEncoder", "ResNet18Encoder", "WaveformEncoder"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def _shape_error(argument: str, x: Tensor, allowed: str) -> ValueError:
    return config_error(argument, tuple(x.shape), allowed)


def _check_positive(argument: str, value: int) -> None:
    check_int(argument, value, 1, allowed="a positive integer")


def encode_frames(encode: Callable[[Tensor], Tensor], video: Tensor, pooling: str) -> Tensor:
    """Encodes a video ``[B, C, T, H, W]`` frame by frame (frames folded into the batch), pooled over time."""
    batch, channels, time, height, width = video.shape
    frames = video.transpose(1, 2).reshape(batch * time, channels, height, width)
    features = encode(frames).reshape(batch, time, -1)
    return features.amax(dim=1) if pooling == "max" else features.mean(dim=1)


class MLPEncoder(nn.Module):
    """A multilayer perceptron for feature vectors (for example the views of the UCI multi-feature data).

    Each hidden layer is ``Linear -> activation (-> Dropout)``; a final ``Linear`` maps to
    ``out_features`` (no activation after it). Inputs with more than two dimensions are flattened
    from dimension 1.

    Args:
        in_features: Width of the (flattened) input, ``[batch, in_features]``.
        hidden: Widths of the hidden layers, in order; empty for a single linear map.
        out_features: Width of the output features.
        dropout: Dropout probability after each hidden activation (0 disables dropout).
        activation: Nonlinearity after each hidden layer.

    Examples:
        >>> import torch
        >>> MLPEncoder(16, hidden=[32], out_features=8)(torch.randn(2, 16)).shape
        torch.Size([2, 8])
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (128,),
        out_features: int = 128,
        dropout: float = 0.0,
        activation: Literal["relu", "gelu", "tanh"] = "relu",
    ) -> None:
        super().__init__()
        _check_positive("in_features", in_features)
        _check_positive("out_features", out_features)
        for width in hidden:
            _check_positive("hidden", width)
        if not 0.0 <= dropout < 1.0:
            raise config_error("dropout", dropout, "a probability in [0, 1)")
        if activation not in _ACTIVATIONS:
            raise config_error("activation", activation, f"one of {sorted(_ACTIVATIONS)}")
        self.in_features: int = in_features
        self.out_features: int = out_features
        layers: list[nn.Module] = []
        width_in = in_features
        for width in hidden:
            layers += [nn.Linear(width_in, width), _ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width_in = width
        layers.append(nn.Linear(width_in, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Encodes ``x`` of shape ``[batch, in_features]`` (or ``[batch, ...]`` flattening to it)."""
        if x.dim() < 2:
            raise _shape_error("x", x, f"[batch, {self.in_features}] (or [batch, ...] flattening to it)")
        x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise _shape_error("x", x, f"[batch, {self.in_features}] after flattening from dim 1")
        out: Tensor = self.net(x)
        return out


class _MaxPool2IfPossible(nn.Module):
    """2x2 max pooling that leaves a spatial dimension alone once it is already of size 1."""

    def forward(self, x: Tensor) -> Tensor:
        kernel = (2 if x.shape[-2] > 1 else 1, 2 if x.shape[-1] > 1 else 1)
        if kernel == (1, 1):
            return x
        return F.max_pool2d(x, kernel)


class ConvEncoder(nn.Module):
    """A small CNN for small images ``[batch, channels, height, width]``.

    Each stage is ``Conv3x3 -> BatchNorm -> ReLU -> MaxPool2`` (the pooling is skipped along a
    spatial dimension that is already 1, so 8x8 inputs work with many stages); then global average
    pooling and a ``Linear`` to ``out_features``. With ``in_channels=1``, ``[batch, height, width]``
    is accepted too.

    Args:
        in_channels: Number of input channels (1 for grey images or spectrograms, 3 for RGB).
        channels: Output channels of each convolutional stage, in order (at least one stage).
        out_features: Width of the output features.

    Examples:
        >>> import torch
        >>> encoder = ConvEncoder(in_channels=1, channels=[8, 16], out_features=32)
        >>> encoder(torch.randn(2, 1, 16, 16)).shape
        torch.Size([2, 32])
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (32, 64), out_features: int = 128) -> None:
        super().__init__()
        _check_positive("in_channels", in_channels)
        _check_positive("out_features", out_features)
        if len(channels) == 0:
            raise config_error("channels", list(channels), "at least one stage width")
        for width in channels:
            _check_positive("channels", width)
        self.in_channels: int = in_channels
        self.out_features: int = out_features
        stages: list[nn.Module] = []
        width_in = in_channels
        for width in channels:
            stages += [
                nn.Conv2d(width_in, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                _MaxPool2IfPossible(),
            ]
            width_in = width
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width_in, out_features)

    def forward(self, x: Tensor) -> Tensor:
        """Encodes images ``[batch, in_channels, height, width]`` into ``[batch, out_features]``."""
        if x.dim() == 3 and self.in_channels == 1:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            allowed = f"images [batch, {self.in_channels}, height, width]"
            if self.in_channels == 1:
                allowed += " or [batch, height, width]"
            raise _shape_error("x", x, allowed)
        features = self.pool(self.features(x)).flatten(1)
        out: Tensor = self.fc(features)
        return out


class ResNet18Encoder(nn.Module):
    """ResNet-18 trained from scratch for images, video frames and 1-channel spectrograms.

    The torchvision ``resnet18`` (built with ``weights=None``: nothing is downloaded) with its
    classifier replaced by the identity, so the output is the 512-wide pooled feature. When
    ``in_channels != 3`` the first convolution is replaced by one taking ``in_channels`` channels.

    Accepted inputs:

    * images ``[batch, in_channels, height, width]``;
    * videos / frame stacks ``[batch, in_channels, time, height, width]``: as in OGM-GE and the PDMP
      paper, frames are folded into the batch, encoded one by one and their features pooled over time
      (``temporal_pooling``);
    * spectrograms ``[batch, height, width]`` when ``in_channels == 1``.

    Args:
        in_channels: Number of input channels (3 for RGB frames, 1 for spectrograms).
        temporal_pooling: How per-frame features of a video are pooled over time.

    Examples:
        >>> import torch
        >>> frames = torch.randn(2, 3, 4, 32, 32)  # [batch, channels, time, height, width]
        >>> ResNet18Encoder(in_channels=3)(frames).shape  # pooled over the 4 frames
        torch.Size([2, 512])
    """

    def __init__(self, in_channels: int = 3, temporal_pooling: Literal["mean", "max"] = "mean") -> None:
        super().__init__()
        _check_positive("in_channels", in_channels)
        if temporal_pooling not in ("mean", "max"):
            raise config_error("temporal_pooling", temporal_pooling, "'mean' or 'max'")
        try:
            from torchvision.models import resnet18
        except ImportError as err:
            raise ImportError('ResNet18Encoder needs torchvision: pip install "pdmp-lightning[vision]"') from err
        self.in_channels: int = in_channels
        self.temporal_pooling: str = temporal_pooling
        self.out_features: int = 512
        backbone: nn.Module = resnet18(weights=None)
        if in_channels != 3:
            backbone.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
        backbone.fc = nn.Identity()
        self.backbone = backbone

    def _expected(self) -> str:
        c = self.in_channels
        allowed = f"images [batch, {c}, height, width] or videos [batch, {c}, time, height, width]"
        if c == 1:
            allowed += " or spectrograms [batch, height, width]"
        return allowed

    def forward(self, x: Tensor) -> Tensor:
        """Encodes images, videos or spectrograms (see the class docstring) into ``[batch, 512]``."""
        if x.dim() == 3 and self.in_channels == 1:
            x = x.unsqueeze(1)
        if x.dim() not in (4, 5) or x.shape[1] != self.in_channels:
            raise _shape_error("x", x, self._expected())
        if x.dim() == 4:
            out: Tensor = self.backbone(x)
            return out
        return encode_frames(self.backbone, x, self.temporal_pooling)


class WaveformEncoder(nn.Module):
    """Raw-audio encoder: a log-mel spectrogram front end followed by a 2-D CNN backbone.

    Waveforms ``[batch, samples]`` or ``[batch, 1, samples]`` go through
    ``torchaudio.transforms.MelSpectrogram`` and ``AmplitudeToDB`` (per example, ``top_db=80``)
    to ``[batch, 1, n_mels, frames]``, then through ``ResNet18Encoder`` (``in_channels=1``)
    or ``ConvEncoder``. Only torchaudio's transforms are used; decode files elsewhere.

    Args:
        sample_rate: Sampling rate of the waveforms, in Hz.
        n_mels: Number of mel bands.
        n_fft: FFT size of the short-time Fourier transform.
        hop_length: Hop between STFT frames, in samples.
        backbone: ``"resnet18"`` (512 output features) or ``"conv"`` (a small ``ConvEncoder``).
        out_features: Output width of the ``"conv"`` backbone (128 when omitted); must be omitted or
            512 with ``"resnet18"``.

    Examples:
        >>> import torch
        >>> WaveformEncoder(backbone="conv", out_features=16)(torch.randn(2, 16000)).shape
        torch.Size([2, 16])
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 64,
        n_fft: int = 1024,
        hop_length: int = 320,
        backbone: Literal["resnet18", "conv"] = "resnet18",
        out_features: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("sample_rate", sample_rate),
            ("n_mels", n_mels),
            ("n_fft", n_fft),
            ("hop_length", hop_length),
        ):
            _check_positive(name, value)
        if out_features is not None:
            _check_positive("out_features", out_features)
        if backbone not in ("resnet18", "conv"):
            raise config_error("backbone", backbone, "'resnet18' or 'conv'")
        if backbone == "resnet18" and out_features not in (None, 512):
            raise config_error(
                "out_features",
                out_features,
                "None or 512 with backbone='resnet18'",
                "use backbone='conv' for another width, or add a projection after the encoder",
            )
        try:
            import torchaudio.transforms as audio_transforms
        except ImportError as err:
            raise ImportError('WaveformEncoder needs torchaudio: pip install "pdmp-lightning[audio]"') from err
        self.sample_rate: int = sample_rate
        self.melspec = audio_transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels
        )
        self.to_db = audio_transforms.AmplitudeToDB(stype="power", top_db=80.0)
        self.backbone: ResNet18Encoder | ConvEncoder
        if backbone == "resnet18":
            self.backbone = ResNet18Encoder(in_channels=1)
        else:
            self.backbone = ConvEncoder(in_channels=1, out_features=out_features or 128)
        self.out_features: int = self.backbone.out_features

    def spectrogram(self, waveform: Tensor) -> Tensor:
        """The log-mel spectrogram ``[batch, 1, n_mels, frames]`` of ``[batch, samples]`` or ``[batch, 1, samples]``."""
        if waveform.dim() == 3 and waveform.shape[1] == 1:
            waveform = waveform.squeeze(1)
        if waveform.dim() != 2:
            raise _shape_error("waveform", waveform, "waveforms [batch, samples] or [batch, 1, samples]")
        if not waveform.is_floating_point():
            waveform = waveform.float()
        mel: Tensor = self.melspec(waveform)
        # AmplitudeToDB applies top_db per leading index of a 4-D input: one example at a time.
        log_mel: Tensor = self.to_db(mel.unsqueeze(1))
        return log_mel

    def forward(self, waveform: Tensor) -> Tensor:
        """Encodes raw waveforms ``[batch, samples]`` or ``[batch, 1, samples]`` into ``[batch, out_features]``."""
        out: Tensor = self.backbone(self.spectrogram(waveform))
        return out
