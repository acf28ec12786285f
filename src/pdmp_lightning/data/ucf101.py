"""UCF-101: 13,320 YouTube action clips of 101 classes, as RGB frames and stacked optical flow (x and y)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal

import torch
from torch import Tensor

from pdmp_lightning.data.audiovisual.base import ClipDataset, ClipListDataModule, frames_problem
from pdmp_lightning.data.audiovisual.media import (
    decode_frames,
    frame_transform,
    list_frames,
    segment_indices,
    select_frame_indices,
)
from pdmp_lightning.data.audiovisual.splits import ClipEntry, read_rows, relative_path, unique_entries
from pdmp_lightning.errors import check_int, config_error
from pdmp_lightning.types import NonNegativeInt, OpenUnitInterval, PositiveInt

__all__ = ["FlowTransform", "UCF101ClipDataset", "UCF101DataModule", "VideoClip", "flow_indices", "ucf101_class"]

FlowSampling = Literal["segments", "consecutive"]
#: The official split numbers (``trainlist0N.txt`` / ``testlist0N.txt``).
UCF101_SPLITS = (1, 2, 3)
#: Optical flow is stored clipped to [-FLOW_BOUND, FLOW_BOUND] pixels and mapped linearly onto 0..255.
FLOW_BOUND = 20.0

_CLIP_NAME = re.compile(r"^v_(?P<cls>.+)_g\d+_c\d+$")


def ucf101_class(clip_id: str) -> str | None:
    """The class a UCF-101 clip name carries (``v_<Class>_gXX_cYY``), or None for another name.

    Examples:
        >>> ucf101_class("v_ApplyEyeMakeup_g08_c01"), ucf101_class("clip")
        ('ApplyEyeMakeup', None)
    """
    match = _CLIP_NAME.match(clip_id)
    return match.group("cls") if match else None


def flow_indices(available: int, length: int, sampling: FlowSampling, train: bool) -> list[int]:
    """Which ``length`` flow frames of ``available`` make one sample.

    ``"segments"``: one frame per equal segment (``segment_indices``:
    the centre in evaluation, a random frame in training; BalanceBenchmark's recipe). ``"consecutive"``:
    ``length`` consecutive frames (the two-stream stack of Simonyan and Zisserman) starting at the centre in
    evaluation and at a random frame in training. Short clips use every frame and repeat the last one.

    Examples:
        >>> flow_indices(10, 3, "segments", train=False)
        [1, 5, 8]
        >>> flow_indices(10, 3, "consecutive", train=False)
        [3, 4, 5]
    """
    if sampling == "segments":
        return segment_indices(available, length, train)
    if available <= length:
        return select_frame_indices(available, length)
    start = int(torch.randint(0, available - length + 1, ()).item()) if train else (available - length) // 2
    return list(range(start, start + length))


class FlowTransform:
    """The transform of a ``uint8 [L, 2, H, W]`` flow stack (x, y) into ``float32 [2, L, size, size]``.

    The stored value ``v`` (0..255 for -20..20 pixels) becomes ``2 v / 255 - 1``, the flow in units of
    20 pixels, so zero motion is about 0. Train: RandomResizedCrop(``size``) and, with probability one
    half, a horizontal flip that also negates the x component (a mirrored motion moves the other way);
    evaluation: Resize((``size``, ``size``)). One draw per clip, shared by all its flow frames.

    Args:
        size: Height and width of the output.
        train: Training (random crop and flip) or evaluation (resize) transform.

    Examples:
        >>> still = torch.full((3, 2, 8, 8), 128, dtype=torch.uint8)  # no motion
        >>> out = FlowTransform(4, train=False)(still)
        >>> tuple(out.shape), round(float(out.abs().max()), 3)
        ((2, 3, 4, 4), 0.004)
    """

    def __init__(self, size: int, train: bool) -> None:
        from torchvision.transforms import v2

        self.train = train
        self.geometry: Any = (
            v2.RandomResizedCrop(size, antialias=True) if train else v2.Resize((size, size), antialias=True)
        )

    def __call__(self, stack: Tensor) -> Tensor:
        resized: Tensor = self.geometry(stack)
        flow = resized.float() * (2.0 / 255.0) - 1.0
        if self.train and float(torch.rand(())) < 0.5:
            flow = flow.flip(-1)
            flow[:, 0] = -flow[:, 0]
        return flow.permute(1, 0, 2, 3).contiguous()


@dataclass(frozen=True)
class VideoClip:
    """A UCF-101 clip whose files were found.

    Attributes:
        clip_id: The clip's name (``v_<Class>_gXX_cYY``).
        label: Class index (0-based).
        frames: The RGB frames, in order.
        flow_x: The x-flow frames, in order.
        flow_y: The y-flow frames, in order (as many as ``flow_x``).
    """

    clip_id: str
    label: int
    frames: tuple[Path, ...]
    flow_x: tuple[Path, ...]
    flow_y: tuple[Path, ...]


class UCF101ClipDataset(ClipDataset[VideoClip]):
    """Samples ``{"rgb": float32 [3, T, H, W], "flow": float32 [2, L, H, W], "label": int64 []}``.

    Args:
        clips: The clips, with their files already found.
        num_frames: RGB frames ``T`` per sample (see ``segment_indices``).
        flow_length: Flow frames ``L`` per sample (see ``flow_indices``).
        flow_sampling: ``"segments"`` or ``"consecutive"``.
        image_size: Height and width of both streams.
        train: Random frames, crop and flip (train) or fixed frames and a plain resize (evaluation).
    """

    def __init__(
        self,
        clips: list[VideoClip],
        num_frames: int,
        flow_length: int,
        flow_sampling: FlowSampling,
        image_size: int,
        train: bool,
    ) -> None:
        super().__init__(clips, train)
        self.num_frames = num_frames
        self.flow_length = flow_length
        self.flow_sampling: FlowSampling = flow_sampling
        self.rgb_transform = frame_transform(image_size, train)
        self.flow_transform = FlowTransform(image_size, train)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        clip = self.clips[index]
        chosen = segment_indices(len(clip.frames), self.num_frames, self.train)
        rgb: Tensor = self.rgb_transform(decode_frames(clip.frames, chosen))
        count = len(clip.flow_x)
        steps = flow_indices(count, self.flow_length, self.flow_sampling, self.train)
        # x and y decoded as one list, so both get the first chosen frame's size: [2L, 1, H, W] -> [L, 2, H, W].
        planes = decode_frames([*clip.flow_x, *clip.flow_y], [*steps, *(count + i for i in steps)], mode="GRAY")
        stack = planes.view(2, self.flow_length, *planes.shape[-2:]).transpose(0, 1)
        return {
            "rgb": rgb.permute(1, 0, 2, 3).contiguous(),
            "flow": self.flow_transform(stack),
            "label": torch.tensor(clip.label, dtype=torch.long),
        }


class UCF101DataModule(ClipListDataModule[VideoClip]):
    """UCF-101 (101 actions, 13,320 clips) with the official split lists and a carved validation split.

    Expected below ``root`` (every path option is relative to it; ``python -m pdmp_lightning.prepare
    ucf101`` writes this layout):

    - ``ucfTrainTestlist/classInd.txt`` (lines ``1 ApplyEyeMakeup``, 1-based), ``trainlist0N.txt`` (lines
      ``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1``, label 1-based) and ``testlist0N.txt`` (lines
      without a label: it comes from ``classInd.txt`` through the class folder), ``N = split``;
    - ``frames/<clip>/*.jpg``: the RGB frames (any names, sorted naturally);
    - ``flow/<clip>/flow_x_*.jpg`` and ``flow_y_*.jpg``: the optical flow, one grayscale JPEG per frame
      pair and direction, clipped to [-20, 20] pixels and mapped onto 0..255 (the two-stream convention).

    Other copies are read by pointing the options at them: the two-stream copy with ``jpegs_256/<clip>``
    and ``tvl1_flow/u|v/<clip>`` is ``frames_dir="jpegs_256", flow_x_dir="tvl1_flow/u",
    flow_y_dir="tvl1_flow/v", flow_x_prefix="", flow_y_prefix=""``. A ``*_prefix`` selects the files of a
    folder by the start of their names, so RGB and flow may also share one folder.

    Batches are ``{"rgb": float32 [B, 3, T, H, W], "flow": float32 [B, 2, L, H, W], "label": int64 [B]}``:
    the flow keeps x and y as two channels and its ``L`` frames as time, so ``ResNet18Encoder(in_channels=2)``
    encodes it like the RGB frames (frames folded into the batch, pooled over time), as BalanceBenchmark's
    UCF-101 pipeline does; ``batch["flow"].flatten(1, 2)`` gives the classic ``[B, 2L, H, W]`` stack
    (x of every frame, then y). ``T = num_frames`` RGB frames are one per equal segment of the clip;
    ``L = flow_length`` flow frames likewise (``flow_sampling="segments"``) or consecutive
    (``"consecutive"``). Training draws a random frame inside each segment (or a random start), evaluation
    takes the centres. RGB: RandomResizedCrop(``image_size``) and flip in training, Resize in evaluation,
    ImageNet normalisation; flow: see ``FlowTransform`` (values in units of 20 pixels, the flip
    negates x).

    Labels come from ``classInd.txt``: ``num_classes`` is its number of lines (101). A class folder is
    matched case-insensitively (the official lists name ``HandstandPushups/v_HandStandPushups_...``); a
    line without a folder takes the class from the clip name. List lines may end in a slash or name
    frame folders instead of ``.avi`` files; a clip listed twice is kept once. UCF-101 has no validation
    list: ``val_fraction`` of the usable train clips is carved out, stratified by class and seeded by
    ``seed``. Clips whose frames or flow are missing are skipped with a warning.

    Args:
        root: The UCF-101 folder.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        num_frames: RGB frames per clip.
        flow_length: Flow frames (x and y pairs) per clip.
        flow_sampling: ``"segments"`` (one flow frame per segment) or ``"consecutive"`` (a stack of
            consecutive flow frames).
        image_size: Height and width of both streams (224 in the papers; smaller for CPU runs).
        val_fraction: Share of the usable train clips carved into the validation split.
        seed: Seed of the validation carve.
        split: The official split: 1, 2 or 3.
        lists_dir: Folder of ``classInd.txt`` and the split lists.
        frames_dir: Folder of the per-clip RGB frame folders.
        flow_x_dir: Folder of the per-clip x-flow folders.
        flow_y_dir: Folder of the per-clip y-flow folders.
        frames_prefix: Start of the RGB frame names (empty: every jpg that is not flow).
        flow_x_prefix: Start of the x-flow frame names (empty: every jpg in ``flow_x_dir/<clip>``).
        flow_y_prefix: Start of the y-flow frame names.

    Examples:
        >>> try:
        ...     UCF101DataModule("no/such/folder")
        ... except ValueError as error:  # the root is checked at once, naming it
        ...     print(str(error).split(";")[0])
        `root`: got 'no/such/folder'
    """

    def __init__(
        self,
        root: str,
        batch_size: PositiveInt = 64,
        num_workers: NonNegativeInt = 0,
        num_frames: PositiveInt = 3,
        flow_length: PositiveInt = 3,
        flow_sampling: FlowSampling = "segments",
        image_size: PositiveInt = 224,
        val_fraction: OpenUnitInterval = 0.1,
        seed: int = 0,
        split: int = 1,
        lists_dir: str = "ucfTrainTestlist",
        frames_dir: str = "frames",
        flow_x_dir: str = "flow",
        flow_y_dir: str = "flow",
        frames_prefix: str = "",
        flow_x_prefix: str = "flow_x",
        flow_y_prefix: str = "flow_y",
    ) -> None:
        super().__init__(root, batch_size, num_workers, num_frames, image_size, val_fraction, seed)
        check_int("flow_length", flow_length, 1)
        if flow_sampling not in ("segments", "consecutive"):
            raise config_error("flow_sampling", flow_sampling, "'segments' or 'consecutive'")
        if isinstance(split, bool) or split not in UCF101_SPLITS:
            raise config_error("split", split, "1, 2 or 3 (the official lists trainlist0N.txt / testlist0N.txt)")
        for name, value in (
            ("frames_prefix", frames_prefix),
            ("flow_x_prefix", flow_x_prefix),
            ("flow_y_prefix", flow_y_prefix),
        ):
            if not isinstance(value, str) or "/" in value:
                raise config_error(name, value, "the start of the file names (a string without '/'; '' for all)")
        if flow_x_dir == flow_y_dir and flow_x_prefix == flow_y_prefix:
            raise config_error(
                "flow_y_prefix",
                flow_y_prefix,
                "a prefix other than flow_x_prefix when x and y flow share a folder",
                hint="set flow_x_dir and flow_y_dir to different folders, or give x and y different prefixes",
            )
        self.flow_length = flow_length
        self.flow_sampling: FlowSampling = flow_sampling
        self.split = split
        self.lists_dir = relative_path("lists_dir", lists_dir)
        self.frames_dir = relative_path("frames_dir", frames_dir)
        self.flow_x_dir = relative_path("flow_x_dir", flow_x_dir)
        self.flow_y_dir = relative_path("flow_y_dir", flow_y_dir)
        self.frames_prefix = frames_prefix
        self.flow_x_prefix = flow_x_prefix
        self.flow_y_prefix = flow_y_prefix
        self.list_paths = {
            "classes": self.lists_dir / "classInd.txt",
            "train": self.lists_dir / f"trainlist0{split}.txt",
            "test": self.lists_dir / f"testlist0{split}.txt",
        }
        self._index()

    _lists_hint = "`lists_dir` and `split` name the lists, relative to `root`"

    @property
    def modalities(self) -> list[str]:
        """``["rgb", "flow"]``, which are also the batch keys of their inputs."""
        return ["rgb", "flow"]

    def _expected_layout(self) -> dict[str, str]:
        return {
            str(self.list_paths["classes"]): "class index, lines `1 ApplyEyeMakeup`",
            str(self.list_paths["train"]): "train list, lines `Class/v_Class_gXX_cYY.avi label`",
            str(self.list_paths["test"]): "test list, lines `Class/v_Class_gXX_cYY.avi`",
            f"{self.frames_dir}/<clip>/{self.frames_prefix}*.jpg": "RGB frames",
            f"{self.flow_x_dir}/<clip>/{self.flow_x_prefix}*.jpg": "x flow",
            f"{self.flow_y_dir}/<clip>/{self.flow_y_prefix}*.jpg": "y flow",
        }

    def _split_files(self) -> list[PurePath]:
        return list(self.list_paths.values())

    def _read_lists(self) -> tuple[dict[str, list[ClipEntry]], list[str]]:
        class_names = self._read_classes()
        lookup = {name.lower(): index for index, name in enumerate(class_names)}
        lists = {split: self._read_list(split, lookup, len(class_names)) for split in ("train", "test")}
        return lists, class_names

    def _read_classes(self) -> list[str]:
        path = self.root / self.list_paths["classes"]
        names: list[str] = []
        for number, row in read_rows(path):
            fields = row.split()
            if len(fields) != 2 or fields[0] != str(len(names) + 1):
                raise config_error(
                    "lists_dir",
                    f"{path} line {number}: {row!r}",
                    f"lines `index ClassName` numbered 1, 2, ... in order (here {len(names) + 1})",
                )
            names.append(fields[1])
        return names

    def _read_list(self, split: str, lookup: dict[str, int], num_classes: int) -> list[ClipEntry]:
        """The clips of a split list, each labelled through ``classInd.txt``."""
        path = self.root / self.list_paths[split]
        entries = []
        for number, row in read_rows(path):
            fields = row.split()
            parts = [part for part in fields[0].replace("\\", "/").split("/") if part]
            clip_id = PurePath(parts[-1]).stem if parts and parts[-1].lower().endswith(".avi") else parts[-1]
            folder = parts[-2] if len(parts) >= 2 else ucf101_class(clip_id)
            by_folder = lookup.get(folder.lower()) if folder else None
            given = fields[1] if len(fields) == 2 else None
            label = by_folder if given is None else _checked_label(given, num_classes, by_folder)
            if label is None or len(fields) > 2:
                raise config_error(
                    "lists_dir",
                    f"{path} line {number}: {row!r}",
                    f"lines `Class/v_Class_gXX_cYY.avi [label]` with a class of classInd.txt and, when given, "
                    f"its 1-based label (1 to {num_classes})",
                )
            entries.append(ClipEntry(clip_id, label))
        return unique_entries(entries)

    def _find_files(self, entry: ClipEntry) -> tuple[VideoClip | None, str]:
        folder = self.root / self.frames_dir / entry.clip_id
        flow_prefixes = tuple(prefix for prefix in (self.flow_x_prefix, self.flow_y_prefix) if prefix)
        frames = [
            path
            for path in _named(list_frames(folder), self.frames_prefix)
            if not (flow_prefixes and path.name.startswith(flow_prefixes))
        ]
        if not frames:
            return None, frames_problem(folder, "RGB *.jpg frames")
        flows = []
        for directory, prefix, axis in (
            (self.flow_x_dir, self.flow_x_prefix, "x"),
            (self.flow_y_dir, self.flow_y_prefix, "y"),
        ):
            flow_folder = self.root / directory / entry.clip_id
            flow = _named(list_frames(flow_folder), prefix)
            if not flow:
                return None, frames_problem(flow_folder, f"{prefix}*.jpg {axis}-flow frames")
            flows.append(flow)
        count = min(len(flow) for flow in flows)  # an x frame without its y frame (or back) is not used
        return VideoClip(
            entry.clip_id, entry.label, tuple(frames), tuple(flows[0][:count]), tuple(flows[1][:count])
        ), ""

    def _dataset(self, clips: list[VideoClip], train: bool) -> UCF101ClipDataset:
        return UCF101ClipDataset(
            clips, self.num_frames, self.flow_length, self.flow_sampling, self.image_size, train=train
        )


def _named(paths: list[Path], prefix: str) -> list[Path]:
    return [path for path in paths if path.name.startswith(prefix)] if prefix else paths


def _checked_label(given: str, num_classes: int, by_folder: int | None) -> int | None:
    """A list's 1-based label as a class index; None when out of range or not the class folder's."""
    if not given.isdigit() or not 1 <= int(given) <= num_classes:
        return None
    return int(given) - 1 if by_folder in (None, int(given) - 1) else None
