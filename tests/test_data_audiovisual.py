"""CREMA-D, AVE and Kinetics-Sounds datamodules on tiny copies of their on-disk layouts."""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from torch import nn

from pdmp_lightning.data.audiovisual import (
    CREMAD_EMOTIONS,
    AudioVisualDataModule,
    AVEDataModule,
    CREMADDataModule,
    KineticsSoundsDataModule,
)
from pdmp_lightning.data.audiovisual.media import (
    frame_indices,
    load_audio,
    natural_sort_key,
    select_frame_indices,
)
from pdmp_lightning.errors import PDMPConfigurationError

SIZE = 32
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)


# --- building tiny dataset copies ----------------------------------------------------------------


def write_frames(folder: Path, count: int, names: str = "{:05d}.jpg", first: int = 1) -> None:
    """``count`` small solid-colour jpgs; frame ``i`` has grey level ``20 * i + 10``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (24, 20), (20 * i + 10,) * 3).save(folder / names.format(first + i))


def write_text(path: Path, lines: Sequence[str], bom: bool = False, newline: str = "\n") -> None:
    text = newline.join(lines) + newline
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())


def write_wav(path: Path, seconds: float = 0.4, rate: int = 22050) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    soundfile.write(path, wave, rate)
    return wave


def cremad_clip(index: int) -> tuple[str, str]:
    emotion = CREMAD_EMOTIONS[index % 6]
    return f"10{index:02d}_IEO_{emotion}_XX", emotion


def make_cremad(root: Path, num_train: int = 24, num_test: int = 6, audio: str = "wav") -> list[tuple[str, str]]:
    """CREMA-D layout; the train.csv has a BOM, CRLF endings and a blank line."""
    clips = [cremad_clip(i) for i in range(num_train + num_test)]
    rows = [f"{clip},{emotion}" for clip, emotion in clips]
    write_text(root / "train.csv", [*rows[:num_train], ""], bom=True, newline="\r\n")
    write_text(root / "test.csv", rows[num_train:])
    for clip, _ in clips:
        write_frames(root / "Image-01-FPS" / clip, 2)
        if audio == "wav":
            write_wav(root / "AudioWAV" / f"{clip}.wav")
        elif audio == "npy":
            (root / "audio").mkdir(exist_ok=True)
            np.save(root / "audio" / f"{clip}.npy", np.ones((20, 128), dtype=np.float32))
        else:
            (root / "audio").mkdir(exist_ok=True)
            torch.save(torch.ones(20, 128), root / "audio" / f"{clip}.pt")
    return clips


AVE_CATEGORIES = ["Church bell", "Dog", "Acoustic guitar"]


def make_ave(root: Path) -> dict[str, list[str]]:
    """AVE layout: 6 / 3 / 3 videos, audio as .pkl (one also as .npy holding 2.0)."""
    videos: dict[str, list[str]] = {}
    for split, file, count in (("train", "trainSet.txt", 6), ("val", "valSet.txt", 3), ("test", "testSet.txt", 3)):
        names = [f"{split}{i}vid" for i in range(count)]
        lines = [f"{AVE_CATEGORIES[i % 3]}&{name}&good&0&10" for i, name in enumerate(names)]
        write_text(root / file, lines, bom=split == "val", newline="\r\n" if split == "train" else "\n")
        videos[split] = names
        for name in names:
            write_frames(root / "Image-01-FPS-SE" / name, 4, names="frame_{}.jpg")
            (root / "Audio-1004-SE").mkdir(exist_ok=True)
            with (root / "Audio-1004-SE" / f"{name}.pkl").open("wb") as handle:
                pickle.dump(np.zeros((257, 16), dtype=np.float32), handle)
    np.save(root / "Audio-1004-SE" / "train0vid.npy", np.full((257, 16), 2.0, dtype=np.float32))
    write_text(root / "Annotations.txt", ["Category&VideoID&Quality&StartTime&EndTime", "Zither&other&good&0&10"])
    return videos


def make_kinetics(root: Path, whitespace: bool = False, labels: Sequence[str] = ("0", "1", "30")) -> list[str]:
    """Kinetics-Sounds layout: 9 train and 3 test clips, labels cycling through ``labels``."""
    names = [f"-yt{i:03d}_{i}" for i in range(12)]
    rows = [
        f"{name}  x  {labels[i % len(labels)]}" if whitespace else f"{name},10,{labels[i % len(labels)]}"
        for i, name in enumerate(names)
    ]
    write_text(root / "my_train.txt", rows[:9], bom=True, newline="\r\n")
    write_text(root / "my_test.txt", rows[9:])
    (root / "audio").mkdir(parents=True, exist_ok=True)
    for name in names:
        write_frames(root / "visual" / name, 3, names="frame_{:05d}.jpg")
        np.save(root / "audio" / f"{name}.npy", np.zeros((1024, 128), dtype=np.float32))
    return names


def frame_levels(visual: torch.Tensor) -> list[int]:
    """The grey level of each frame of an evaluation sample [3, T, H, W], undoing the normalisation."""
    pixels = visual * STD + MEAN
    return [round(float(pixels[:, t].mean()) * 255) for t in range(visual.shape[1])]


# --- CREMA-D --------------------------------------------------------------------------------------


def test_cremad_batches_from_wav(tmp_path: Path) -> None:
    clips = make_cremad(tmp_path)
    datamodule = CREMADDataModule(str(tmp_path) + "/", batch_size=4, num_frames=2, image_size=SIZE)
    assert datamodule.num_classes == 6 and datamodule.modalities == ["audio", "visual"]
    assert datamodule.class_names == ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert set(batch) == {"audio", "visual", "label"}
    assert batch["audio"].shape == (4, 1, 257, 188) and batch["audio"].dtype == torch.float32
    assert batch["visual"].shape == (4, 3, 2, SIZE, SIZE) and batch["visual"].dtype == torch.float32
    assert batch["label"].shape == (4,) and batch["label"].dtype == torch.int64
    test = next(iter(datamodule.test_dataloader()))  # builds the test split on demand
    expected = [CREMAD_EMOTIONS.index(emotion) for _, emotion in clips[24:28]]
    assert test["label"].tolist() == expected
    assert datamodule.split_sizes() == {"train": 22, "val": 2, "test": 6}


def test_cremad_spectrogram_follows_the_recipe(tmp_path: Path) -> None:
    # Broadband float noise reaching beyond [-1, 1], so the clipping matters.
    wave = np.random.default_rng(0).uniform(-1.5, 1.5, int(1.3 * 22050)).astype(np.float32)
    soundfile.write(tmp_path / "a.wav", wave, 22050, subtype="FLOAT")
    spectrogram = load_audio(tmp_path / "a.wav")
    # Reference: tile to 3 s, clip, centred reflect-padded frames, periodic Hann, |rfft|, log(. + 1e-7).
    signal = np.clip(np.tile(wave, 3)[: 22050 * 3], -1, 1).astype(np.float64)
    padded = np.pad(signal, 256, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)
    frames = np.stack([padded[i * 353 : i * 353 + 512] * window for i in range(188)], axis=1)
    reference = np.log(np.abs(np.fft.rfft(frames, axis=0)) + 1e-7)
    assert spectrogram.shape == (1, 257, 188)
    # log amplifies float32 rounding only where |S| is tiny: compare where the spectrum has energy.
    loud = reference > -5
    assert loud.mean() > 0.9
    np.testing.assert_allclose(spectrogram[0].numpy()[loud], reference[loud], atol=1e-3)
    # Another rate is resampled to 22,050 Hz and a short clip tiled: same shape.
    write_wav(tmp_path / "b.wav", seconds=0.2, rate=16000)
    assert load_audio(tmp_path / "b.wav").shape == (1, 257, 188)


@pytest.mark.parametrize("kind", ["npy", "pt"])
def test_cremad_precomputed_audio(tmp_path: Path, kind: str) -> None:
    make_cremad(tmp_path, num_train=6, num_test=2, audio=kind)
    datamodule = CREMADDataModule(str(tmp_path), batch_size=2, image_size=SIZE, audio=kind)  # type: ignore[arg-type]
    batch = next(iter(datamodule.test_dataloader()))
    assert batch["audio"].shape == (2, 1, 20, 128) and batch["audio"].dtype == torch.float32
    assert batch["visual"].shape == (2, 3, 1, SIZE, SIZE)


def test_cremad_validation_split_is_stratified_disjoint_and_seeded(tmp_path: Path) -> None:
    clips = make_cremad(tmp_path, num_train=24)

    def split_ids(seed: int) -> tuple[list[str], list[str]]:
        datamodule = CREMADDataModule(str(tmp_path), image_size=SIZE, val_fraction=0.25, seed=seed)
        datamodule.setup("validate")  # builds train and val together
        train, val = datamodule.datasets["train"], datamodule.datasets["val"]
        return [c.clip_id for c in train.clips], [c.clip_id for c in val.clips]

    train, val = split_ids(0)
    assert len(val) == 6 and len(train) == 18
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(clip for clip, _ in clips[:24])
    assert sorted(clip.split("_")[2] for clip in val) == sorted(CREMAD_EMOTIONS)  # one per emotion
    assert split_ids(0) == (train, val)
    assert split_ids(1) != (train, val)
    datamodule = CREMADDataModule(str(tmp_path), image_size=SIZE)
    assert [e.clip_id for e in datamodule.entries["test"]] == [clip for clip, _ in clips[24:]]


@pytest.mark.parametrize(
    ("selection", "nine", "two"),
    [
        (None, [10, 30, 50], [10, 30, 30]),  # CREMA-D's official rule: the first T in sorted order
        ("first", [10, 30, 50], [10, 30, 30]),
        ("segment_starts", [10, 70, 130], [10, 10, 10]),  # frames floor(N / T) * i: 0, 3, 6; 0, 0, 0
        ("centres", [30, 90, 150], [10, 30, 30]),  # frames 1, 4, 7 of 0..8; the last one repeated
    ],
)
def test_frame_selection_rules(tmp_path: Path, selection: str | None, nine: list[int], two: list[int]) -> None:
    make_cremad(tmp_path, num_train=6, num_test=2)
    clip = cremad_clip(6)[0]  # first test clip
    for path in (tmp_path / "Image-01-FPS" / clip).iterdir():
        path.unlink()
    # img1 .. img9 in natural order, written in an order os.listdir need not follow.
    for i in (8, 0, 4, 2, 6, 1, 3, 5, 7):
        Image.new("RGB", (24, 20), (20 * i + 10,) * 3).save(tmp_path / "Image-01-FPS" / clip / f"img{i + 1}.jpg")
    options = {} if selection is None else {"frame_selection": selection}
    datamodule = CREMADDataModule(str(tmp_path), image_size=SIZE, num_frames=3, **options)  # type: ignore[arg-type]
    datamodule.setup("test")
    dataset = datamodule.datasets["test"]
    assert frame_levels(dataset[0]["visual"]) == nine
    assert frame_levels(dataset[1]["visual"]) == two  # 2 frames for 3


def test_frame_rules_by_dataset_and_bad_rule(tmp_path: Path) -> None:
    assert [frame_indices(10, 3, rule) for rule in ("first", "segment_starts", "centres")] == [
        [0, 1, 2],
        [0, 3, 6],
        [1, 5, 8],
    ]
    assert select_frame_indices(5, 1) == [2] and select_frame_indices(1, 3) == [0, 0, 0]
    assert sorted(["f10.jpg", "f9.jpg"], key=natural_sort_key) == ["f9.jpg", "f10.jpg"]
    for folder in ("ave", "ks"):
        (tmp_path / folder).mkdir()
    make_ave(tmp_path / "ave")
    make_kinetics(tmp_path / "ks")
    assert AVEDataModule(str(tmp_path / "ave"), image_size=SIZE).frame_selection == "first"
    assert KineticsSoundsDataModule(str(tmp_path / "ks"), image_size=SIZE).frame_selection == "segment_starts"
    with pytest.raises(PDMPConfigurationError, match=r"`frame_selection`: got 'middle'.*'segment_starts'"):
        AVEDataModule(str(tmp_path / "ave"), frame_selection="middle")  # type: ignore[arg-type]


def test_missing_files_are_counted_warned_and_skipped(tmp_path: Path) -> None:
    clips = make_cremad(tmp_path, num_train=12, num_test=4)
    gone_frames = tmp_path / "Image-01-FPS" / clips[12][0]
    for path in gone_frames.iterdir():
        path.unlink()  # empty folder
    gone_audio = tmp_path / "AudioWAV" / f"{clips[13][0]}.wav"
    gone_audio.unlink()
    datamodule = CREMADDataModule(str(tmp_path), image_size=SIZE)
    with pytest.warns(UserWarning, match=r"2 of 4 listed clips .* skipped") as record:
        datamodule.setup("test")
    message = str(record[0].message)
    assert str(gone_frames) in message and str(gone_audio) in message
    assert len(datamodule.datasets["test"]) == 2
    assert {clip.clip_id for clip in datamodule.datasets["test"].clips} == {clips[14][0], clips[15][0]}


def test_validation_is_carved_from_the_usable_train_clips(tmp_path: Path) -> None:
    clips = make_cremad(tmp_path, num_train=12, num_test=2)
    gone = clips[0][0]
    shutil.rmtree(tmp_path / "Image-01-FPS" / gone)  # frame folder absent
    datamodule = CREMADDataModule(str(tmp_path), image_size=SIZE, val_fraction=0.25)
    with pytest.warns(UserWarning, match=r"1 of 12 listed clips \(train: 1\)") as record:
        datamodule.setup("fit")
    assert f"{gone} (frame folder absent)" in str(record[0].message)
    train = {clip.clip_id for clip in datamodule.datasets["train"].clips}
    val = {clip.clip_id for clip in datamodule.datasets["val"].clips}
    assert len(val) == 3 and len(train) == 8 and gone not in train | val  # round(11 * 0.25) = 3
    assert "test" not in datamodule.datasets


def test_nothing_usable_is_a_configuration_error(tmp_path: Path) -> None:
    clips = make_cremad(tmp_path, num_train=6, num_test=2)
    for clip, _ in clips[6:]:
        (tmp_path / "AudioWAV" / f"{clip}.wav").unlink()
    datamodule = CREMADDataModule(str(tmp_path), image_size=SIZE)
    missing = pytest.warns(UserWarning, match="2 of 2")
    with missing, pytest.raises(PDMPConfigurationError, match=r"`root`.*test list has all its files"):
        datamodule.setup("test")


def test_bad_root_names_root_and_the_expected_files(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(PDMPConfigurationError, match=r"`root`.*nowhere.*train\.csv.*test\.csv"):
        CREMADDataModule(str(missing))
    (tmp_path / "train.csv").write_text("a,NEU\nb,HAP\n")
    with pytest.raises(PDMPConfigurationError, match=r"`root`.*lacks test\.csv") as info:
        CREMADDataModule(str(tmp_path))
    assert str(tmp_path) in str(info.value)
    with pytest.raises(PDMPConfigurationError, match=r"`root`.*trainSet\.txt.*valSet\.txt.*testSet\.txt"):
        AVEDataModule(str(missing))
    with pytest.raises(PDMPConfigurationError, match=r"`root`.*my_train\.txt.*my_test\.txt"):
        KineticsSoundsDataModule(str(missing))


def test_bad_rows_and_arguments(tmp_path: Path) -> None:
    make_cremad(tmp_path, num_train=6, num_test=2)
    (tmp_path / "test.csv").write_text("clip,label\n")
    with pytest.raises(PDMPConfigurationError, match=r"`test_split`.*line 1"):
        CREMADDataModule(str(tmp_path))
    with pytest.raises(PDMPConfigurationError, match="`frames_dir`"):
        CREMADDataModule(str(tmp_path), frames_dir="/elsewhere")
    with pytest.raises(PDMPConfigurationError, match="`audio_dir`"):
        AVEDataModule(str(tmp_path), audio_dir="../outside")
    with pytest.raises(PDMPConfigurationError, match="`audio`"):
        CREMADDataModule(str(tmp_path), audio="mp3")  # type: ignore[arg-type]
    for argument, value in (("num_frames", 0), ("image_size", -1), ("batch_size", True), ("val_fraction", 1.0)):
        with pytest.raises(PDMPConfigurationError, match=f"`{argument}`"):
            CREMADDataModule(str(tmp_path), **{argument: value})  # type: ignore[arg-type]


def test_datasets_pickle_for_worker_processes(tmp_path: Path) -> None:
    make_cremad(tmp_path, num_train=6, num_test=2)
    datamodule = CREMADDataModule(str(tmp_path), image_size=SIZE)
    datamodule.setup()
    copy = pickle.loads(pickle.dumps(datamodule.datasets["train"]))
    assert copy[0]["visual"].shape == (3, 1, SIZE, SIZE)
    assert isinstance(datamodule, AudioVisualDataModule)


# --- AVE ------------------------------------------------------------------------------------------


def test_ave_uses_its_own_lists_sorted_categories_and_prefers_npy(tmp_path: Path) -> None:
    videos = make_ave(tmp_path)
    datamodule = AVEDataModule(str(tmp_path), batch_size=3, image_size=SIZE)
    assert datamodule.class_names == sorted([*AVE_CATEGORIES, "Zither"])  # Annotations.txt adds Zither
    assert datamodule.num_classes == 4
    for split in ("train", "val", "test"):
        assert [e.clip_id for e in datamodule.entries[split]] == videos[split]
    datamodule.setup()
    assert datamodule.split_sizes() == {"train": 6, "val": 3, "test": 3}
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["audio"].shape == (3, 1, 257, 16) and batch["visual"].shape == (3, 3, 3, SIZE, SIZE)
    names = datamodule.class_names
    assert batch["label"].tolist() == [names.index(c) for c in AVE_CATEGORIES]
    train = datamodule.datasets["train"]
    assert train.clips[0].audio.suffix == ".npy" and float(train[0]["audio"].mean()) == 2.0
    assert train.clips[1].audio.suffix == ".pkl"


def test_ave_without_pickles_skips_pickle_only_clips(tmp_path: Path) -> None:
    make_ave(tmp_path)
    datamodule = AVEDataModule(str(tmp_path), image_size=SIZE, allow_pickle=False)
    warned = pytest.warns(UserWarning, match=r"8 of 9 listed clips \(train: 5, val: 3\)")
    with warned as record, pytest.raises(PDMPConfigurationError, match="val list"):
        datamodule.setup("fit")
    assert "train1vid.npy" in str(record[0].message)


# --- Kinetics-Sounds -------------------------------------------------------------------------------


@pytest.mark.parametrize("whitespace", [False, True])
def test_kinetics_sounds_integer_labels(tmp_path: Path, whitespace: bool) -> None:
    names = make_kinetics(tmp_path, whitespace=whitespace)
    datamodule = KineticsSoundsDataModule(str(tmp_path), batch_size=3, image_size=SIZE, val_fraction=0.34)
    assert datamodule.num_classes == 31  # the largest label is 30
    assert [e.clip_id for e in datamodule.entries["test"]] == names[9:]
    datamodule.setup()
    assert datamodule.split_sizes() == {"train": 6, "val": 3, "test": 3}
    batch = next(iter(datamodule.test_dataloader()))
    assert batch["audio"].shape == (3, 1, 1024, 128)
    assert batch["visual"].shape == (3, 3, 3, SIZE, SIZE)
    assert batch["label"].tolist() == [0, 1, 30]


def test_kinetics_sounds_named_labels(tmp_path: Path) -> None:
    make_kinetics(tmp_path, whitespace=True, labels=("tapping_pen", "bowling", "bowling"))
    datamodule = KineticsSoundsDataModule(str(tmp_path), image_size=SIZE)
    assert datamodule.class_names == ["bowling", "tapping_pen"]
    assert [e.label for e in datamodule.entries["test"]] == [1, 0, 0]


def test_trains_and_tests_with_a_lightning_trainer(tmp_path: Path) -> None:
    make_cremad(tmp_path, num_train=8, num_test=2)
    datamodule = CREMADDataModule(str(tmp_path), batch_size=4, image_size=SIZE)

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.audio = nn.Linear(257, 6)
            self.visual = nn.Linear(3, 6)

        def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            logits = self.audio(batch["audio"].mean(dim=(1, 3))) + self.visual(batch["visual"].mean(dim=(2, 3, 4)))
            return nn.functional.cross_entropy(logits, batch["label"])

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            return self.loss(batch)

        def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
            self.log("val_loss", self.loss(batch), batch_size=len(batch["label"]))

        def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
            self.log("test_loss", self.loss(batch), batch_size=len(batch["label"]))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    trainer = pl.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    model = Tiny()
    trainer.fit(model, datamodule)
    assert trainer.test(model, datamodule, verbose=False)[0]["test_loss"] > 0
    assert datamodule.split_sizes() == {"train": 7, "val": 1, "test": 2}
