"""Kinetics-Sounds: the Kinetics clips of about 31 sound-producing actions, with fbank audio features."""

from __future__ import annotations

from pathlib import Path, PurePath

from pdmp_lightning.data.audiovisual.base import AudioVisualDataModule
from pdmp_lightning.data.audiovisual.media import FrameSelection
from pdmp_lightning.data.audiovisual.splits import ClipEntry, read_rows, relative_path, unique_entries
from pdmp_lightning.errors import config_error
from pdmp_lightning.types import NonNegativeInt, OpenUnitInterval, PositiveInt


class KineticsSoundsDataModule(AudioVisualDataModule):
    """Kinetics-Sounds (31 classes in OGM-GE's copy, 32-34 in others) with a carved validation split.

    Expected below ``root`` (every path option is relative to it):

    - ``my_train.txt`` and ``my_test.txt``: either csv rows ``name,10,label`` (OGM-GE) or whitespace-separated
      rows with the name first and the label last;
    - ``visual/<name>/*.jpg``: the frames (e.g. ``frame_00001.jpg`` ... at 1 fps; sorted naturally);
    - ``audio/<name>.npy``: the kaldi fbank features, ``1024 x 128`` (128 mel bins, 10 ms shift), already
      normalised by the preprocessing (mean -4.503877, divided by 2 x 5.141276); read as stored.

    Batches are ``{"audio": float32 [B, 1, 1024, 128], "visual": float32 [B, 3, T, H, W], "label": int64 [B]}``.

    The class count comes from the lists: with integer labels (OGM-GE) they are used as the class indices
    and ``num_classes`` is the largest label in the train and test lists plus one; with other labels
    (class names without spaces) the names found are sorted and indexed. There is no validation list:
    ``val_fraction`` of the usable train clips is carved out, stratified by class and seeded by ``seed``.
    ``num_frames`` frames are taken per clip (3 by default, the usual choice): by default frames
    ``floor(N / T) * i`` of the ``N`` sorted frames, as OGM-GE's loader (``frame_0000{seg * i + 1}.jpg``),
    which repeats the first frame when a clip has fewer than ``T``; ``frame_selection="centres"`` for the
    centres of ``T`` equal segments, ``"first"`` for the first ``T``. Clips whose frames or audio are
    missing are skipped with a warning.

    Args:
        root: The Kinetics-Sounds folder.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        num_frames: Frames per clip.
        image_size: Height and width of the frames (224 in the papers; smaller for CPU runs).
        val_fraction: Share of the usable train clips carved into the validation split.
        seed: Seed of the validation carve.
        frames_dir: Folder of the per-clip frame folders (``"."`` if they sit in ``root`` itself).
        audio_dir: Folder of the ``<name>.npy`` features.
        train_split: The train list.
        test_split: The test list.
        delimiter: Field separator of the lists (None: ``","`` on lines that hold one, else whitespace).
        frame_selection: Which frames of a clip: ``"segment_starts"`` (official), ``"first"`` or
            ``"centres"`` (see ``frame_indices``).

    Examples:
        >>> try:
        ...     KineticsSoundsDataModule("no/such/folder")
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
        image_size: PositiveInt = 224,
        val_fraction: OpenUnitInterval = 0.1,
        seed: int = 0,
        frames_dir: str = "visual",
        audio_dir: str = "audio",
        train_split: str = "my_train.txt",
        test_split: str = "my_test.txt",
        delimiter: str | None = None,
        frame_selection: FrameSelection = "segment_starts",
    ) -> None:
        super().__init__(root, batch_size, num_workers, num_frames, image_size, val_fraction, seed)
        self._set_frame_selection(frame_selection)
        if delimiter is not None and (not isinstance(delimiter, str) or not delimiter):
            raise config_error("delimiter", delimiter, "a non-empty string, or None to detect ',' or whitespace")
        self.delimiter = delimiter
        self.frames_dir = relative_path("frames_dir", frames_dir)
        self.audio_dir = relative_path("audio_dir", audio_dir)
        self.train_split = relative_path("train_split", train_split)
        self.test_split = relative_path("test_split", test_split)
        self._index()

    def _expected_layout(self) -> dict[str, str]:
        rows = "rows `name,10,label` or `name ... label`"
        return {
            str(self.train_split): f"train list, {rows}",
            str(self.test_split): f"test list, {rows}",
            f"{self.frames_dir}/<name>/": "*.jpg frames",
            f"{self.audio_dir}/<name>.npy": "fbank features",
        }

    def _split_files(self) -> list[PurePath]:
        return [self.train_split, self.test_split]

    def _read_lists(self) -> tuple[dict[str, list[ClipEntry]], list[str]]:
        rows = {
            "train": self._read_list("train_split", self.train_split),
            "test": self._read_list("test_split", self.test_split),
        }
        labels = [label for listed in rows.values() for _, label in listed]
        if all(_is_index(label) for label in labels):
            class_names = [str(index) for index in range(max(int(label) for label in labels) + 1)]
            index = {label: int(label) for label in labels}
        else:
            class_names = sorted(set(labels))
            index = {name: position for position, name in enumerate(class_names)}
        lists = {
            split: unique_entries([ClipEntry(name, index[label]) for name, label in listed])
            for split, listed in rows.items()
        }
        return lists, class_names

    def _read_list(self, argument: str, relative: PurePath) -> list[tuple[str, str]]:
        """(name, label) of every row: the first and the last field."""
        path = self.root / relative
        listed = []
        for number, row in read_rows(path):
            separator = self.delimiter if self.delimiter is not None else ("," if "," in row else None)
            fields = [field.strip() for field in row.split(separator)]
            if len(fields) < 2 or not fields[0] or not fields[-1]:
                raise config_error(
                    argument, f"{path} line {number}: {row!r}", "rows `name,10,label` or `name ... label`"
                )
            listed.append((fields[0], fields[-1]))
        if not listed:
            raise config_error(argument, str(path), "a list naming at least one clip", hint="the file is empty")
        return listed

    def _frames_folder(self, clip_id: str) -> Path:
        return self.root / self.frames_dir / clip_id

    def _audio_candidates(self, clip_id: str) -> tuple[Path, ...]:
        return (self.root / self.audio_dir / f"{clip_id}.npy",)


def _is_index(label: str) -> bool:
    """Whether a label is a non-negative integer written in ASCII digits."""
    return label.isascii() and label.isdigit()
