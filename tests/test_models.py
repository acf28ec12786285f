"""The reference classifier and its four fusions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pdmp_lightning import PDMPConfigurationError
from pdmp_lightning.data import SyntheticMultimodalDataModule
from pdmp_lightning.models import MLPEncoder, MultimodalClassifier, build_fusion
from pdmp_lightning.models.fusion import FUSIONS
from tests.helpers import trainer

DIMS = {"audio": 5, "visual": 7, "depth": 3}


def features(batch: int = 4, names: tuple[str, ...] = ("audio", "visual", "depth")) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {m: torch.randn(batch, DIMS[m], generator=generator, requires_grad=True) for m in names}


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("names", [("audio", "visual"), ("audio", "visual", "depth")])
def test_each_fusion_gives_logits_and_gradients_to_every_modality(fusion: str, names: tuple[str, ...]) -> None:
    module = build_fusion(fusion, {m: DIMS[m] for m in names}, num_classes=6, hidden=8)
    inputs = features(names=names)
    logits = module(inputs)
    assert logits.shape == (4, 6)
    logits.sum().backward()
    for modality, tensor in inputs.items():
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, modality


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_split_logits_add_up_to_the_fused_logits(fusion: str) -> None:
    module = build_fusion(fusion, DIMS, num_classes=6)
    inputs = features()
    shares = module.split_logits(inputs)  # type: ignore[operator]
    torch.testing.assert_close(sum(shares.values()), module(inputs))


@pytest.mark.parametrize("fusion", ["film", "gated"])
def test_conditioned_fusions_depend_on_the_condition(fusion: str) -> None:
    module = build_fusion(fusion, DIMS, num_classes=6, hidden=8, condition="depth")
    inputs = features()
    changed = dict(inputs, depth=inputs["depth"] + 1.0)
    assert not torch.allclose(module(inputs), module(changed))
    with pytest.raises(ValueError, match="condition 'speech'"):
        build_fusion(fusion, DIMS, num_classes=6, condition="speech")


def classifier(**kwargs: object) -> MultimodalClassifier:
    encoders = {m: MLPEncoder(in_features=16, hidden=[8], out_features=8) for m in ("audio", "visual")}
    return MultimodalClassifier(encoders, num_classes=4, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("fusion", FUSIONS)
def test_classifier_trains_with_each_fusion(fusion: str) -> None:
    torch.manual_seed(0)
    model = classifier(fusion=fusion, unimodal_heads=True, unimodal_loss_weight=0.5)
    data = SyntheticMultimodalDataModule(num_samples=200, batch_size=32)
    run = trainer(max_steps=-1, max_epochs=2, precision="32-true")
    run.fit(model, datamodule=data)
    assert {"val_accuracy", "val_macro_f1", "train_loss", "train_unimodal_loss"} <= set(run.callback_metrics)
    metrics = run.test(model, datamodule=data, verbose=False)[0]
    assert set(metrics) == {"test_accuracy", "test_macro_f1"}


def test_classifier_pieces() -> None:
    model = classifier(unimodal_heads=True)
    batch = {"audio": torch.randn(3, 16), "visual": torch.randn(3, 16)}
    encoded = model.encode(batch)
    assert {m: tuple(t.shape) for m, t in encoded.items()} == {"audio": (3, 8), "visual": (3, 8)}
    torch.testing.assert_close(model(batch), model.fuse(encoded))
    assert {m: tuple(t.shape) for m, t in model.unimodal_logits(encoded).items()} == {"audio": (3, 4), "visual": (3, 4)}
    assert model.predict_step(batch, 0).sum(dim=1).allclose(torch.ones(3))
    with pytest.raises(KeyError, match=r"no \['visual'\]"):
        model({"audio": batch["audio"]})
    with pytest.raises(RuntimeError, match="unimodal_heads=False"):
        classifier().unimodal_logits(encoded)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"modalities": ["audio", "depth"]}, r"`encoders`: got \['audio', 'visual'\]; expected one encoder for each"),
        ({"fusion": "mean"}, r"`fusion`: got 'mean'"),
        ({"fusion_condition": "depth"}, r"`fusion_condition`: got 'depth'"),
        ({"unimodal_loss_weight": 1.0}, r"`unimodal_loss_weight`: got 1.0.*only with unimodal_heads=True"),
    ],
)
def test_classifier_rejects(kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(PDMPConfigurationError, match=pattern):
        classifier(**kwargs)


def test_encoder_without_out_features_needs_feature_dims() -> None:
    encoders: dict[str, nn.Module] = {"audio": nn.Sequential(nn.Linear(4, 3)), "visual": MLPEncoder(4, out_features=5)}
    with pytest.raises(PDMPConfigurationError, match=r"`encoders\['audio'\]`: got .Sequential.*feature_dims"):
        MultimodalClassifier(encoders, num_classes=2)
    model = MultimodalClassifier(encoders, num_classes=2, feature_dims={"audio": 3})
    assert model.feature_dims == {"audio": 3, "visual": 5}
