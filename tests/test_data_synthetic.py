"""The generated multimodal task: splits, determinism, and the accuracy each modality can reach."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pdmp_lightning import PDMPConfigurationError
from pdmp_lightning.data import SyntheticModality, SyntheticMultimodalDataModule
from pdmp_lightning.models import MLPEncoder


def test_split_sizes_and_batches() -> None:
    data = SyntheticMultimodalDataModule(num_samples=1000, batch_size=50)
    data.setup("fit")
    assert data.split_sizes() == {"test": 150, "val": 150, "train": 700}
    batch = next(iter(data.train_dataloader()))
    assert {k: (tuple(v.shape), v.dtype) for k, v in batch.items()} == {
        "audio": ((50, 16), torch.float32),
        "visual": ((50, 16), torch.float32),
        "label": ((50,), torch.int64),
    }
    assert data.modalities == ["audio", "visual"] and data.num_classes == 4
    assert data.feature_dims == {"audio": 16, "visual": 16}


def _split_indices(seed: int) -> dict[str, list[int]]:
    data = SyntheticMultimodalDataModule(num_samples=300, seed=seed)
    data.setup()
    return {name: list(split.indices) for name, split in data.splits.items()}


def test_same_seed_same_data_and_splits_other_seed_differs() -> None:
    first, second = SyntheticMultimodalDataModule(seed=3), SyntheticMultimodalDataModule(seed=3)
    features_a, labels_a = first.load()
    features_b, labels_b = second.load()
    assert torch.equal(labels_a, labels_b) and all(torch.equal(features_a[m], features_b[m]) for m in features_a)
    assert _split_indices(3) == _split_indices(3) != _split_indices(4)
    assert not torch.equal(SyntheticMultimodalDataModule(seed=4).load()[1], labels_a)


def test_slow_modality_reaches_its_accuracy_through_an_xor_code() -> None:
    spec = SyntheticModality("visual", accuracy=0.8, learning="slow", dim=8)
    features, labels = SyntheticMultimodalDataModule([spec], num_samples=20000, num_classes=4, seed=1).load()
    x = features["visual"]
    decoded = ((x[:, 0] * x[:, 1] > 0).long()) + 2 * ((x[:, 2] * x[:, 3] > 0).long())
    assert abs((decoded == labels).float().mean().item() - 0.8) < 0.01
    # No single coordinate tells the class: the code is an XOR.
    for column in range(4):
        for label in range(4):
            assert abs(x[labels == label, column].mean().item()) < 0.1


def _ring_decode(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The radial code read back: bit b is 1 where the point (x[2b], x[2b + 1]) lies on the outer ring."""
    return sum((x[:, 2 * b : 2 * b + 2].norm(dim=1) > 1.75).long() << b for b in range(bits))  # type: ignore[return-value]


@pytest.mark.parametrize(("num_classes", "accuracy", "dim"), [(4, 0.8, 8), (8, 0.95, 6), (5, 0.6, 16)])
def test_radial_modality_reaches_its_accuracy_through_ring_radii(num_classes: int, accuracy: float, dim: int) -> None:
    spec = SyntheticModality("visual", accuracy=accuracy, learning="radial", dim=dim)
    data = SyntheticMultimodalDataModule([spec], num_samples=20000, num_classes=num_classes, seed=1)
    features, labels = data.load()
    x, bits = features["visual"], (num_classes - 1).bit_length()
    assert abs((_ring_decode(x, bits) == labels).float().mean().item() - accuracy) < 0.01
    # No single coordinate's mean and no XOR of signs tells the class: only the radius does.
    for column in range(2 * bits):
        for label in range(num_classes):
            assert abs(x[labels == label, column].mean().item()) < 0.1
    xor = sum(((x[:, 2 * b] * x[:, 2 * b + 1] > 0).long()) << b for b in range(bits))
    assert abs((xor == labels).float().mean().item() - 1 / 2**bits) < 0.02


def test_radial_modality_is_slow_then_strong_for_an_mlp() -> None:
    spec = SyntheticModality("visual", accuracy=0.95, learning="radial", dim=16)
    data = SyntheticMultimodalDataModule([spec], num_samples=4000, num_classes=4, seed=0)
    data.setup()
    features, labels = data.load()
    train, val = (torch.tensor(data.splits[name].indices) for name in ("train", "val"))
    torch.manual_seed(0)
    model = nn.Sequential(MLPEncoder(16, [64], 64), nn.Linear(64, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    accuracies = []
    for _ in range(6):
        for batch in torch.randperm(len(train)).split(64):
            index = train[batch]
            loss = nn.functional.cross_entropy(model(features["visual"][index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            predicted = model(features["visual"][val]).argmax(dim=1)
        accuracies.append((predicted == labels[val]).float().mean().item())
    # Near chance (0.25) after the first epoch, strong a few epochs later.
    assert accuracies[0] < 0.5 < 0.85 < max(accuracies)


def test_radial_modality_is_deterministic() -> None:
    specs = [SyntheticModality("visual", 0.9, "radial", dim=8), SyntheticModality("audio", 0.6)]
    first = SyntheticMultimodalDataModule(specs, num_classes=8, seed=5).load()
    again = SyntheticMultimodalDataModule(specs, num_classes=8, seed=5).load()
    other = SyntheticMultimodalDataModule(specs, num_classes=8, seed=6).load()
    assert torch.equal(first[1], again[1]) and all(torch.equal(first[0][m], again[0][m]) for m in first[0])
    assert not torch.equal(first[0]["visual"], other[0]["visual"])


def test_fast_modality_reaches_its_accuracy_linearly() -> None:
    spec = SyntheticModality("audio", accuracy=0.7, learning="fast", dim=16, noise=0.1)
    features, labels = SyntheticMultimodalDataModule([spec], num_samples=20000, num_classes=4, seed=2).load()
    x = features["audio"]
    means = torch.stack([x[labels == c].mean(dim=0) for c in range(4)])
    prototypes = torch.stack([x[(labels == c)].median(dim=0).values for c in range(4)])
    nearest = torch.cdist(x, prototypes).argmin(dim=1)
    assert abs((nearest == labels).float().mean().item() - 0.7) < 0.02
    assert means.shape == (4, 16)


def test_three_modalities_and_any_class_count() -> None:
    specs = [
        SyntheticModality("rgb", 0.9, "slow", dim=10),
        SyntheticModality("depth", 0.5, "fast"),
        SyntheticModality("ir", 0.3, "fast"),
    ]
    data = SyntheticMultimodalDataModule(specs, num_samples=120, num_classes=5, batch_size=8)
    batch = next(iter(data.val_dataloader()))
    assert set(batch) == {"rgb", "depth", "ir", "label"} and int(batch["label"].max()) < 5


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (
            {"modalities": [SyntheticModality("a", 0.2)]},
            r"`modalities\['a'\].accuracy`: got 0.2; expected in \(1/4, 1\]",
        ),
        ({"modalities": [SyntheticModality("a", 0.9), SyntheticModality("a", 0.5)]}, r"`modalities`: got \['a', 'a'\]"),
        (
            {"modalities": [SyntheticModality("a", 0.9, "slow", dim=3)]},
            r"`modalities\['a'\].dim`: got 3; expected at least 4",
        ),
        (
            {"modalities": [SyntheticModality("a", 0.9, "radial", dim=5)], "num_classes": 8},
            r"`modalities\['a'\].dim`: got 5; expected at least 6",
        ),
        (
            {"modalities": [SyntheticModality("a", 0.9, "ring", dim=8)]},  # type: ignore[arg-type]
            r"`modalities\['a'\].learning`: got 'ring'; expected 'fast', 'slow' or 'radial'",
        ),
        ({"num_classes": 1}, r"`num_classes`: got 1"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, r"`val_fraction \+ test_fraction`: got 1.1"),
        ({"batch_size": 0}, r"`batch_size`: got 0"),
    ],
)
def test_rejects(kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(PDMPConfigurationError, match=pattern):
        SyntheticMultimodalDataModule(**kwargs)  # type: ignore[arg-type]
