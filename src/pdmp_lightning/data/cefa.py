"""CASIA-SURF CeFA: live vs spoof faces from aligned RGB, depth and infrared images, per video folder.

Where the layout comes from (public code read for it; no copy of the data was at hand):

- The ChaLearn CVPR 2020 challenge release (``phase1/``): ``4@{1,2,3}_train.txt`` lists one frame a
  line, ``train/<video>/profile/<frame>.jpg <label>``; ``4@{1,2,3}_dev_ref.txt`` lists one video folder
  a line, ``dev/<video> <label>``; ``phase2/4@{1,2,3}_test_res.txt`` lists test folders without labels.
  Label 1 is a live face. The depth and IR images of a frame have the same path with ``profile``
  replaced by ``depth`` / ``ir``. Read in challenge loaders such as a ``CasiaSurfDataset`` class by
  K. Prokofiev (Intel, MIT licence: ``4@{p}_{train,dev_ref,test_res}.txt``, depth and IR paths by
  ``re.sub('profile', 'depth' | 'ir', path)``) and Zitong Yu's CVPRW 2020 multi-modal baseline
  (``Loadtemporal_valtest_3modality``: video folder ``<root>/<list name>/profile``).
- The full release, as the first author's group reads it (``shicaiwei123/TMM-MMH`` and
  ``shicaiwei123/MMANet-CVPR2023``, ``datasets/cefa_dataset_class.py`` and ``cefa_protocol_class.py``,
  written by the CeFA author A. Liu): ``<Race>/<Race>-<ID>/<R>_<ID>_<Device>_<Session>_<PAI>/{profile,depth,ir}/*.jpg``
  with race 1 AF, 2 CA, 3 EA and PAI 1 real, 2 cloth, 3 photo, 4 screen; every frame of every video is
  one training sample; images are read with three channels, resized to 112 x 112 (train: 144, then a
  random rotation of up to 30 degrees and a random 112 crop, and a flip); two classes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from pdmp_lightning.data.audiovisual.base import MAX_EXAMPLES, ClipDataset, SetUpSplitLoaders, splits_to_build
from pdmp_lightning.data.audiovisual.media import (
    FRAME_SUFFIXES,
    frame_transform,
    list_frames,
    load_frames,
    natural_sort_key,
    select_frame_indices,
)
from pdmp_lightning.data.audiovisual.splits import read_rows, relative_path, stratified_validation_split
from pdmp_lightning.data.base import LABEL_KEY
from pdmp_lightning.errors import PDMPConfigurationError, check_int, config_error, is_number
from pdmp_lightning.types import NonNegativeInt, OpenUnitInterval, PositiveInt

CeFAModality = Literal["rgb", "depth", "ir"]
#: The modality names, which are also the batch keys.
CEFA_MODALITIES: tuple[CeFAModality, ...] = ("rgb", "depth", "ir")
#: Class names: label 0 is a spoof (presentation attack), label 1 a live face, as in the protocol lists.
CEFA_CLASSES = ("spoof", "live")
#: CeFA's video folder names ``<race>_<subject>_<device>_<session>_<PAI>``; PAI 1 is a live face.
VIDEO_NAME = re.compile(r"^[1-3]_\d{3}_\d_\d_(?P<pai>\d)$")


def label_from_video_name(name: str) -> int | None:
    """The label a CeFA video folder name implies (1 live for PAI 1, else 0 spoof), or None for other names.

    Examples:
        >>> label_from_video_name("3_012_1_1_1"), label_from_video_name("1_031_1_2_4")
        (1, 0)
        >>> label_from_video_name("003000") is None
        True
    """
    match = VIDEO_NAME.match(name)
    if match is None:
        return None
    return 1 if match["pai"] == "1" else 0


@dataclass(frozen=True)
class CeFAEntry:
    """One line of a protocol list.

    Attributes:
        video: The video folder, relative to the dataset root.
        label: 1 live, 0 spoof.
        frame: The listed frame's file name, or None when the line names the whole folder.
    """

    video: PurePath
    label: int
    frame: str | None


@dataclass(frozen=True)
class CeFASample:
    """One frame whose images were found for every selected modality.

    Attributes:
        video: The video folder, relative to the dataset root.
        label: 1 live, 0 spoof.
        files: One image per selected modality, in the order of the modalities.
    """

    video: str
    label: int
    files: tuple[Path, ...]


class CeFAFrameDataset(ClipDataset[CeFASample]):
    """Samples ``{<modality>: float32 [3, H, W], "label": int64 []}``, one frame of one video each.

    The images of a sample are decoded with three channels (depth and IR grey levels repeated) and
    transformed together by ``frame_transform``, so every
    modality gets the same crop and flip and stays aligned with the others.

    Args:
        samples: The frames, with their files already found.
        modalities: The batch key of each file of a sample.
        image_size: Height and width of the images.
        train: Random crop and flip (train) or a plain resize (evaluation).
    """

    def __init__(self, samples: Sequence[CeFASample], modalities: Sequence[str], image_size: int, train: bool) -> None:
        super().__init__(samples, train)
        self.modalities = list(modalities)
        self.transform = frame_transform(image_size, train)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        sample = self.clips[index]
        stack = load_frames(sample.files, len(sample.files), self.transform)  # [3, modalities, H, W]
        item = {name: stack[:, i].contiguous() for i, name in enumerate(self.modalities)}
        item[LABEL_KEY] = torch.tensor(sample.label, dtype=torch.long)
        return item


class CeFADataModule(SetUpSplitLoaders, pl.LightningDataModule):
    """CASIA-SURF CeFA (face anti-spoofing, live vs spoof) from its protocol lists, any subset of RGB, depth and IR.

    Expected below ``root`` (the challenge's ``phase1`` folder; every path option is relative to it):

    - ``4@1_train.txt`` (``train_split``): one frame a line, ``train/<video>/profile/<frame>.jpg <label>``;
    - ``4@1_dev_ref.txt`` (``test_split``): one video folder a line, ``dev/<video> <label>``;
    - ``<video>/profile/*.jpg``, ``<video>/depth/*.jpg``, ``<video>/ir/*.jpg``: the images, a frame's
      three images under the same file name.

    Lines are ``<path> [<label>]``, separated by whitespace or a comma; label 1 is live, 0 spoof. A path
    is either a frame (its parent folder is a modality folder: that frame is used) or a video folder
    (all its frames are used). Without a label the label comes from a CeFA video name
    ``<race>_<subject>_<device>_<session>_<PAI>`` (PAI 1 live), so lists of the full release's folders
    (``AF/AF-031/1_031_1_1_1``) need none. ``{protocol}`` in a list name stands for ``protocol``:
    ``4@1``, ``4@2`` and ``4@3`` are the challenge's sub-protocols of protocol 4 (cross ethnicity and
    cross attack). A UTF-8 BOM, CRLF endings, blank lines and trailing slashes are tolerated.

    Batches are ``{"rgb": float32 [B, 3, H, W], "depth": ..., "ir": ..., "label": int64 [B]}`` with only
    the selected ``modalities``: one frame per sample, as in the CeFA papers' frame-level training.
    Depth and IR are grey images repeated to three channels (as the first author's loaders read them
    with OpenCV). Train images get RandomResizedCrop(``image_size``) and a horizontal flip, evaluation
    images a resize, both with ImageNet mean and std; the modalities of a frame share the crop and flip.

    Every listed frame is a sample, or with ``frames_per_video`` that many evenly spaced frames of each
    video. A frame lacking an image of a selected modality, or a listed folder without frames, is
    skipped, counted and reported in one warning with up to five paths. The labelled held-out list of
    the challenge release is the dev list, which the first author's code reports on: it is the test
    split here, and the validation split is carved from train (``val_fraction`` of the videos, whole
    videos, stratified by label, seeded by ``seed``) unless ``val_split`` names a list.

    Args:
        root: The CeFA folder (the challenge's ``phase1``).
        protocol: Fills ``{protocol}`` in the list names (``4@1``, ``4@2`` or ``4@3``).
        modalities: The modalities to load, any non-empty subset of ``rgb``, ``depth`` and ``ir``.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        image_size: Height and width of the images (112 in the first author's code).
        frames_per_video: Evenly spaced frames taken per video, each its own sample (None: every frame).
        val_fraction: Share of the usable train videos carved into the validation split (when
            ``val_split`` is None).
        seed: Seed of the validation carve.
        train_split: The train list.
        val_split: A validation list, or None to carve one from train.
        test_split: The test list (labelled).
        rgb_dir: The folder of the RGB images in a video folder (``profile`` in CeFA, ``color`` in CASIA-SURF).
        depth_dir: The folder of the depth images.
        ir_dir: The folder of the infrared images.

    Examples:
        >>> try:  # arguments are checked at once, before any file is read
        ...     CeFADataModule("data/CeFA/phase1", modalities=["rgb", "thermal"])
        ... except ValueError as error:
        ...     print(str(error).split(";")[0])
        `modalities`: got ['rgb', 'thermal']
    """

    def __init__(
        self,
        root: str,
        protocol: str = "4@1",
        modalities: Sequence[CeFAModality] = CEFA_MODALITIES,
        batch_size: PositiveInt = 64,
        num_workers: NonNegativeInt = 0,
        image_size: PositiveInt = 112,
        frames_per_video: PositiveInt | None = None,
        val_fraction: OpenUnitInterval = 0.1,
        seed: int = 0,
        train_split: str = "{protocol}_train.txt",
        val_split: str | None = None,
        test_split: str = "{protocol}_dev_ref.txt",
        rgb_dir: str = "profile",
        depth_dir: str = "depth",
        ir_dir: str = "ir",
    ) -> None:
        super().__init__()
        for name, value, minimum in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            check_int(name, value, minimum)
        check_int("image_size", image_size, 1)
        check_int("frames_per_video", frames_per_video, 1, optional=True)
        check_int("seed", seed)
        if not is_number(val_fraction, above=0, below=1):
            raise config_error("val_fraction", val_fraction, "a number in (0, 1)")
        if not isinstance(protocol, str) or not protocol.strip() or "/" in protocol or "\\" in protocol:
            raise config_error("protocol", protocol, "a protocol name such as '4@1', '4@2' or '4@3'")
        selected = [modalities] if isinstance(modalities, str) else list(modalities)
        if not selected or len(set(selected)) != len(selected) or not set(selected) <= set(CEFA_MODALITIES):
            raise config_error(
                "modalities", modalities, f"a non-empty list of distinct names from {list(CEFA_MODALITIES)}"
            )
        folders = {"rgb": relative_path("rgb_dir", rgb_dir)}
        folders["depth"] = relative_path("depth_dir", depth_dir)
        folders["ir"] = relative_path("ir_dir", ir_dir)
        lists = {"train": train_split, "test": test_split} | ({} if val_split is None else {"val": val_split})
        self.split_files = {
            split: relative_path(f"{split}_split", name.replace("{protocol}", protocol.strip()))
            for split, name in lists.items()
        }
        if not isinstance(root, str | os.PathLike) or not str(root).strip():
            raise config_error("root", root, "the path of the CeFA folder")
        self.root = Path(str(root).strip()).expanduser()
        self.protocol = protocol.strip()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.frames_per_video = frames_per_video
        self.val_fraction = val_fraction
        self.seed = seed
        self._modalities = [name for name in CEFA_MODALITIES if name in selected]
        #: Modality -> the folder of its images inside a video folder.
        self.folders = {name: str(folders[name]) for name in self._modalities}
        #: List ("train", "test" and any "val") -> its lines (before the file check of ``setup``).
        self.entries: dict[str, list[CeFAEntry]] = {}
        #: Split -> dataset of the frames whose images were found (filled by ``setup``).
        self.datasets: dict[str, CeFAFrameDataset] = {}
        self._index()

    # --- properties the CLI links into the model ---------------------------------------------------

    @property
    def modalities(self) -> list[str]:
        """The selected modalities in the order ``rgb``, ``depth``, ``ir``; also the batch keys."""
        return list(self._modalities)

    @property
    def num_classes(self) -> int:
        """2: spoof (0) and live (1)."""
        return len(CEFA_CLASSES)

    @property
    def class_names(self) -> list[str]:
        """``["spoof", "live"]``: index ``i`` is label ``i``."""
        return list(CEFA_CLASSES)

    # --- indexing (cheap, in __init__) ----------------------------------------------------------

    def _index(self) -> None:
        """Checks ``root`` and reads the protocol lists."""
        missing = [str(path) for path in self.split_files.values() if not (self.root / path).is_file()]
        if not self.root.is_dir():
            raise self._root_error(f"{self.root} does not exist or is not a folder.")
        if missing:
            raise self._root_error(
                f"{self.root} lacks {', '.join(missing)} (`protocol` and the `*_split` arguments name the lists)."
            )
        entries = {split: self._read_list(split) for split in self.split_files}
        empty = [split for split, listed in entries.items() if not listed]
        if empty:
            raise self._root_error(f"the {', '.join(empty)} list(s) name nothing.")
        self.entries = entries

    def _root_error(self, hint: str) -> PDMPConfigurationError:
        lists = ", ".join(f"{path} ({split} list)" for split, path in self.split_files.items())
        folders = ", ".join(f"<video>/{folder}/*.jpg" for folder in self.folders.values())
        allowed = f"the CeFA folder holding {lists} and the images {folders}"
        return config_error("root", str(self.root), allowed, hint=hint)

    def _read_list(self, split: str) -> list[CeFAEntry]:
        """The lines of a protocol list as entries; a bad line is an error naming the list's argument."""
        path = self.root / self.split_files[split]
        argument = f"{split}_split"
        modality_folders = set(self.folders.values()) | {"profile", "color", "depth", "ir"}
        entries: list[CeFAEntry] = []
        seen: set[tuple[PurePath, str | None]] = set()
        for number, row in read_rows(path):
            fields = row.replace(",", " ").split()
            listed = PurePath(fields[0]) if 1 <= len(fields) <= 2 else None
            if listed is None or listed.is_absolute() or ".." in listed.parts:
                raise config_error(
                    argument, f"{path} line {number}: {row!r}", "lines `<relative path> [<label 0 or 1>]`"
                )
            is_frame = listed.suffix.lower() in FRAME_SUFFIXES and listed.parent.name in modality_folders
            video = listed.parent.parent if is_frame else listed
            label = label_from_video_name(video.name) if len(fields) == 1 else _label(fields[1])
            if label is None:
                raise config_error(
                    argument,
                    f"{path} line {number}: {row!r}",
                    "a label 0 (spoof) or 1 (live) after the path",
                    hint="only folders named like CeFA videos (<race>_<subject>_<device>_<session>_<PAI>) may "
                    "omit it; the challenge's *_res.txt lists have no labels and cannot be evaluated",
                )
            key = (video, listed.name if is_frame else None)
            if key not in seen:  # a repeated line is read once
                seen.add(key)
                entries.append(CeFAEntry(video, label, key[1]))
        return entries

    # --- Lightning hooks ------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Finds the images of the splits ``stage`` needs (all three for None) and builds their datasets.

        Frames lacking an image are skipped, and a warning says how many and shows up to five paths.
        Without a validation list, train and validation are built together: whole videos of the usable
        train frames are carved into the validation split.

        Raises:
            PDMPConfigurationError: A split needed by ``stage`` has no frame with all its images.
        """
        carved = "val" not in self.entries
        todo = splits_to_build(stage, carved, self.datasets)
        if not todo:
            return
        found: dict[str, list[CeFASample]] = {}
        problems: list[str] = []
        skipped: dict[str, int] = {}
        listed = 0
        for split in (split for split in todo if split in self.entries):
            found[split], missing = self._find_samples(self.entries[split])
            listed += len(found[split]) + len(missing)
            problems += missing
            skipped[split] = len(missing)
        if problems:
            per_list = ", ".join(f"{split}: {count}" for split, count in skipped.items() if count)
            rank_zero_warn(
                f"{type(self).__name__}: {len(problems)} of {listed} listed frames or folders ({per_list}) lack "
                f"images under {self.root} and are skipped (left out of the splits). "
                f"Examples: {'; '.join(problems[:MAX_EXAMPLES])}."
            )
        if carved and "train" in found:
            found["train"], found["val"] = self._carve_validation(found["train"])
        for split in todo:
            if not found[split]:
                examples = "; ".join(problems[:MAX_EXAMPLES])
                raise self._root_error(f"no frame of the {split} list has all its images (e.g. {examples}).")
        for split in todo:
            self.datasets[split] = CeFAFrameDataset(
                found[split], self._modalities, self.image_size, train=split == "train"
            )

    def _find_samples(self, entries: Sequence[CeFAEntry]) -> tuple[list[CeFASample], list[str]]:
        """The frames of ``entries`` whose images exist, and what is missing (one string per skipped frame)."""
        by_video: dict[PurePath, list[CeFAEntry]] = {}
        for entry in entries:
            by_video.setdefault(entry.video, []).append(entry)
        first = self.folders[self._modalities[0]]
        samples: list[CeFASample] = []
        problems: list[str] = []
        for video, listed in by_video.items():
            folder = self.root / video
            names = [(entry.frame, entry.label) for entry in listed if entry.frame is not None]
            if any(entry.frame is None for entry in listed):
                frames = list_frames(folder / first)
                if not frames:
                    reason = "no *.jpg frames in the folder" if (folder / first).is_dir() else "folder absent"
                    problems.append(f"{folder / first} ({reason})")
                label = next(entry.label for entry in listed if entry.frame is None)
                named = {name for name, _ in names}
                names += [(frame.name, label) for frame in frames if frame.name not in named]
            names.sort(key=lambda item: natural_sort_key(item[0]))  # a video's frames in time order
            if self.frames_per_video is not None and names:
                names = [names[i] for i in dict.fromkeys(select_frame_indices(len(names), self.frames_per_video))]
            for name, label in names:
                files = tuple(folder / self.folders[modality] / name for modality in self._modalities)
                absent = [str(path) for path in files if not path.is_file()]
                if absent:
                    problems.append(f"{' and '.join(absent)} (image absent)")
                else:
                    samples.append(CeFASample(str(video), label, files))
        return samples, problems

    def _carve_validation(self, samples: list[CeFASample]) -> tuple[list[CeFASample], list[CeFASample]]:
        """Usable train frames -> (train, validation), whole videos, stratified by label and seeded."""
        videos = list(dict.fromkeys(sample.video for sample in samples))
        if len(videos) < 2:
            raise self._root_error(
                f"only {len(videos)} train video(s) have frames with all their images; the validation split is "
                "carved from whole train videos, so at least 2 are needed (or name a list with `val_split`)."
            )
        label_of = {sample.video: sample.label for sample in samples}
        _, val_positions = stratified_validation_split([label_of[v] for v in videos], self.val_fraction, self.seed)
        val_videos = {videos[i] for i in val_positions}
        return [s for s in samples if s.video not in val_videos], [s for s in samples if s.video in val_videos]


def _label(field: str) -> int | None:
    """A list's label field as 0 or 1, or None when it is neither."""
    return int(field) if field in ("0", "1") else None
