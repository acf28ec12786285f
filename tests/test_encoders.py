"""Shapes, gradients, input checks and config-file construction of the per-modality encoders."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from jsonargparse import ArgumentParser
from torch import Tensor, nn

from pdmp_lightning.models.encoders import ConvEncoder, MLPEncoder, ResNet18Encoder, WaveformEncoder

B = 2


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _check_grad_reaches(encoder: nn.Module, x: Tensor, first: Tensor) -> None:
    encoder.train()
    encoder.zero_grad()
    encoder(x).square().mean().backward()
    assert first.grad is not None
    assert torch.isfinite(first.grad).all()
    assert first.grad.abs().sum() > 0


# --- MLPEncoder -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(B, 6), (B, 2, 3)], ids=["2d", "3d-flattened"])
def test_mlp_output_shape(shape: tuple[int, ...]) -> None:
    encoder = MLPEncoder(in_features=6, hidden=[16, 8], out_features=5)
    out = encoder(torch.randn(shape))
    assert out.shape == (B, 5)
    assert encoder.out_features == out.shape[1] == 5


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
def test_mlp_options(activation: Any) -> None:
    encoder = MLPEncoder(in_features=4, hidden=[], out_features=3, dropout=0.0, activation=activation)
    assert encoder(torch.randn(B, 4)).shape == (B, 3)
    with_dropout = MLPEncoder(in_features=4, hidden=[8], dropout=0.5, activation=activation)
    assert any(isinstance(m, nn.Dropout) for m in with_dropout.modules())
    assert with_dropout(torch.randn(B, 4)).shape == (B, with_dropout.out_features) == (B, 128)


def test_mlp_gradient_reaches_first_layer() -> None:
    encoder = MLPEncoder(in_features=6, hidden=[8], out_features=4, dropout=0.1)
    first = encoder.net[0]
    assert isinstance(first, nn.Linear)
    _check_grad_reaches(encoder, torch.randn(B, 6), first.weight)


@pytest.mark.parametrize("shape", [(6,), (B, 7), (B, 2, 2)])
def test_mlp_bad_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"expected \[batch, 6\]"):
        MLPEncoder(in_features=6)(torch.randn(shape))


@pytest.mark.parametrize(
    "kwargs", [{"in_features": 0}, {"in_features": 4, "dropout": 1.0}, {"in_features": 4, "hidden": [0]}]
)
def test_mlp_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="expected"):
        MLPEncoder(**kwargs)


# --- ConvEncoder ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 32])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_conv_output_shape(in_channels: int, size: int) -> None:
    encoder = ConvEncoder(in_channels=in_channels, channels=[4, 8], out_features=10)
    out = encoder(torch.randn(B, in_channels, size, size))
    assert out.shape == (B, 10)
    assert encoder.out_features == out.shape[1]


def test_conv_does_not_pool_below_one_pixel() -> None:
    # 8x8 halves to 1x1 after three stages; the later stages must keep 1x1 instead of failing.
    encoder = ConvEncoder(in_channels=1, channels=[4, 4, 4, 4, 4], out_features=6)
    assert encoder(torch.randn(B, 1, 8, 8)).shape == (B, 6)
    # A non-square input that reaches height 1 long before width 1.
    assert encoder(torch.randn(B, 1, 2, 16)).shape == (B, 6)
    # Default configuration on a 64x64 image and a 1-channel [batch, H, W] image.
    default = ConvEncoder()
    assert default(torch.randn(B, 1, 64, 64)).shape == (B, default.out_features) == (B, 128)
    assert default(torch.randn(B, 8, 8)).shape == (B, 128)


def test_conv_gradient_reaches_first_layer() -> None:
    encoder = ConvEncoder(in_channels=3, channels=[4, 8], out_features=4)
    first = encoder.features[0]
    assert isinstance(first, nn.Conv2d)
    _check_grad_reaches(encoder, torch.randn(B, 3, 8, 8), first.weight)


@pytest.mark.parametrize(
    ("in_channels", "shape"),
    [(3, (B, 1, 8, 8)), (3, (B, 8, 8)), (1, (B, 1, 2, 8, 8)), (1, (B, 64))],
)
def test_conv_bad_shape(in_channels: int, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=rf"expected images \[batch, {in_channels}, height, width\]"):
        ConvEncoder(in_channels=in_channels, channels=[4])(torch.randn(shape))


def test_conv_bad_arguments() -> None:
    with pytest.raises(ValueError, match="channels"):
        ConvEncoder(channels=[])
    with pytest.raises(ValueError, match="out_features"):
        ConvEncoder(out_features=0)


# --- ResNet18Encoder --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet_rgb() -> ResNet18Encoder:
    torch.manual_seed(0)
    return ResNet18Encoder(in_channels=3)


@pytest.fixture(scope="module")
def resnet_grey() -> ResNet18Encoder:
    torch.manual_seed(0)
    return ResNet18Encoder(in_channels=1)


def test_resnet_image_and_video_shapes(resnet_rgb: ResNet18Encoder) -> None:
    resnet_rgb.train()
    assert resnet_rgb.out_features == 512
    assert resnet_rgb(torch.randn(B, 3, 32, 32)).shape == (B, 512)
    assert resnet_rgb(torch.randn(B, 3, 3, 32, 32)).shape == (B, 512)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_resnet_pools_frames_over_time(resnet_rgb: ResNet18Encoder, pooling: Any) -> None:
    resnet_rgb.eval()
    resnet_rgb.temporal_pooling = pooling
    try:
        video = torch.randn(B, 3, 3, 32, 32)
        with torch.no_grad():
            pooled = resnet_rgb(video)
            per_frame = torch.stack([resnet_rgb(video[:, :, t]) for t in range(video.shape[2])], dim=1)
    finally:
        resnet_rgb.temporal_pooling = "mean"
    expected = per_frame.mean(dim=1) if pooling == "mean" else per_frame.amax(dim=1)
    assert pooled.shape == (B, 512)
    torch.testing.assert_close(pooled, expected, rtol=1e-4, atol=1e-5)


def test_resnet_max_pooling_option() -> None:
    encoder = ResNet18Encoder(in_channels=3, temporal_pooling="max")
    assert encoder.temporal_pooling == "max"


def test_resnet_one_channel_spectrograms(resnet_grey: ResNet18Encoder) -> None:
    resnet_grey.train()
    conv1 = resnet_grey.backbone.conv1
    assert isinstance(conv1, nn.Conv2d)
    assert conv1.in_channels == 1
    assert isinstance(resnet_grey.backbone.fc, nn.Identity)
    assert resnet_grey(torch.randn(B, 1, 32, 32)).shape == (B, 512)
    assert resnet_grey(torch.randn(B, 32, 32)).shape == (B, 512)
    assert resnet_grey(torch.randn(B, 1, 3, 32, 32)).shape == (B, 512)


def test_resnet_gradient_reaches_first_layer(resnet_rgb: ResNet18Encoder, resnet_grey: ResNet18Encoder) -> None:
    for encoder, x in ((resnet_rgb, torch.randn(B, 3, 3, 32, 32)), (resnet_grey, torch.randn(B, 32, 32))):
        conv1 = encoder.backbone.conv1
        assert isinstance(conv1, nn.Conv2d)
        _check_grad_reaches(encoder, x, conv1.weight)


@pytest.mark.parametrize("shape", [(B, 32, 32), (B, 1, 32, 32), (B, 512), (B, 3, 2, 2, 8, 8)])
def test_resnet_rgb_bad_shape(resnet_rgb: ResNet18Encoder, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"images \[batch, 3, height, width\] or videos \[batch, 3, time"):
        resnet_rgb(torch.randn(shape))


@pytest.mark.parametrize("shape", [(B, 3, 32, 32), (B, 512)])
def test_resnet_grey_bad_shape(resnet_grey: ResNet18Encoder, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"spectrograms \[batch, height, width\]"):
        resnet_grey(torch.randn(shape))


def test_resnet_bad_pooling() -> None:
    with pytest.raises(ValueError, match="temporal_pooling"):
        ResNet18Encoder(temporal_pooling="sum")  # type: ignore[arg-type]


def test_missing_torchvision_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(ImportError, match=r'pip install "pdmp-lightning\[vision\]"'):
        ResNet18Encoder()


# --- WaveformEncoder --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(B, 16000), (B, 1, 16000)], ids=["2d", "3d"])
@pytest.mark.parametrize(
    ("kwargs", "width"),
    [({"backbone": "resnet18"}, 512), ({"backbone": "conv"}, 128), ({"backbone": "conv", "out_features": 32}, 32)],
    ids=["resnet18", "conv", "conv-32"],
)
def test_waveform_output_shape(kwargs: dict[str, Any], width: int, shape: tuple[int, ...]) -> None:
    encoder = WaveformEncoder(**kwargs)
    assert encoder.out_features == width
    assert encoder.spectrogram(torch.randn(shape)).shape == (B, 1, 64, 16000 // 320 + 1)
    assert encoder(torch.randn(shape)).shape == (B, width)


def test_waveform_spectrogram_is_per_example() -> None:
    # The top_db clamp must use each example's own peak, not the loudest example of the batch.
    encoder = WaveformEncoder(backbone="conv", n_mels=32)
    quiet, loud = torch.randn(1, 8000) * 1e-3, torch.randn(1, 8000) * 1e3
    batched = encoder.spectrogram(torch.cat([quiet, loud]))
    torch.testing.assert_close(batched[:1], encoder.spectrogram(quiet))


def test_waveform_gradient_reaches_first_layer() -> None:
    encoder = WaveformEncoder(backbone="conv", out_features=8)
    assert isinstance(encoder.backbone, ConvEncoder)
    first = encoder.backbone.features[0]
    assert isinstance(first, nn.Conv2d)
    _check_grad_reaches(encoder, torch.randn(B, 16000), first.weight)
    resnet = WaveformEncoder(backbone="resnet18")
    assert isinstance(resnet.backbone, ResNet18Encoder)
    conv1 = resnet.backbone.backbone.conv1
    assert isinstance(conv1, nn.Conv2d)
    _check_grad_reaches(resnet, torch.randn(B, 1, 16000), conv1.weight)


@pytest.mark.parametrize("shape", [(16000,), (B, 2, 16000), (B, 1, 1, 16000)])
def test_waveform_bad_shape(shape: tuple[int, ...]) -> None:
    encoder = WaveformEncoder(backbone="conv", n_mels=32)
    with pytest.raises(ValueError, match=r"waveforms \[batch, samples\] or \[batch, 1, samples\]"):
        encoder(torch.randn(shape))


def test_waveform_bad_arguments() -> None:
    with pytest.raises(ValueError, match="out_features"):
        WaveformEncoder(backbone="resnet18", out_features=256)
    with pytest.raises(ValueError, match="hop_length"):
        WaveformEncoder(hop_length=0)


def test_missing_torchaudio_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchaudio.transforms", None)
    with pytest.raises(ImportError, match=r'pip install "pdmp-lightning\[audio\]"'):
        WaveformEncoder(backbone="conv")


# --- construction from a config (jsonargparse / LightningCLI) -----------------------------------------

CONFIG_CASES = [
    ("MLPEncoder", {"in_features": 6, "hidden": [8, 4], "out_features": 5, "activation": "gelu"}, (B, 6), 5),
    ("MLPEncoder", {"in_features": 6}, (B, 6), 128),
    ("ConvEncoder", {"in_channels": 3, "channels": [4, 8], "out_features": 7}, (B, 3, 8, 8), 7),
    ("ConvEncoder", {}, (B, 1, 8, 8), 128),
    ("ResNet18Encoder", {"in_channels": 1, "temporal_pooling": "max"}, (B, 1, 3, 32, 32), 512),
    ("WaveformEncoder", {"backbone": "conv", "out_features": 16, "n_mels": 32}, (B, 16000), 16),
    ("WaveformEncoder", {}, (B, 16000), 512),
]


@pytest.mark.parametrize(("name", "init_args", "shape", "width"), CONFIG_CASES)
def test_build_from_jsonargparse_config(
    name: str, init_args: dict[str, Any], shape: tuple[int, ...], width: int
) -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--enc", type=nn.Module)
    config = {"class_path": f"pdmp_lightning.models.encoders.{name}", "init_args": init_args}
    cfg = parser.parse_args(["--enc", str(config).replace("'", '"')])
    # ``instantiate_classes`` is deprecated (in favour of ``instantiate``) from jsonargparse 4.49.
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    encoder = instantiate(cfg).enc
    assert type(encoder).__name__ == name
    assert encoder.out_features == width
    encoder.eval()
    with torch.no_grad():
        assert encoder(torch.randn(shape)).shape == (B, width)


@pytest.mark.parametrize("cls", [MLPEncoder, ConvEncoder, ResNet18Encoder, WaveformEncoder])
def test_help_comes_from_docstrings(cls: type[nn.Module]) -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "enc")
    text = " ".join(parser.format_help().split())
    assert "(type:" in text
    description = {
        MLPEncoder: "Widths of the hidden layers",
        ConvEncoder: "Output channels of each convolutional stage",
        ResNet18Encoder: "How per-frame features of a video are pooled over time",
        WaveformEncoder: "Number of mel bands",
    }[cls]
    assert description in text


def test_bad_config_value_is_rejected_by_the_parser() -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--enc", type=nn.Module)
    config = (
        '{"class_path": "pdmp_lightning.models.encoders.MLPEncoder",'
        ' "init_args": {"in_features": 6, "activation": "swish"}}'
    )
    with pytest.raises(Exception, match="activation"):
        parser.parse_args(["--enc", config])
