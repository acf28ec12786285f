"""AVE (Audio-Visual Event): 4,143 videos of 28 events, as OGM-GE's preprocessing leaves them on disk."""

from __future__ import annotations

from pathlib import Path, PurePath

from pdmp_lightning.data.audiovisual.base import AudioVisualDataModule
from pdmp_lightning.data.audiovisual.media import FrameSelection
from pdmp_lightning.data.audiovisual.splits import ClipEntry, read_rows, relative_path, unique_entries
from pdmp_lightning.errors import config_error
from pdmp_lightning.types import NonNegativeInt, PositiveInt

#: The first fields of the header row of ``Annotations.txt`` (skipped wherever it appears).
HEADER = ("category", "videoid")


class AVEDataModule(AudioVisualDataModule):
    """AVE (28 audio-visual events; train/val/test 3,339/402/402) with the dataset's own three lists.

    Expected below ``root`` (every path option is relative to it):

    - ``trainSet.txt``, ``valSet.txt``, ``testSet.txt``: lines ``Category&VideoID&Quality&StartTime&EndTime``;
      ``Annotations.txt`` (same format, with a header) is read too when present;
    - ``Image-01-FPS-SE/<VideoID>/*.jpg``: frames at 1 fps inside the event segment (sorted naturally);
    - ``Audio-1004-SE/<VideoID>.npy`` or ``.pkl``: the log spectrogram ``257 x 1004``.

    Batches are ``{"audio": float32 [B, 1, 257, 1004], "visual": float32 [B, 3, T, H, W], "label": int64 [B]}``
    (the stored spectrogram with a channel dimension added).

    Security: a ``.pkl`` file is unpickled, which runs whatever code it holds. Pickles are read only
    from ``audio_dir`` below the ``root`` you give (absolute paths and ``..`` are refused), so only
    point ``root`` at a copy you trust. A ``.npy`` file next to the pickle (same name) is preferred and
    read with ``allow_pickle=False``; ``allow_pickle=False`` ignores the pickles altogether.

    AVE has its own validation list, which is used as is (there is no ``val_fraction`` or ``seed``).
    Labels index the categories sorted alphabetically, as found in the lists (and in ``Annotations.txt``
    when present): 28 for the full dataset. A video listed twice in one list is kept once (first line).
    ``num_frames`` frames are taken per clip (3 by default): by default the first ``num_frames`` in sorted
    order, as the loader of this layout (PMR's ``AVEDataset``) does with ``os.listdir``;
    ``frame_selection="segment_starts"`` for OGM-GE's ``AVDataset`` rule, ``"centres"`` for evenly spaced
    frames; a clip with fewer frames repeats its last one. Clips whose frames or audio are missing are
    skipped with a warning.

    Args:
        root: The AVE folder.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        num_frames: Frames per clip.
        image_size: Height and width of the frames (224 in the papers; smaller for CPU runs).
        frames_dir: Folder of the per-video frame folders.
        audio_dir: Folder of the spectrograms.
        allow_pickle: Read ``.pkl`` spectrograms when no ``.npy`` is next to them.
        train_split: The train list.
        val_split: The validation list.
        test_split: The test list.
        annotations: The list of all videos, read (when present) for the class names.
        frame_selection: Which frames of a clip: ``"first"`` (official), ``"segment_starts"`` or
            ``"centres"`` (see ``frame_indices``).

    Examples:
        >>> try:
        ...     AVEDataModule("no/such/folder")
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
        frames_dir: str = "Image-01-FPS-SE",
        audio_dir: str = "Audio-1004-SE",
        allow_pickle: bool = True,
        train_split: str = "trainSet.txt",
        val_split: str = "valSet.txt",
        test_split: str = "testSet.txt",
        annotations: str = "Annotations.txt",
        frame_selection: FrameSelection = "first",
    ) -> None:
        super().__init__(root, batch_size, num_workers, num_frames, image_size, val_fraction=None, seed=0)
        self._set_frame_selection(frame_selection)
        if not isinstance(allow_pickle, bool):
            raise config_error("allow_pickle", allow_pickle, "True or False")
        self.allow_pickle = allow_pickle
        self.frames_dir = relative_path("frames_dir", frames_dir)
        self.audio_dir = relative_path("audio_dir", audio_dir)
        self.split_paths = {
            "train": relative_path("train_split", train_split),
            "val": relative_path("val_split", val_split),
            "test": relative_path("test_split", test_split),
        }
        self.annotations = relative_path("annotations", annotations)
        self._index()

    def _expected_layout(self) -> dict[str, str]:
        audio = "npy or .pkl" if self.allow_pickle else "npy"
        return {
            **{str(path): f"{split} list, lines `Category&VideoID&...`" for split, path in self.split_paths.items()},
            f"{self.frames_dir}/<VideoID>/": "*.jpg frames",
            f"{self.audio_dir}/<VideoID>.{audio}": "spectrogram",
        }

    def _split_files(self) -> list[PurePath]:
        return list(self.split_paths.values())

    def _read_lists(self) -> tuple[dict[str, list[ClipEntry]], list[str]]:
        rows = {split: self._read_list(f"{split}_split", path) for split, path in self.split_paths.items()}
        categories = {category for listed in rows.values() for category, _ in listed}
        if (self.root / self.annotations).is_file():
            categories.update(category for category, _ in self._read_list("annotations", self.annotations))
        class_names = sorted(categories)
        label = {name: index for index, name in enumerate(class_names)}
        lists = {
            split: unique_entries([ClipEntry(video, label[category]) for category, video in listed])
            for split, listed in rows.items()
        }
        return lists, class_names

    def _read_list(self, argument: str, relative: PurePath) -> list[tuple[str, str]]:
        """(category, video id) of every line but a header."""
        path = self.root / relative
        listed = []
        for number, row in read_rows(path):
            fields = [field.strip() for field in row.split("&")]
            if len(fields) < 2 or not fields[0] or not fields[1]:
                raise config_error(
                    argument, f"{path} line {number}: {row!r}", "lines `Category&VideoID&Quality&StartTime&EndTime`"
                )
            if (fields[0].lower(), fields[1].lower()) != HEADER:
                listed.append((fields[0], fields[1]))
        return listed

    def _frames_folder(self, clip_id: str) -> Path:
        return self.root / self.frames_dir / clip_id

    def _audio_candidates(self, clip_id: str) -> tuple[Path, ...]:
        folder = self.root / self.audio_dir
        npy = folder / f"{clip_id}.npy"
        return (npy, folder / f"{clip_id}.pkl") if self.allow_pickle else (npy,)
