"""UCIMultipleFeaturesDataModule: the shipped data, seeded splits, batches and train-only standardization."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from pdmp_lightning.data.base import TensorMultimodalDataset
from pdmp_lightning.data.mfeat import VIEW_DIMS, UCIMultipleFeaturesDataModule
from pdmp_lightning.errors import PDMPConfigurationError

ALL_VIEWS = ["fou", "fac", "kar", "pix", "zer", "mor"]
DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}


def _ready(**kwargs: object) -> UCIMultipleFeaturesDataModule:
    datamodule = UCIMultipleFeaturesDataModule(**kwargs)  # type: ignore[arg-type]
    datamodule.setup("fit")
    return datamodule


def _dataset(datamodule: UCIMultipleFeaturesDataModule) -> TensorMultimodalDataset:
    dataset = datamodule.splits["train"].dataset
    assert isinstance(dataset, TensorMultimodalDataset)
    return dataset


def _rows(datamodule: UCIMultipleFeaturesDataModule, split: str, view: str) -> Tensor:
    subset = datamodule.splits[split]
    return _dataset(datamodule).features[view][torch.as_tensor(subset.indices)]


@pytest.fixture(scope="module")
def raw() -> UCIMultipleFeaturesDataModule:
    return _ready(standardize=False)


@pytest.fixture(scope="module")
def standardized() -> UCIMultipleFeaturesDataModule:
    return _ready()


def test_views_dims_and_classes_are_known_before_setup() -> None:
    datamodule = UCIMultipleFeaturesDataModule()
    assert datamodule.modalities == ALL_VIEWS
    assert datamodule.feature_dims == DIMS == VIEW_DIMS
    assert datamodule.num_classes == 10
    assert not datamodule.splits
    chosen = UCIMultipleFeaturesDataModule(views=["mor", "pix"])
    assert chosen.modalities == ["mor", "pix"]
    assert chosen.feature_dims == {"mor": 6, "pix": 240}


def test_shipped_data_shapes_and_class_balance(raw: UCIMultipleFeaturesDataModule) -> None:
    dataset = _dataset(raw)
    assert len(dataset) == 2000
    for view, dim in DIMS.items():
        features = dataset.features[view]
        assert features.dtype == torch.float32
        assert features.shape == (2000, dim)
        assert torch.isfinite(features).all()
    assert dataset.labels.dtype == torch.int64
    assert torch.bincount(dataset.labels).tolist() == [200] * 10
    # The original order (200 zeros, then 200 ones, ...), which is what keeps the six views row-aligned.
    assert torch.equal(dataset.labels, torch.arange(10).repeat_interleave(200))
    # Integer-valued views are stored exactly.
    for view in ("fac", "pix"):
        assert torch.equal(dataset.features[view], dataset.features[view].round())


def test_split_sizes_cover_every_sample_once(raw: UCIMultipleFeaturesDataModule) -> None:
    assert raw.split_sizes() == {"test": 300, "val": 300, "train": 1400}
    indices = [index for split in raw.splits.values() for index in split.indices]
    assert sorted(indices) == list(range(2000))
    labels = torch.cat([_dataset(raw).labels[torch.as_tensor(split.indices)] for split in raw.splits.values()])
    assert torch.bincount(labels).tolist() == [200] * 10


def test_split_and_batches_follow_the_seed() -> None:
    first, second, other = _ready(seed=3), _ready(seed=3), _ready(seed=4)
    for split in ("train", "val", "test"):
        assert list(first.splits[split].indices) == list(second.splits[split].indices)
    assert list(first.splits["test"].indices) != list(other.splits["test"].indices)
    batches = []
    for datamodule in (first, second):
        torch.manual_seed(11)  # train shuffling follows the global seed
        batches.append((next(iter(datamodule.train_dataloader())), next(iter(datamodule.val_dataloader()))))
    for one, two in zip(batches[0], batches[1], strict=True):
        assert one.keys() == two.keys()
        assert all(torch.equal(one[key], two[key]) for key in one)


def test_batch_structure_for_a_subset_of_views() -> None:
    datamodule = UCIMultipleFeaturesDataModule(views=["kar", "mor"], batch_size=32)
    batch = next(iter(datamodule.val_dataloader()))
    assert set(batch) == {"kar", "mor", "label"}
    assert batch["kar"].dtype == batch["mor"].dtype == torch.float32
    assert batch["kar"].shape == (32, 64)
    assert batch["mor"].shape == (32, 6)
    assert batch["label"].dtype == torch.int64
    assert batch["label"].shape == (32,)
    assert int(batch["label"].min()) >= 0 and int(batch["label"].max()) < 10


def test_standardization_uses_train_statistics_only(
    raw: UCIMultipleFeaturesDataModule, standardized: UCIMultipleFeaturesDataModule
) -> None:
    for view in ALL_VIEWS:
        train = _rows(standardized, "train", view).double()
        raw_train = _rows(raw, "train", view).double()
        varying = raw_train.std(dim=0, correction=0) > 0
        assert torch.allclose(train.mean(dim=0), torch.zeros(DIMS[view], dtype=torch.float64), atol=1e-5)
        assert torch.allclose(train.std(dim=0, correction=0)[varying], torch.ones(1, dtype=torch.float64), atol=1e-4)
        mean, std = standardized.train_statistics[view]
        assert torch.allclose(mean.double(), raw_train.mean(dim=0), rtol=1e-5, atol=1e-6)
        for split in ("val", "test"):
            # Held-out rows use the train statistics, not their own ones.
            expected = (_rows(raw, split, view) - mean) / std
            assert torch.allclose(_rows(standardized, split, view), expected, rtol=1e-4, atol=1e-4)
    # Same seed, same split: standardizing changes the values, never which rows go where.
    assert raw.split_sizes() == standardized.split_sizes()
    assert list(raw.splits["test"].indices) == list(standardized.splits["test"].indices)


def test_setup_twice_does_not_standardize_twice(standardized: UCIMultipleFeaturesDataModule) -> None:
    before = _dataset(standardized).features["zer"].clone()
    standardized.setup("test")
    assert torch.equal(_dataset(standardized).features["zer"], before)


@pytest.mark.parametrize(
    ("views", "needle"),
    [
        (["fou", "image"], "unknown view(s) ['image']"),
        (["pix", "mor", "pix"], "repeated view(s) ['pix']"),
        ([], "non-empty"),
        ("pix", "pass a list"),
    ],
)
def test_bad_views_name_the_argument_value_and_allowed_names(views: object, needle: str) -> None:
    with pytest.raises(PDMPConfigurationError) as caught:
        UCIMultipleFeaturesDataModule(views=views)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("`views`: got ")
    assert repr(views) in message
    assert str(ALL_VIEWS) in message
    assert needle in message


def test_standardize_must_be_a_bool() -> None:
    with pytest.raises(PDMPConfigurationError, match="`standardize`"):
        UCIMultipleFeaturesDataModule(standardize="yes")  # type: ignore[arg-type]
