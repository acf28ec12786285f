"""What the file-based datamodules share: checked arguments, split handling, file checks, loaders.

``ClipListDataModule`` holds what does not depend on the modalities (split lists, the file check and
its warning, the carved validation split); ``AudioVisualDataModule`` adds the audio and the frames
of CREMA-D, AVE and Kinetics-Sounds, and ``UCF101DataModule`` the RGB frames and optical flow of UCF-101.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Generic, Protocol, TypeVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset

from pdmp_lightning.data.audiovisual.media import (
    CREMAD_SAMPLE_RATE,
    FrameSelection,
    Resampler,
    check_frame_selection,
    frame_transform,
    list_frames,
    load_audio,
    load_frames,
)
from pdmp_lightning.data.audiovisual.splits import ClipEntry, stratified_validation_split
from pdmp_lightning.data.base import SplitLoaders
from pdmp_lightning.errors import PDMPConfigurationError, check_int, config_error, is_number

#: The splits each Lightning stage needs (an unknown or missing stage builds all three).
STAGE_SPLITS: dict[str, tuple[str, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
}
ALL_SPLITS = ("train", "val", "test")
#: How many missing paths a warning or an error quotes.
MAX_EXAMPLES = 5


def splits_to_build(stage: str | None, carved: bool, built: Collection[str]) -> list[str]:
    """The splits ``stage`` needs (all three for None or an unknown stage) that are not in ``built``, in order.

    With a carved validation split (``carved``: the dataset has no validation list), train and validation
    are built together, since the one is cut out of the other.

    Examples:
        >>> splits_to_build("validate", carved=True, built=[])
        ['train', 'val']
        >>> splits_to_build("test", carved=True, built=["test"])
        []
    """
    wanted = set(STAGE_SPLITS.get(stage, ALL_SPLITS) if stage else ALL_SPLITS)
    if carved and wanted & {"train", "val"}:
        wanted |= {"train", "val"}
    return [split for split in ALL_SPLITS if split in wanted and split not in built]


@dataclass(frozen=True)
class Clip:
    """A clip whose files were found.

    Attributes:
        clip_id: The clip's name.
        label: Class index.
        frames: All frame files of the clip, in order.
        audio: The audio file.
    """

    clip_id: str
    label: int
    frames: tuple[Path, ...]
    audio: Path


class LabelledClip(Protocol):
    """What the split handling needs of a clip whose files were found: its class index."""

    @property
    def label(self) -> int:
        """Class index."""
        ...


ClipT = TypeVar("ClipT", bound=LabelledClip)


class ClipDataset(Dataset[dict[str, Tensor]], Generic[ClipT]):
    """Samples read from the files of ``clips``; a subclass implements ``__getitem__``.

    Args:
        clips: The clips, with their files already found.
        train: Training samples (random augmentation) or evaluation samples.
    """

    def __init__(self, clips: Sequence[ClipT], train: bool) -> None:
        self.clips = list(clips)
        self.train = train

    def __len__(self) -> int:
        return len(self.clips)


class SetUpSplitLoaders(SplitLoaders):
    """``SplitLoaders`` over the datasets that ``setup`` builds, one per split, in ``datasets``.

    A split asked for before ``setup`` built it is set up then, with the stage that needs it.
    """

    #: Split -> the dataset of its usable samples (filled by ``setup``).
    datasets: Mapping[str, ClipDataset[Any]]

    def setup(self, stage: str | None = None) -> None:
        """Builds the datasets of the splits ``stage`` needs."""
        raise NotImplementedError

    def split_sizes(self) -> dict[str, int]:
        """Usable samples per split built so far (after ``setup``)."""
        return {split: len(dataset) for split, dataset in self.datasets.items()}

    def split_dataset(self, split: str) -> Dataset[dict[str, Tensor]]:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate"}.get(split, "test"))
        return self.datasets[split]


class AudioVisualClipDataset(ClipDataset[Clip]):
    """Samples ``{"audio": float32 [...], "visual": float32 [3, T, H, W], "label": int64 []}`` read from files.

    Args:
        clips: The clips, with their files already found.
        num_frames: Frames ``T`` per sample.
        image_size: Height and width of the frames.
        train: Random crop and flip (train) or a plain resize (evaluation).
        frame_selection: Which ``T`` frames of a clip (see
            ``frame_indices``).
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        num_frames: int,
        image_size: int,
        train: bool,
        frame_selection: FrameSelection = "centres",
    ) -> None:
        super().__init__(clips, train)
        self.num_frames = num_frames
        self.image_size = image_size
        self.frame_selection = check_frame_selection(frame_selection)
        self.transform = frame_transform(image_size, train)
        #: Resamples wav files to the CREMA-D rate (a picklable value: each worker gets its copy).
        self.resampler = Resampler(CREMAD_SAMPLE_RATE)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        clip = self.clips[index]
        return {
            "audio": load_audio(clip.audio, self.resampler),
            "visual": load_frames(clip.frames, self.num_frames, self.transform, self.frame_selection),
            "label": torch.tensor(clip.label, dtype=torch.long),
        }


class ClipListDataModule(SetUpSplitLoaders, pl.LightningDataModule, Generic[ClipT]):
    """Base of the datamodules that read preprocessed clip datasets from disk, whatever their modalities.

    A subclass reads its split files in ``__init__`` (through ``_index``), so ``num_classes``
    and ``modalities`` are known before ``setup``; ``setup`` then looks for every listed
    clip's files (``_find_files``). Clips with a missing file are skipped with a warning that gives
    their count and up to five paths; a split left with no clip at all raises
    ``PDMPConfigurationError``.

    When the dataset has no validation list, ``val_fraction`` of the usable train clips (those whose
    files were found, in list order) is carved out as the validation split, stratified by class and
    seeded by ``seed`` (see ``stratified_validation_split``):
    the same files, fraction and seed give the same split. The test split is the dataset's own test
    list. Validation and test samples get the evaluation transforms.

    Args:
        root: Dataset folder; every other path is relative to it.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        num_frames: Frames per clip.
        image_size: Height and width of the frames.
        val_fraction: Share of the usable train clips carved into the validation split (None: the
            dataset has its own validation list).
        seed: Seed of the validation carve.
    """

    def __init__(
        self,
        root: str,
        batch_size: int,
        num_workers: int,
        num_frames: int,
        image_size: int,
        val_fraction: float | None,
        seed: int,
    ) -> None:
        super().__init__()
        for name, value, minimum in (
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
            ("num_frames", num_frames, 1),
            ("image_size", image_size, 1),
        ):
            check_int(name, value, minimum)
        if val_fraction is not None and not is_number(val_fraction, above=0, below=1):
            raise config_error("val_fraction", val_fraction, "a number in (0, 1)")
        check_int("seed", seed)
        if not isinstance(root, str | os.PathLike) or not str(root).strip():
            raise config_error("root", root, "the path of the dataset folder")
        self.root = Path(str(root).strip()).expanduser()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.num_frames = num_frames
        self.image_size = image_size
        self.val_fraction = val_fraction
        self.seed = seed
        #: Class names; index ``i`` is label ``i``.
        self.class_names: list[str] = []
        #: List ("train", "test" and any "val" list) -> the clips it names (before the file check of ``setup``).
        self.entries: dict[str, list[ClipEntry]] = {}
        #: Split -> dataset of the clips whose files were found (filled by ``setup``).
        self.datasets: dict[str, ClipDataset[ClipT]] = {}

    # --- what a subclass provides ---------------------------------------------------------------

    #: Which arguments name the split files (said when one is missing).
    _lists_hint = "the `*_split` arguments name the lists, relative to `root`"

    def _expected_layout(self) -> dict[str, str]:
        """Relative path -> what it holds, for the error messages; the split files come first."""
        raise NotImplementedError

    def _split_files(self) -> list[PurePath]:
        """The split files that must exist below ``root``."""
        raise NotImplementedError

    def _read_lists(self) -> tuple[dict[str, list[ClipEntry]], list[str]]:
        """Split -> listed clips ("train", "test" and, if the dataset has one, "val"), and the class names."""
        raise NotImplementedError

    def _find_files(self, entry: ClipEntry) -> tuple[ClipT | None, str]:
        """The clip with its files, or None and what is missing (a path and the reason)."""
        raise NotImplementedError

    def _dataset(self, clips: list[ClipT], train: bool) -> ClipDataset[ClipT]:
        """The dataset of one split's usable clips (``train``: with the training transforms)."""
        raise NotImplementedError

    @property
    def modalities(self) -> list[str]:
        """The modality names, which are also the batch keys of their inputs."""
        raise NotImplementedError

    # --- properties the CLI links into the model ---------------------------------------------------

    @property
    def num_classes(self) -> int:
        """Number of classes (known right after ``__init__``)."""
        return len(self.class_names)

    # --- indexing (cheap, in __init__) ----------------------------------------------------------

    def _index(self) -> None:
        """Checks ``root`` and reads the split files (and so the class names)."""
        missing = [str(path) for path in self._split_files() if not (self.root / path).is_file()]
        if not self.root.is_dir() or missing:
            problem = (
                "does not exist or is not a folder"
                if not self.root.is_dir()
                else f"lacks {', '.join(missing)} ({self._lists_hint})"
            )
            raise self._root_error(f"{self.root} {problem}.")
        entries, class_names = self._read_lists()
        empty = [split for split, listed in entries.items() if not listed]
        if empty:
            raise self._root_error(f"the {', '.join(empty)} list(s) name no clip.")
        if "val" not in entries and self.val_fraction is None:  # pragma: no cover - a subclass bug
            raise RuntimeError(f"{type(self).__name__} has no validation list and no val_fraction")
        self.entries = entries
        self.class_names = class_names

    def _root_error(self, hint: str) -> PDMPConfigurationError:
        layout = "; ".join(f"{path} ({meaning})" for path, meaning in self._expected_layout().items())
        return config_error("root", str(self.root), f"the {type(self).__name__} folder holding {layout}", hint=hint)

    # --- Lightning hooks ------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Finds the files of the splits ``stage`` needs (all three for None) and builds their datasets.

        Clips with missing files are skipped, and a warning says how many and shows up to five paths.
        Without a validation list, train and validation are built together: the validation split is
        carved from the usable train clips.

        Raises:
            PDMPConfigurationError: A split needed by ``stage`` has no clip with all its files.
        """
        carved = "val" not in self.entries
        todo = splits_to_build(stage, carved, self.datasets)
        if not todo:
            return
        lists = [split for split in todo if split in self.entries]  # a carved "val" has no list of its own
        found, problems = self._find_all(lists)
        if carved and "train" in found:
            found["train"], found["val"] = self._carve_validation(found["train"])
        for split in todo:
            if not found[split]:
                examples = "; ".join(problems[:MAX_EXAMPLES])
                raise self._root_error(f"no clip of the {split} list has all its files (e.g. {examples}).")
        for split in todo:
            self.datasets[split] = self._dataset(found[split], train=split == "train")

    def _find_all(self, lists: Sequence[str]) -> tuple[dict[str, list[ClipT]], list[str]]:
        """The clips of ``lists`` whose files exist, and what is missing (warned about, count and examples)."""
        found: dict[str, list[ClipT]] = {}
        problems: list[str] = []
        skipped: dict[str, int] = {}
        for split in lists:
            found[split] = []
            for entry in self.entries[split]:
                clip, problem = self._find_files(entry)
                if clip is None:
                    problems.append(problem)
                    skipped[split] = skipped.get(split, 0) + 1
                else:
                    found[split].append(clip)
        if problems:
            listed = sum(len(self.entries[split]) for split in lists)
            per_list = ", ".join(f"{split}: {count}" for split, count in skipped.items())
            rank_zero_warn(
                f"{type(self).__name__}: {len(problems)} of {listed} listed clips ({per_list}) have missing files "
                f"under {self.root} and are skipped (left out of the splits). "
                f"Examples: {'; '.join(problems[:MAX_EXAMPLES])}."
            )
        return found, problems

    def _carve_validation(self, clips: list[ClipT]) -> tuple[list[ClipT], list[ClipT]]:
        """Usable train clips -> (train, validation), stratified by class and seeded."""
        if len(clips) < 2 or self.val_fraction is None:
            raise self._root_error(
                f"only {len(clips)} train clip(s) have all their files; the validation split is carved "
                "from them, so at least 2 are needed."
            )
        train, val = stratified_validation_split([clip.label for clip in clips], self.val_fraction, self.seed)
        return [clips[i] for i in train], [clips[i] for i in val]


def frames_problem(folder: Path, what: str = "*.jpg frames") -> str:
    """Why a clip's frame folder is unusable (absent, or without ``what``), for the missing-files warning."""
    return f"{folder} ({f'no {what} in the folder' if folder.is_dir() else 'frame folder absent'})"


class AudioVisualDataModule(ClipListDataModule[Clip]):
    """Base of the datamodules that read preprocessed audio-visual datasets from disk.

    See ``ClipListDataModule`` for the split handling. ``setup`` looks for every listed clip's
    frames and audio: clips whose frame folder is absent or holds no ``*.jpg``, or whose audio file is
    absent, are skipped with a warning.

    Args:
        root: Dataset folder; every other path is relative to it.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        num_frames: Frames per clip.
        image_size: Height and width of the frames.
        val_fraction: Share of the usable train clips carved into the validation split (None: the
            dataset has its own validation list).
        seed: Seed of the validation carve.
    """

    #: Which frames a clip contributes (a subclass sets it from its ``frame_selection`` argument).
    frame_selection: FrameSelection = "centres"

    def _set_frame_selection(self, frame_selection: FrameSelection) -> None:
        """Checks and keeps the ``frame_selection`` argument."""
        self.frame_selection = check_frame_selection(frame_selection)

    # --- what a subclass provides ---------------------------------------------------------------

    def _frames_folder(self, clip_id: str) -> Path:
        """The folder of a clip's frames."""
        raise NotImplementedError

    def _audio_candidates(self, clip_id: str) -> tuple[Path, ...]:
        """A clip's possible audio files, preferred first (the first that exists is used)."""
        raise NotImplementedError

    @property
    def modalities(self) -> list[str]:
        """``["audio", "visual"]``, which are also the batch keys of their inputs."""
        return ["audio", "visual"]

    def _find_files(self, entry: ClipEntry) -> tuple[Clip | None, str]:
        """The clip with its files, or None and what is missing."""
        folder = self._frames_folder(entry.clip_id)
        frames = list_frames(folder)
        if not frames:
            return None, frames_problem(folder)
        candidates = self._audio_candidates(entry.clip_id)
        audio = next((path for path in candidates if path.is_file()), None)
        if audio is None:
            return None, f"{' or '.join(str(path) for path in candidates)} (audio file absent)"
        return Clip(entry.clip_id, entry.label, tuple(frames), audio), ""

    def _dataset(self, clips: list[Clip], train: bool) -> AudioVisualClipDataset:
        return AudioVisualClipDataset(clips, self.num_frames, self.image_size, train, self.frame_selection)
