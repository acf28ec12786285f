"""CeFADataModule on tiny generated copies of the CASIA-SURF CeFA layout, and its recipe configs."""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from pdmp_lightning.cli import main
from pdmp_lightning.data import CeFADataModule
from pdmp_lightning.data.cefa import CEFA_MODALITIES, label_from_video_name
from pdmp_lightning.errors import PDMPConfigurationError

SIZE = 32
CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
#: The grey level of each modality's images (frame ``i`` adds ``10 * i``), so tests can tell them apart.
LEVELS = {"profile": 40, "depth": 120, "ir": 200}


# --- building tiny CeFA copies -----------------------------------------------------------------------


def write_video(folder: Path, frames: int) -> None:
    """A video folder with ``frames`` frames in each of profile (RGB), depth and ir (grey, a smaller size)."""
    for modality, level in LEVELS.items():
        (folder / modality).mkdir(parents=True, exist_ok=True)
        for i in range(frames):
            value = level + 10 * i
            image = (
                Image.new("RGB", (24, 20), (value, value, value))
                if modality == "profile"
                else Image.new("L", (20, 16), value)
            )
            image.save(folder / modality / f"{i + 1:04d}.jpg")


def write_text(path: Path, lines: Sequence[str], bom: bool = False, newline: str = "\n") -> None:
    path.write_bytes(("\ufeff" if bom else "").encode() + (newline.join(lines) + newline).encode())


def train_video(index: int) -> str:
    """``<race>_<subject>_<device>_<session>_<PAI>``: even videos live (PAI 1), odd ones screen attacks (PAI 4)."""
    return f"{1 + index % 3}_{index:03d}_1_1_{1 if index % 2 == 0 else 4}"


def make_cefa(root: Path, num_train: int = 8, num_dev: int = 4, frames: int = 3) -> dict[str, list[str]]:
    """The challenge layout: a frame-level train list (BOM, CRLF, a blank line), a folder-level dev list."""
    videos = {"train": [train_video(i) for i in range(num_train)], "dev": [f"{3000 + i:06d}" for i in range(num_dev)]}
    train_lines = []
    for video in videos["train"]:
        write_video(root / "train" / video, frames)
        label = label_from_video_name(video)
        train_lines += [f"train/{video}/profile/{i + 1:04d}.jpg {label}" for i in range(frames)]
    train_lines[:2] = train_lines[1::-1]  # the order of a video's frames comes from their names
    write_text(root / "4@1_train.txt", [*train_lines, ""], bom=True, newline="\r\n")
    for video in videos["dev"]:
        write_video(root / "dev" / video, 2)
    dev_lines = [f"dev/{video}/ {1 - i % 2}" for i, video in enumerate(videos["dev"])]  # trailing slashes
    write_text(root / "4@1_dev_ref.txt", dev_lines)
    return videos


def grey_level(image: torch.Tensor) -> int:
    """The mean grey level (0-255) of an evaluation image [3, H, W], undoing the normalisation."""
    return round(float((image * STD + MEAN).mean()) * 255)


# --- batches, splits, labels ------------------------------------------------------------------------


def test_batches_have_every_modality_aligned_and_labelled(tmp_path: Path) -> None:
    make_cefa(tmp_path)
    datamodule = CeFADataModule(str(tmp_path) + "/", batch_size=4, image_size=SIZE, val_fraction=0.25)
    assert datamodule.modalities == ["rgb", "depth", "ir"] and datamodule.num_classes == 2
    assert datamodule.class_names == ["spoof", "live"]
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert set(batch) == {"rgb", "depth", "ir", "label"}
    for name in CEFA_MODALITIES:
        assert batch[name].shape == (4, 3, SIZE, SIZE) and batch[name].dtype == torch.float32
    assert batch["label"].shape == (4,) and batch["label"].dtype == torch.int64
    # 8 videos of 3 listed frames; 2 whole videos (one live, one spoof) carved into validation.
    assert datamodule.split_sizes() == {"train": 18, "val": 6}
    val_videos = {sample.video for sample in datamodule.datasets["val"].clips}
    assert len(val_videos) == 2 and {label_from_video_name(Path(v).name) for v in val_videos} == {0, 1}
    train_videos = {sample.video for sample in datamodule.datasets["train"].clips}
    assert not train_videos & val_videos
    test = next(iter(datamodule.test_dataloader()))  # the dev list, built on demand: 4 folders of 2 frames
    assert datamodule.split_sizes()["test"] == 8
    assert test["label"].tolist() == [1, 1, 0, 0]  # list order, frames in order; dev labels 1, 0, 1, 0
    # The modalities of a frame are its own images: profile, depth and ir levels of frame 1 and 2.
    sample = datamodule.datasets["test"][1]
    assert [grey_level(sample[name]) for name in CEFA_MODALITIES] == pytest.approx([50, 130, 210], abs=2)


def test_any_subset_of_the_modalities(tmp_path: Path) -> None:
    make_cefa(tmp_path, num_train=4, num_dev=2)
    datamodule = CeFADataModule(str(tmp_path), batch_size=2, image_size=SIZE, modalities=["ir", "depth"])
    assert datamodule.modalities == ["depth", "ir"]  # always in the order rgb, depth, ir
    batch = next(iter(datamodule.test_dataloader()))
    assert set(batch) == {"depth", "ir", "label"} and batch["ir"].shape == (2, 3, SIZE, SIZE)
    only_rgb = CeFADataModule(str(tmp_path), image_size=SIZE, modalities=["rgb"])
    only_rgb.setup("test")
    assert set(only_rgb.datasets["test"][0]) == {"rgb", "label"}


def test_frames_per_video_takes_evenly_spaced_frames(tmp_path: Path) -> None:
    make_cefa(tmp_path, num_train=4, num_dev=2, frames=5)
    for video in ("003000", "003001"):
        write_video(tmp_path / "dev" / video, 5)
    datamodule = CeFADataModule(str(tmp_path), image_size=SIZE, frames_per_video=1, val_fraction=0.5)
    datamodule.setup()
    assert datamodule.split_sizes() == {"train": 2, "val": 2, "test": 2}
    assert grey_level(datamodule.datasets["test"][0]["rgb"]) == pytest.approx(60, abs=2)  # the middle of 5 frames
    two = CeFADataModule(str(tmp_path), image_size=SIZE, frames_per_video=2, val_fraction=0.5)
    two.setup("fit")
    samples = two.datasets["train"].clips + two.datasets["val"].clips
    chosen = [sample.files[0].name for sample in samples if sample.video.endswith(train_video(0))]
    assert chosen == ["0002.jpg", "0004.jpg"]  # frames 2 and 4 of 5 by name, though the list starts 0002, 0001


def test_validation_carve_and_samples_are_deterministic(tmp_path: Path) -> None:
    make_cefa(tmp_path, num_train=12, num_dev=2)

    def val_videos(seed: int) -> list[str]:
        datamodule = CeFADataModule(str(tmp_path), image_size=SIZE, val_fraction=0.5, seed=seed)
        datamodule.setup("validate")
        return [sample.video for sample in datamodule.datasets["val"].clips]

    assert val_videos(0) == val_videos(0)
    assert len(set(val_videos(0))) == 6
    assert any(val_videos(seed) != val_videos(0) for seed in (1, 2, 3))
    datamodule = CeFADataModule(str(tmp_path), image_size=SIZE)
    datamodule.setup("test")
    first, again = datamodule.datasets["test"][0], datamodule.datasets["test"][0]
    assert all(torch.equal(first[key], again[key]) for key in first)


def test_the_dev_list_is_the_validation_split_when_named(tmp_path: Path) -> None:
    make_cefa(tmp_path, num_train=4, num_dev=2)
    datamodule = CeFADataModule(
        str(tmp_path), image_size=SIZE, protocol="4@1", val_split="{protocol}_dev_ref.txt", val_fraction=0.5
    )
    datamodule.setup("fit")
    assert datamodule.split_sizes() == {"train": 12, "val": 4}  # nothing carved: all 4 train videos train


def test_full_release_lists_may_omit_labels(tmp_path: Path) -> None:
    """Lists of the full release's folders (``AF/AF-000/1_000_1_1_1``): labels from the PAI field."""
    names = [train_video(i) for i in range(4)]
    races = {"1": "AF", "2": "CA", "3": "EA"}
    folders = [f"{races[name[0]]}/{races[name[0]]}-{name[2:5]}/{name}" for name in names]
    for folder in folders:
        write_video(tmp_path / folder, 2)
    write_text(tmp_path / "train.txt", folders)
    write_text(tmp_path / "test.txt", folders[:2])
    datamodule = CeFADataModule(str(tmp_path), image_size=SIZE, train_split="train.txt", test_split="test.txt")
    assert [entry.label for entry in datamodule.entries["train"]] == [1, 0, 1, 0]
    datamodule.setup("test")
    assert [sample.label for sample in datamodule.datasets["test"].clips] == [1, 1, 0, 0]


# --- what is missing or wrong ------------------------------------------------------------------------


def test_missing_images_are_counted_warned_and_skipped(tmp_path: Path) -> None:
    make_cefa(tmp_path, num_train=4, num_dev=3)
    gone = tmp_path / "dev" / "003001" / "depth" / "0002.jpg"
    gone.unlink()
    empty = tmp_path / "dev" / "003002" / "profile"
    for path in empty.iterdir():
        path.unlink()
    datamodule = CeFADataModule(str(tmp_path), image_size=SIZE)
    with pytest.warns(UserWarning, match=r"2 of 5 listed frames or folders \(test: 2\) lack images") as record:
        datamodule.setup("test")
    message = str(record[0].message)
    assert f"{gone} (image absent)" in message and f"{empty} (no *.jpg frames in the folder)" in message
    assert datamodule.split_sizes() == {"test": 3}  # 003000: 2 frames, 003001: 1, 003002: none
    # Without depth, the depth image is not needed: only the empty folder is missing.
    no_depth = CeFADataModule(str(tmp_path), image_size=SIZE, modalities=["rgb", "ir"])
    with pytest.warns(UserWarning, match=r"1 of 5 listed"):
        no_depth.setup("test")
    assert no_depth.split_sizes() == {"test": 4}


def test_nothing_usable_is_a_configuration_error(tmp_path: Path) -> None:
    make_cefa(tmp_path, num_train=4, num_dev=1)
    for path in (tmp_path / "dev" / "003000" / "ir").iterdir():
        path.unlink()
    datamodule = CeFADataModule(str(tmp_path), image_size=SIZE)
    with pytest.warns(UserWarning), pytest.raises(PDMPConfigurationError, match=r"`root`.*test list has all"):
        datamodule.setup("test")


def test_bad_root_names_root_and_the_expected_layout(tmp_path: Path) -> None:
    with pytest.raises(PDMPConfigurationError, match=r"`root`.*nowhere.*4@2_train\.txt.*4@2_dev_ref\.txt.*profile"):
        CeFADataModule(str(tmp_path / "nowhere"), protocol="4@2")
    write_text(tmp_path / "4@1_train.txt", ["train/1_000_1_1_1/profile/0001.jpg 1"])
    with pytest.raises(PDMPConfigurationError, match=r"`root`.*lacks 4@1_dev_ref\.txt") as info:
        CeFADataModule(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_bad_lines_and_arguments(tmp_path: Path) -> None:
    make_cefa(tmp_path, num_train=2, num_dev=1)
    write_text(tmp_path / "4@1_dev_res.txt", ["dev/003000"])  # the challenge's unlabelled template
    with pytest.raises(PDMPConfigurationError, match=r"`test_split`.*line 1.*label 0 \(spoof\) or 1 \(live\)"):
        CeFADataModule(str(tmp_path), test_split="4@1_dev_res.txt")
    write_text(tmp_path / "bad.txt", ["dev/003000 1 extra"])
    with pytest.raises(PDMPConfigurationError, match=r"`val_split`.*bad\.txt line 1"):
        CeFADataModule(str(tmp_path), val_split="bad.txt")
    write_text(tmp_path / "bad.txt", ["../outside/003000 1"])
    with pytest.raises(PDMPConfigurationError, match=r"`val_split`.*relative path"):
        CeFADataModule(str(tmp_path), val_split="bad.txt")
    for argument, value in (
        ("modalities", ["rgb", "thermal"]),
        ("modalities", []),
        ("modalities", ["rgb", "rgb"]),
        ("protocol", "../4@1"),
        ("rgb_dir", "/abs"),
        ("image_size", 0),
        ("frames_per_video", 0),
        ("batch_size", True),
        ("val_fraction", 1.0),
        ("test_split", "../x.txt"),
    ):
        with pytest.raises(PDMPConfigurationError, match=f"`{argument}`"):
            CeFADataModule(str(tmp_path), **{argument: value})  # type: ignore[arg-type]


def test_datasets_pickle_for_worker_processes(tmp_path: Path) -> None:
    make_cefa(tmp_path, num_train=2, num_dev=1)
    datamodule = CeFADataModule(str(tmp_path), image_size=SIZE, modalities=["depth"])
    datamodule.setup("test")
    copy = pickle.loads(pickle.dumps(datamodule.datasets["test"]))
    assert copy[0]["depth"].shape == (3, SIZE, SIZE)


# --- the recipe configs -----------------------------------------------------------------------------


@pytest.fixture
def _no_pytest_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightningCLI warns when sys.argv holds arguments besides `args` (here: pytest's own)."""
    monkeypatch.setattr(sys, "argv", ["pdmp-lightning"])


@pytest.mark.usefixtures("_no_pytest_arguments")
@pytest.mark.parametrize("name", ["cefa", "cefa_joint"])
def test_recipe_configs_parse_and_fit_one_step(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = str(CONFIGS / f"{name}.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config, "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["class_path"] == "pdmp_lightning.data.CeFADataModule"
    assert set(printed["model"]["init_args"]["encoders"]) == {"rgb", "depth", "ir"}

    data = tmp_path / "CeFA"
    data.mkdir()
    make_cefa(data, num_train=4, num_dev=2, frames=2)
    monkeypatch.chdir(tmp_path)  # the configs' relative log folders land here
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path)}}
    (tmp_path / "logger.yaml").write_text(yaml.safe_dump({"trainer": {"logger": [logger]}}))
    arguments = [
        "fit",
        "--config",
        config,
        "--config",
        str(tmp_path / "logger.yaml"),
        f"--data.init_args.root={data}",
        f"--data.init_args.image_size={SIZE}",
        "--data.init_args.batch_size=8",  # the 6 train frames (1 of 4 videos is carved off) in one step
        "--data.init_args.num_workers=0",
        "--trainer.accelerator=cpu",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    if name == "cefa":  # a given ranking skips the probes, which would train each encoder alone first
        arguments += [
            "--trainer.callbacks.init_args.ranking=[depth, ir, rgb]",
            "--trainer.callbacks.init_args.start_epoch=0",
        ]
    cli = main(arguments)
    assert cli.trainer.global_step == 1
    results = json.loads((Path(cli.trainer.log_dir) / "results.json").read_text())
    assert 0 <= results["test"]["test_accuracy"] <= 1
