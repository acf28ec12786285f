"""The generated multimodal task: splits, determinism, and the accuracy each modality can reach."""

from __future__ import annotations

import pytest
import torch

from pdmp_lightning import PDMPConfigurationError
from pdmp_lightning.data import SyntheticModality, SyntheticMultimodalDataModule


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
        ({"num_classes": 1}, r"`num_classes`: got 1"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, r"`val_fraction \+ test_fraction`: got 1.1"),
        ({"batch_size": 0}, r"`batch_size`: got 0"),
    ],
)
def test_rejects(kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(PDMPConfigurationError, match=pattern):
        SyntheticMultimodalDataModule(**kwargs)  # type: ignore[arg-type]
