"""UCF101DataModule on tiny copies of the prepared layout, and the two UCF-101 configs on them."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from pdmp_lightning.data import UCF101DataModule
from pdmp_lightning.data.ucf101 import FlowTransform, flow_indices, ucf101_class
from pdmp_lightning.errors import PDMPConfigurationError

SIZE = 16
CLASSES = ["ApplyEyeMakeup", "Archery", "HandstandPushups"]
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


def write_text(path: Path, lines: Sequence[str], bom: bool = False, newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\ufeff" if bom else "").encode() + (newline.join(lines) + newline).encode())


def write_clip(root: Path, clip: str, frames: int = 6, flows: int = 5) -> None:
    """RGB frame ``i`` has grey level ``20 i + 10``; x-flow frame ``i`` level ``10 i + 100``, y-flow ``10 i``."""
    (root / "frames" / clip).mkdir(parents=True)
    (root / "flow" / clip).mkdir(parents=True)
    for i in range(frames):
        Image.new("RGB", (24, 20), (20 * i + 10,) * 3).save(root / "frames" / clip / f"{i + 1:05d}.jpg")
    for i in range(flows):
        Image.new("L", (24, 20), 10 * i + 100).save(root / "flow" / clip / f"flow_x_{i + 1:05d}.jpg")
        Image.new("L", (24, 20), 10 * i).save(root / "flow" / clip / f"flow_y_{i + 1:05d}.jpg")


def clip_name(cls: str, group: int, copy: int) -> str:
    # The official lists spell one class "HandStandPushups" in the clip names and "HandstandPushups" elsewhere.
    return f"v_{'HandStandPushups' if cls == 'HandstandPushups' else cls}_g{group:02d}_c{copy:02d}"


def make_ucf101(root: Path) -> dict[str, list[tuple[str, int]]]:
    """3 classes; trainlist01: 4 clips each (BOM, CRLF, a trailing slash, one line without a folder);
    testlist01: 2 each, no labels; trainlist02 / testlist02: one clip each."""
    lists = root / "ucfTrainTestlist"
    write_text(lists / "classInd.txt", [f"{i + 1} {name}" for i, name in enumerate(CLASSES)], bom=True, newline="\r\n")
    train = [(clip_name(cls, 8 + g, 1), label) for label, cls in enumerate(CLASSES) for g in range(4)]
    test = [(clip_name(cls, 1, 1 + c), label) for label, cls in enumerate(CLASSES) for c in range(2)]
    train_lines = [f"{CLASSES[label]}/{clip}.avi {label + 1}" for clip, label in train]
    train_lines[1] = f"{CLASSES[0]}/{train[1][0]}/ 1"  # a frame-folder line with a trailing slash
    train_lines[5] = f"{train[5][0]}.avi 2"  # no class folder: the class comes from the clip name
    write_text(lists / "trainlist01.txt", [*train_lines, ""], bom=True, newline="\r\n")
    write_text(lists / "testlist01.txt", [f"{CLASSES[label]}/{clip}.avi" for clip, label in test], newline="\r\n")
    write_text(lists / "trainlist02.txt", [f"{CLASSES[0]}/{test[0][0]}.avi 1", f"{CLASSES[1]}/{test[2][0]}.avi 2"])
    write_text(lists / "testlist02.txt", [f"{CLASSES[2]}/{train[8][0]}.avi/"])
    for clip, _ in train + test:
        write_clip(root, clip)
    return {"train": train, "test": test}


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[tuple[str, int]]]]:
    root = tmp_path_factory.mktemp("ucf101")
    return root, make_ucf101(root)


def copy_of(layout: tuple[Path, dict[str, list[tuple[str, int]]]], tmp_path: Path) -> Path:
    shutil.copytree(layout[0], tmp_path / "ucf", dirs_exist_ok=True)
    return tmp_path / "ucf"


def grey_levels(frames: torch.Tensor) -> list[int]:
    """The grey level of each RGB frame of an evaluation sample [3, T, H, W], undoing the normalisation."""
    return [round(float((frames * STD + MEAN)[:, t].mean()) * 255) for t in range(frames.shape[1])]


def flow_levels(flow: torch.Tensor) -> list[list[int]]:
    """The stored 0..255 level of each x and y flow frame of an evaluation sample [2, L, H, W]."""
    return [[round((float(flow[axis, t].mean()) + 1) * 255 / 2) for t in range(flow.shape[1])] for axis in (0, 1)]


def test_batches_labels_and_exact_split_sizes(layout: tuple[Path, dict[str, list[tuple[str, int]]]]) -> None:
    root, clips = layout
    datamodule = UCF101DataModule(str(root) + "/", batch_size=4, image_size=SIZE, val_fraction=0.25)
    assert datamodule.modalities == ["rgb", "flow"] and datamodule.num_classes == 3
    assert datamodule.class_names == CLASSES
    assert [(e.clip_id, e.label) for e in datamodule.entries["train"]] == clips["train"]
    assert [(e.clip_id, e.label) for e in datamodule.entries["test"]] == clips["test"]  # labels from classInd
    datamodule.setup()
    assert datamodule.split_sizes() == {"train": 9, "val": 3, "test": 6}  # round(12 * 0.25) = 3, one per class
    assert sorted(clip.label for clip in datamodule.datasets["val"].clips) == [0, 1, 2]
    batch = next(iter(datamodule.train_dataloader()))
    assert set(batch) == {"rgb", "flow", "label"}
    assert batch["rgb"].shape == (4, 3, 3, SIZE, SIZE) and batch["rgb"].dtype == torch.float32
    assert batch["flow"].shape == (4, 2, 3, SIZE, SIZE) and batch["flow"].dtype == torch.float32
    assert batch["label"].shape == (4,) and batch["label"].dtype == torch.int64
    test = next(iter(datamodule.test_dataloader()))
    assert test["label"].tolist() == [label for _, label in clips["test"][:4]]
    other = UCF101DataModule(str(root), image_size=SIZE, split=2)
    assert [e.label for e in other.entries["train"]] == [0, 1] and [e.label for e in other.entries["test"]] == [2]


def test_evaluation_frames_are_segment_centres_and_flow_keeps_its_values(
    layout: tuple[Path, dict[str, list[tuple[str, int]]]],
) -> None:
    root, _ = layout
    datamodule = UCF101DataModule(str(root), image_size=SIZE, num_frames=3, flow_length=2)
    datamodule.setup("test")
    sample = datamodule.datasets["test"][0]
    assert sample["rgb"].shape == (3, 3, SIZE, SIZE) and sample["flow"].shape == (2, 2, SIZE, SIZE)
    assert grey_levels(sample["rgb"]) == [30, 70, 110]  # frames 1, 3, 5 of 0..5
    assert flow_levels(sample["flow"]) == [[110, 130], [10, 30]]  # flow frames 1 and 3 of 0..4, x then y
    consecutive = UCF101DataModule(str(root), image_size=SIZE, flow_length=3, flow_sampling="consecutive")
    consecutive.setup("test")
    assert flow_levels(consecutive.datasets["test"][0]["flow"])[0] == [110, 120, 130]  # frames 1..3, centred
    many = UCF101DataModule(str(root), image_size=SIZE, num_frames=8, flow_length=7)
    many.setup("test")
    long = many.datasets["test"][0]
    assert grey_levels(long["rgb"]) == [10, 30, 50, 70, 90, 110, 110, 110]  # short clip: the last one repeated
    assert flow_levels(long["flow"])[1] == [0, 10, 20, 30, 40, 40, 40]


def test_sampling_is_deterministic_by_seed(layout: tuple[Path, dict[str, list[tuple[str, int]]]]) -> None:
    root, _ = layout

    def split_ids(seed: int) -> tuple[list[str], list[str]]:
        datamodule = UCF101DataModule(str(root), image_size=SIZE, val_fraction=0.25, seed=seed)
        datamodule.setup("fit")
        return [c.clip_id for c in datamodule.datasets["train"].clips], [
            c.clip_id for c in datamodule.datasets["val"].clips
        ]

    train, val = split_ids(0)
    assert split_ids(0) == (train, val) and split_ids(1) != (train, val)
    assert not set(train) & set(val) and len(train) + len(val) == 12
    datamodule = UCF101DataModule(str(root), image_size=SIZE)
    datamodule.setup("fit")

    def draw(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        sample = datamodule.datasets["train"][0]
        return [sample["rgb"], sample["flow"]]

    first = draw(3)
    assert all(torch.equal(a, b) for a, b in zip(first, draw(3), strict=True))  # training draws follow the seed
    assert any(not torch.equal(first[0], draw(seed)[0]) for seed in range(4, 10))  # random frames per segment
    assert segment_draws_stay_in_their_segments()


def segment_draws_stay_in_their_segments() -> bool:
    torch.manual_seed(0)
    draws = [flow_indices(12, 3, "segments", train=True) for _ in range(50)]
    starts = {flow_indices(12, 4, "consecutive", train=True)[0] for _ in range(50)}
    in_segments = all(4 * i <= index < 4 * (i + 1) for draw in draws for i, index in enumerate(draw))
    return in_segments and len({tuple(draw) for draw in draws}) > 1 and starts <= set(range(9)) and len(starts) > 1


def test_training_flip_negates_the_x_flow() -> None:
    stack = torch.zeros(2, 2, 8, 8, dtype=torch.uint8)
    stack[:, 0] = 255  # x: +20 px, y: -20 px everywhere
    transform = FlowTransform(4, train=True)
    torch.manual_seed(0)
    signs = {float(transform(stack)[0].mean()) for _ in range(20)}
    assert signs == {1.0, -1.0}
    assert all(float(transform(stack)[1].mean()) == -1.0 for _ in range(5))  # y untouched


def test_missing_files_are_counted_warned_and_skipped(
    layout: tuple[Path, dict[str, list[tuple[str, int]]]], tmp_path: Path
) -> None:
    root = copy_of(layout, tmp_path)
    clips = layout[1]
    no_flow_y = clips["train"][0][0]
    for path in (root / "flow" / no_flow_y).glob("flow_y_*.jpg"):
        path.unlink()
    no_frames = clips["test"][5][0]
    shutil.rmtree(root / "frames" / no_frames)
    datamodule = UCF101DataModule(str(root), image_size=SIZE, val_fraction=0.25)
    with pytest.warns(UserWarning, match=r"2 of 18 listed clips \(train: 1, test: 1\) have missing files") as record:
        datamodule.setup()
    message = str(record[0].message)
    assert f"{root / 'flow' / no_flow_y} (no flow_y*.jpg y-flow frames in the folder)" in message
    assert f"{root / 'frames' / no_frames} (frame folder absent)" in message
    assert datamodule.split_sizes() == {"train": 8, "val": 3, "test": 5}  # round(11 * 0.25) = 3


def test_bad_root_and_bad_lists_name_the_argument(
    layout: tuple[Path, dict[str, list[tuple[str, int]]]], tmp_path: Path
) -> None:
    expected = r"`root`.*nowhere.*classInd\.txt.*trainlist01\.txt.*testlist01\.txt"
    with pytest.raises(PDMPConfigurationError, match=expected):
        UCF101DataModule(str(tmp_path / "nowhere"))
    root = copy_of(layout, tmp_path)
    with pytest.raises(
        PDMPConfigurationError,
        match=r"`root`.*lacks ucfTrainTestlist/trainlist03\.txt, ucfTrainTestlist/testlist03\.txt \(`lists_dir`",
    ):
        UCF101DataModule(str(root), split=3)
    lists = root / "ucfTrainTestlist"
    write_text(lists / "testlist02.txt", ["Bowling/v_Bowling_g01_c01.avi"])  # not a class of classInd.txt
    with pytest.raises(PDMPConfigurationError, match=r"`lists_dir`.*testlist02\.txt line 1"):
        UCF101DataModule(str(root), split=2)
    write_text(lists / "trainlist02.txt", ["Archery/v_Archery_g01_c01.avi 1"])  # label of another class
    with pytest.raises(PDMPConfigurationError, match=r"`lists_dir`.*trainlist02\.txt line 1.*1-based label"):
        UCF101DataModule(str(root), split=2)
    write_text(lists / "classInd.txt", ["1 ApplyEyeMakeup", "3 Archery"])
    with pytest.raises(PDMPConfigurationError, match=r"`lists_dir`.*classInd\.txt line 2"):
        UCF101DataModule(str(root))
    for argument, value in (
        ("split", 4),
        ("flow_length", 0),
        ("flow_sampling", "random"),
        ("flow_y_prefix", "flow_x"),
        ("flow_x_dir", "/elsewhere"),
        ("frames_prefix", "a/b"),
    ):
        with pytest.raises(PDMPConfigurationError, match=f"`{argument}`"):
            UCF101DataModule(str(root), **{argument: value})  # type: ignore[arg-type]


def test_reads_the_two_stream_u_v_layout(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    write_text(lists / "classInd.txt", ["1 Archery", "2 Bowling"])
    names = [f"v_{cls}_g0{g}_c01" for cls in ("Archery", "Bowling") for g in (1, 2)]
    write_text(lists / "trainlist01.txt", [f"{n.split('_')[1]}/{n}.avi {1 + i // 2}" for i, n in enumerate(names)])
    write_text(lists / "testlist01.txt", [f"Bowling/{names[3]}.avi"])
    for name in names:
        (tmp_path / "jpegs_256" / name).mkdir(parents=True)
        Image.new("RGB", (20, 20)).save(tmp_path / "jpegs_256" / name / "frame000001.jpg")
        for axis in ("u", "v"):
            (tmp_path / "tvl1_flow" / axis / name).mkdir(parents=True)
            Image.new("L", (20, 20), 128).save(tmp_path / "tvl1_flow" / axis / name / "frame000001.jpg")
    datamodule = UCF101DataModule(
        str(tmp_path),
        image_size=SIZE,
        lists_dir="lists",
        frames_dir="jpegs_256",
        flow_x_dir="tvl1_flow/u",
        flow_y_dir="tvl1_flow/v",
        flow_x_prefix="",
        flow_y_prefix="",
        val_fraction=0.5,
    )
    datamodule.setup()
    assert datamodule.split_sizes() == {"train": 2, "val": 2, "test": 1}
    assert datamodule.datasets["test"][0]["flow"].shape == (2, 3, SIZE, SIZE)
    assert ucf101_class(names[2]) == "Bowling"


@pytest.mark.parametrize("name", ["ucf101", "ucf101_joint"])
def test_configs_parse_and_fit_one_step(
    name: str,
    layout: tuple[Path, dict[str, list[tuple[str, int]]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pdmp_lightning.cli import main

    monkeypatch.setattr(sys, "argv", ["pdmp-lightning"])
    monkeypatch.chdir(tmp_path)
    config = str(CONFIGS / f"{name}.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config, "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["max_epochs"] == 100 and printed["data"]["init_args"]["batch_size"] == 64
    encoders = printed["model"]["init_args"]["encoders"]
    assert {key: e["init_args"]["in_channels"] for key, e in encoders.items()} == {"rgb": 3, "flow": 2}
    expected = "pdmp_lightning.ModalityGradientMonitor" if name.endswith("joint") else "pdmp_lightning.PDMPCallback"
    assert expected in [c["class_path"] for c in printed["trainer"]["callbacks"]]
    overrides = [
        f"--data.init_args.root={layout[0]}",
        "--data.init_args.image_size=32",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
        "--data.init_args.val_fraction=0.25",
        "--trainer.fast_dev_run=1",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--test_after_fit=false",
        "--plot=false",
    ]
    if not name.endswith("joint"):
        overrides += [
            "--trainer.callbacks.init_args.start_epoch=0",
            "--trainer.callbacks.init_args.probes.max_epochs=1",
        ]
    cli = main(["fit", "--config", config, *overrides])
    assert cli.trainer.global_step == 1
    assert cli.model.modalities == ["rgb", "flow"] and cli.model.num_classes == 3
