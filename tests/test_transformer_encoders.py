"""The transformer encoders: shapes, gradient through every block, and PDMP with probes on them."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from pdmp_lightning import PDMPCallback, PDMPConfigurationError, ProbeSettings
from pdmp_lightning.data import TensorMultimodalDataset
from pdmp_lightning.models import MultimodalClassifier, SpectrogramTransformerEncoder, VisionTransformerEncoder
from tests.helpers import trainer


def vit(**kwargs: Any) -> VisionTransformerEncoder:
    return VisionTransformerEncoder(
        **{"image_size": 16, "patch_size": 8, "depth": 2, "width": 32, "heads": 4, **kwargs}
    )


def ast(**kwargs: Any) -> SpectrogramTransformerEncoder:
    options = {"input_size": (20, 14), "patch_size": 8, "stride": 6, "depth": 2, "width": 32, "heads": 2}
    return SpectrogramTransformerEncoder(**{**options, **kwargs})


@pytest.mark.parametrize(
    ("encoder", "shape"),
    [
        (lambda: vit(), (3, 3, 16, 16)),  # images
        (lambda: vit(), (3, 3, 5, 16, 16)),  # videos, pooled over 5 frames
        (lambda: vit(in_channels=10, temporal_pooling="max"), (3, 10, 16, 16)),  # stacked flow
        (lambda: ast(), (3, 1, 20, 14)),
        (lambda: ast(), (3, 20, 14)),  # without the channel dimension
    ],
)
def test_output_is_batch_by_width(encoder: Any, shape: tuple[int, ...]) -> None:
    module = encoder()
    assert module(torch.randn(*shape)).shape == (3, 32) and module.out_features == 32


def test_video_features_are_the_mean_of_the_frames_features() -> None:
    torch.manual_seed(0)
    module = vit().eval()
    video = torch.randn(2, 3, 4, 16, 16)
    per_frame = torch.stack([module(video[:, :, t]) for t in range(4)], dim=1)
    torch.testing.assert_close(module(video), per_frame.mean(dim=1))


def test_spectrogram_patches_overlap_as_the_stride_says() -> None:
    # (20 - 8) // 6 + 1 = 3 by (14 - 8) // 6 + 1 = 2 patches, and the class token.
    assert ast().transformer.encoder.pos_embedding.shape == (1, 3 * 2 + 1, 32)
    assert vit().transformer.encoder.pos_embedding.shape == (1, 2 * 2 + 1, 32)


@pytest.mark.parametrize("make", [vit, ast])
def test_the_gradient_reaches_every_block(make: Any) -> None:
    torch.manual_seed(0)
    module = make()
    x = torch.randn(4, 3, 16, 16) if make is vit else torch.randn(4, 1, 20, 14)
    module(x).pow(2).sum().backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and bool(parameter.grad.abs().sum() > 0), name
    blocks = {name.split(".")[3] for name, _ in module.named_parameters() if ".layers." in name}
    assert len(blocks) == 2  # both encoder blocks carry parameters (and got gradients above)


@pytest.mark.parametrize(
    ("make", "arguments", "pattern"),
    [
        (VisionTransformerEncoder, {"image_size": 20, "patch_size": 8}, r"`image_size`: got 20; expected a multiple"),
        (VisionTransformerEncoder, {"width": 30, "heads": 4}, r"`heads`: got 4; expected a divisor of width \(30\)"),
        (VisionTransformerEncoder, {"dropout": 1.0}, r"`dropout`: got 1.0; expected a number in \[0, 1\)"),
        (SpectrogramTransformerEncoder, {"input_size": (8, 4)}, r"`input_size`: got \(8, 4\); expected"),
        (SpectrogramTransformerEncoder, {"stride": 0}, r"`stride`: got 0"),
    ],
)
def test_bad_arguments_are_named(make: Any, arguments: dict[str, Any], pattern: str) -> None:
    with pytest.raises(PDMPConfigurationError, match=pattern):
        make(**arguments)


def test_an_input_of_another_size_is_an_error_that_names_the_size_argument() -> None:
    with pytest.raises(PDMPConfigurationError, match=r"`x`: got \(2, 3, 32, 32\).*image_size must match"):
        vit()(torch.randn(2, 3, 32, 32))
    with pytest.raises(PDMPConfigurationError, match=r"`x`: got \(2, 1, 20, 15\).*input_size must match"):
        ast()(torch.randn(2, 1, 20, 15))


def test_pdmp_probes_and_modulates_transformer_encoders() -> None:
    """Two steps of a fit with probes: the probes copy the transformers, rank them, and PDMP modulates."""
    generator = torch.Generator().manual_seed(0)
    count = 64
    labels = torch.randint(0, 3, (count,), generator=generator)
    visual = torch.randn(count, 3, 2, 16, 16, generator=generator)
    visual[torch.arange(count), labels] += 2.0  # the visual frames carry the label
    audio = torch.randn(count, 1, 20, 14, generator=generator)
    data = TensorMultimodalDataset({"audio": audio, "visual": visual}, labels)
    loader = DataLoader(data, batch_size=16)
    torch.manual_seed(0)
    model = MultimodalClassifier({"audio": ast(), "visual": vit()}, num_classes=3)
    callback = PDMPCallback(
        {"audio": "encoders.audio", "visual": "encoders.visual"}, probes=ProbeSettings(max_epochs=1), start_epoch=0
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer(callbacks=[callback], max_steps=2, precision="32-true").fit(
        model, train_dataloaders=loader, val_dataloaders=loader
    )
    assert callback.probe_outcome is not None and sorted(callback.ranking) == ["audio", "visual"]
    assert set(callback.coefficients) == {"audio", "visual"}
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("encoders.audio.") for n in moved) and any(n.startswith("encoders.visual.") for n in moved)
