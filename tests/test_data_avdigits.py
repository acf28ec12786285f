"""AVDigitsDataModule: batches, image/utterance pairing, splits, seeded determinism and the espeak-ng cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from pdmp_lightning.data.avdigits import NUM_FRAMES, WORDS, AVDigitsDataModule
from pdmp_lightning.data.base import TensorMultimodalDataset
from pdmp_lightning.errors import PDMPConfigurationError

pytest.importorskip("sklearn")
pytest.importorskip("soundfile")
pytest.importorskip("torchaudio")

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

#: Small settings: 20 espeak-ng calls, small spectrograms and images.
SMALL: dict[str, Any] = {"utterances_per_class": 2, "n_mels": 16, "image_size": 16}


def _ready(cache_dir: Path, **kwargs: Any) -> AVDigitsDataModule:
    datamodule = AVDigitsDataModule(cache_dir=str(cache_dir), **{**SMALL, **kwargs})
    datamodule.setup("fit")
    return datamodule


def _dataset(datamodule: AVDigitsDataModule) -> TensorMultimodalDataset:
    dataset = datamodule.splits["train"].dataset
    assert isinstance(dataset, TensorMultimodalDataset)
    return dataset


def _assert_same_data(first: AVDigitsDataModule, second: AVDigitsDataModule) -> None:
    one, two = _dataset(first), _dataset(second)
    assert torch.equal(one.labels, two.labels)
    for modality in ("audio", "visual"):
        assert torch.equal(one.features[modality], two.features[modality])
    for key, value in first.pairing.items():
        assert torch.equal(value, second.pairing[key])
    assert first.utterances == second.utterances
    for split in ("train", "val", "test"):
        assert list(first.splits[split].indices) == list(second.splits[split].indices)


def _forbid_espeak(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> Any:
        raise AssertionError("espeak-ng was called although the cache holds the data")

    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    monkeypatch.setattr(subprocess, "run", fail)
    monkeypatch.setattr(subprocess, "Popen", fail)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("avdigits-cache")


@pytest.fixture(scope="module")
def built(cache_dir: Path) -> AVDigitsDataModule:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    return _ready(cache_dir, seed=3)


def test_modalities_classes_and_shapes_are_known_before_setup(tmp_path: Path) -> None:
    datamodule = AVDigitsDataModule(cache_dir=str(tmp_path), n_mels=24, image_size=28)
    assert datamodule.modalities == ["audio", "visual"]
    assert datamodule.num_classes == 10
    assert datamodule.feature_shapes == {"audio": (1, 24, NUM_FRAMES), "visual": (1, 28, 28)}
    assert datamodule.cache_path.parent == tmp_path
    assert not datamodule.splits
    assert not list(tmp_path.iterdir())  # nothing generated before prepare_data / setup


@needs_espeak
def test_batches_have_the_documented_shapes_and_dtypes(built: AVDigitsDataModule) -> None:
    batch = next(iter(built.val_dataloader()))
    assert set(batch) == {"audio", "visual", "label"}
    assert batch["audio"].dtype == batch["visual"].dtype == torch.float32
    assert batch["audio"].shape == (64, 1, 16, NUM_FRAMES)
    assert batch["visual"].shape == (64, 1, 16, 16)
    assert batch["label"].dtype == torch.int64
    assert batch["label"].shape == (64,)
    dataset = _dataset(built)
    assert int(dataset.labels.min()) == 0 and int(dataset.labels.max()) == 9
    for tensor in dataset.features.values():
        assert torch.isfinite(tensor).all()
    # Spectrograms are standardized per clip; images are scaled to [0, 1] (no visual noise by default).
    audio = dataset.features["audio"]
    assert torch.allclose(audio.mean(dim=(1, 2, 3)), torch.zeros(len(audio)), atol=1e-4)
    assert float(dataset.features["visual"].min()) >= 0 and float(dataset.features["visual"].max()) <= 1


@needs_espeak
def test_each_image_is_paired_with_an_utterance_of_its_class(built: AVDigitsDataModule) -> None:
    from sklearn.datasets import load_digits

    labels = _dataset(built).labels
    digits = load_digits()
    assert len(labels) == len(digits.target) == 1797
    assert torch.equal(built.pairing["image_index"], torch.arange(1797))
    assert torch.equal(labels, torch.from_numpy(digits.target).long()[built.pairing["image_index"]])
    assert torch.equal(built.pairing["utterance_word"], labels)
    assert len(built.utterances) == 10 * SMALL["utterances_per_class"]
    spoken = [built.utterances[index].word for index in built.pairing["utterance_index"].tolist()]
    assert spoken == labels.tolist()
    assert [utterance.word for utterance in built.utterances] == [w for w in range(10) for _ in range(2)]
    assert built.utterances[0].command(Path("x.wav"))[-1] == WORDS[built.utterances[0].word] == "zero"
    # The visual rows are the digit images themselves, upsampled (no noise by default).
    images = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)
    upsampled = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(_dataset(built).features["visual"], upsampled)


@needs_espeak
def test_split_sizes_cover_every_sample_once(built: AVDigitsDataModule) -> None:
    assert built.split_sizes() == {"test": 270, "val": 270, "train": 1257}
    indices = sorted(index for split in built.splits.values() for index in split.indices)
    assert indices == list(range(1797))


@needs_espeak
def test_the_seed_fixes_every_tensor(built: AVDigitsDataModule, tmp_path: Path) -> None:
    # A fresh cache directory: everything is generated again, espeak-ng included.
    again = _ready(tmp_path / "again", seed=3)
    assert again.cache_path.name == built.cache_path.name
    _assert_same_data(built, again)
    other = _ready(tmp_path / "other", seed=4)
    assert other.cache_path.name != built.cache_path.name
    assert not torch.equal(_dataset(other).features["audio"], _dataset(built).features["audio"])
    assert other.utterances != built.utterances
    assert list(other.splits["test"].indices) != list(built.splits["test"].indices)
    # The images do not depend on the seed (no visual noise), only which samples land in which split.
    assert torch.equal(_dataset(other).features["visual"], _dataset(built).features["visual"])


@needs_espeak
def test_the_cache_is_reused_without_espeak(
    built: AVDigitsDataModule, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert built.cache_path.is_file()
    assert [path.name for path in cache_dir.iterdir()] == [built.cache_path.name]  # no temporary file left
    _forbid_espeak(monkeypatch)
    _assert_same_data(built, _ready(cache_dir, seed=3))


@needs_espeak
def test_other_arguments_use_another_cache_file(built: AVDigitsDataModule, cache_dir: Path) -> None:
    noisier = AVDigitsDataModule(cache_dir=str(cache_dir), **{**SMALL, "noise_snr_db": -20.0}, seed=3)
    assert noisier.cache_path != built.cache_path
    assert AVDigitsDataModule(cache_dir=str(cache_dir), **SMALL, seed=3).cache_path == built.cache_path


@needs_espeak
def test_an_unreadable_cache_is_regenerated(built: AVDigitsDataModule, tmp_path: Path) -> None:
    fresh = AVDigitsDataModule(cache_dir=str(tmp_path), **SMALL, seed=3)
    fresh.cache_path.write_bytes(b"not a torch file")
    fresh.setup("fit")
    _assert_same_data(built, fresh)
    assert torch.load(fresh.cache_path, weights_only=True)["parameters"] == fresh.generation_parameters


def test_missing_espeak_without_cache_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    datamodule = AVDigitsDataModule(cache_dir=str(tmp_path / "cache"), **SMALL)
    with pytest.raises(RuntimeError, match=r"apt-get install espeak-ng") as raised:
        datamodule.setup("fit")
    assert str(datamodule.cache_path) in str(raised.value)
    assert not datamodule.cache_path.exists()


def test_missing_scikit_learn_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes `from sklearn.datasets import ...` fail
    datamodule = AVDigitsDataModule(cache_dir=str(tmp_path), **SMALL)
    with pytest.raises(ImportError, match=r"pip install scikit-learn"):
        datamodule.setup("fit")
    assert not datamodule.cache_path.exists()


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        ({"utterances_per_class": 0}, "`utterances_per_class`"),
        ({"utterances_per_class": True}, "`utterances_per_class`"),
        ({"image_size": 4}, "`image_size`"),
        ({"n_mels": 2.5}, "`n_mels`"),
        ({"n_mels": 500}, "STFT"),
        ({"noise_snr_db": float("nan")}, "`noise_snr_db`"),
        ({"snr_spread_db": -1.0}, "`snr_spread_db`"),
        ({"visual_noise": -0.1}, "`visual_noise`"),
        ({"cache_dir": 3}, "`cache_dir`"),
        ({"seed": 1.5}, "`seed`"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "less than 1"),
    ],
)
def test_bad_arguments_are_rejected(arguments: dict[str, Any], needle: str) -> None:
    with pytest.raises(PDMPConfigurationError, match="expected") as raised:
        AVDigitsDataModule(**arguments)
    assert needle in str(raised.value)


CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


@pytest.mark.parametrize(("name", "method"), [
    ("avdigits", "pdmp_lightning.PDMPCallback"),
    ("avdigits_joint", "pdmp_lightning.ModalityGradientMonitor"),
])  # fmt: skip
def test_example_configs_parse(
    name: str, method: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pdmp_lightning.cli import main

    monkeypatch.setattr(sys, "argv", ["pdmp-lightning"])
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["data"]["class_path"] == "pdmp_lightning.data.avdigits.AVDigitsDataModule"
    callbacks = [callback["class_path"] for callback in config["trainer"]["callbacks"]]
    assert callbacks[0] == "lightning.pytorch.callbacks.ModelCheckpoint" and callbacks[-1] == method
    loggers = config["trainer"]["logger"]
    assert [logger["init_args"]["name"] for logger in loggers] == [name, "tensorboard"]


@needs_espeak
def test_joint_config_trains_on_the_cached_data(
    built: AVDigitsDataModule, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pdmp_lightning.cli import main

    monkeypatch.setattr(sys, "argv", ["pdmp-lightning"])
    small = [f"--data.init_args.{key}={value}" for key, value in {**SMALL, "seed": 3}.items()]
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "avdigits_joint.yaml"),
            f"--data.init_args.cache_dir={cache_dir}",
            *small,
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.limit_test_batches=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--plot=false",
        ]
    )
    assert cli.trainer.log_dir is not None
    results = json.loads((Path(cli.trainer.log_dir) / "results.json").read_text())
    assert 0 <= results["test"]["test_accuracy"] <= 1
    assert [path.name for path in cache_dir.iterdir()] == [built.cache_path.name]  # the cache was reused
