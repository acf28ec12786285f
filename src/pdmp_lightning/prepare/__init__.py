"""Turns raw CREMA-D, AVE, Kinetics-Sounds and UCF-101 downloads into the layouts the datamodules read.

Usage::

    python -m pdmp_lightning.prepare cremad --raw CREMA-D --out data/cremad [--splits OGM-GE/data/CREMAD]
    python -m pdmp_lightning.prepare ave --raw AVE_Dataset --out data/ave
    python -m pdmp_lightning.prepare kinetics_sounds --raw ks_videos --splits ks_splits --out data/ks
    python -m pdmp_lightning.prepare ucf101 --raw UCF101_download --out data/ucf101 [--fps F] [--flow tvl1]

External programs: **ffmpeg** only (Debian/Ubuntu package ``ffmpeg``: ``apt-get install ffmpeg``), run
through ``subprocess`` with explicit argument lists (never a shell) to cut frames and to decode audio.
``--ffmpeg PATH`` points at another binary. Python packages: numpy, torch, tqdm, soundfile (reads the
decoded wav; ``torchaudio.load`` is not used because it needs torchcodec and FFmpeg's shared libraries),
soxr (resamples CREMA-D and AVE audio as ``librosa.load`` does) and, for Kinetics-Sounds, torchaudio
(``torchaudio.compliance.kaldi.fbank``): ``pip install "pdmp-lightning[audio]"``. UCF-101 needs OpenCV
instead of soundfile for the optical flow (``opencv-contrib-python-headless``, in
``pip install "pdmp-lightning[av]"``).

Layouts written under ``--out`` (those of the public preprocessing scripts, see the datamodules):

* ``cremad``: ``Image-01-FPS/<clip>/00001.jpg ...`` (1 fps over the whole video),
  ``AudioWAV/<clip>.wav`` (the raw wav as ``librosa.load(sr=22050)`` reads it, the official CREMA-D
  recipe's first step: channels averaged, resampled with soxr "HQ" to librosa's length, stored as a
  32-bit float wav so that training reads it back exactly and resamples nothing; any other audio format
  is decoded by ffmpeg to a 22,050 Hz mono 16-bit wav), ``train.csv`` and ``test.csv`` (rows ``clip,EMO``, no header).
* ``ave``: ``Image-01-FPS-SE/<id>/00001.jpg ...`` (1 fps inside the event segment
  ``[StartTime, EndTime]``), ``Audio-1004-SE/<id>.npy`` (float32 log spectrogram 257 x 1004, see
  ``ave_event_spectrogram``; ``.npy`` instead of the upstream pickle, so loading runs no code),
  ``trainSet.txt``, ``valSet.txt``, ``testSet.txt`` (and ``Annotations.txt`` when present), copied.
* ``kinetics_sounds``: ``visual/<name>/frame_00001.jpg ...`` (1 fps, at most 10 frames), ``audio/<name>.npy``
  (kaldi fbank 1024 x 128, see ``kinetics_fbank``), ``my_train.txt`` and ``my_test.txt``, copied.
* ``ucf101``: ``frames/<clip>/00001.jpg ...`` (every frame, or ``--fps``), ``flow/<clip>/flow_x_00001.jpg``
  and ``flow_y_00001.jpg ...`` (optical flow from each frame to the next, one fewer than the frames;
  grayscale JPEGs of the flow clipped to [-20, 20] pixels and mapped onto 0..255, 128 = still),
  ``ucfTrainTestlist/`` (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``, copied) and
  ``flow_method.txt`` (the method, OpenCV's version and the range). The videos are the ``.avi`` files
  under ``--raw`` (searched recursively) that the lists name.

Choices:

* Splits for CREMA-D: ``--splits DIR`` copies OGM-GE's ``train.csv``/``test.csv`` verbatim. Without it a
  split is drawn, stratified by emotion (the third ``_`` field of the clip id): per emotion the clip ids
  are sorted, shuffled with ``random.Random(seed)`` (emotions in alphabetical order) and the first
  ``floor(n * test_fraction + 0.5)`` go to ``test.csv``. The draw covers every raw clip that has a video,
  an audio file and an emotion, so a clip's side does not change when a rerun completes other clips; only
  clips whose outputs are complete get a row. The split is not speaker-independent (nor is OGM-GE's).
* Metadata (split and annotation files) is small: it is rewritten on every run when its content would
  change, so it always mirrors the source; ``--overwrite`` concerns frames and audio.
* Resuming: a clip whose outputs all exist (a frame folder with at least one jpg, a non-empty audio
  file) is skipped unless ``--overwrite``; a clip with some outputs redoes only the missing ones. Every
  file and frame folder is written under a temporary ``.<name>.<random>.prepare-tmp`` name and renamed
  into place, so an interrupted run leaves no half output; stale temporaries are removed on the next
  run (do not run two preparations into the same ``--out`` at once).
* Failures are per clip: reported as they happen, counted in the summary, never fatal. Clips whose raw
  inputs are missing are skipped with the reason. A clip that fails keeps the outputs it finished (whole
  files only; a rerun redoes the rest) and gets no row in a drawn CREMA-D split. The exit status is 0
  when at least one clip has complete outputs after the run, 1 when none has, 2 for a configuration
  error and 130 when interrupted.
* Audio follows the official preprocessing (see ``docs/datasets.md``). AVE (PMR's chain): ffmpeg decodes
  the whole audio track to a temporary 44.1 kHz 16-bit wav (as moviepy's ``write_audiofile``), which is
  read as ``librosa.load(sr=16000)`` reads it (soxr "HQ"); the event segment ``[StartTime, EndTime]`` is
  cut from the 16 kHz samples, repeated until it fills 10 s and cut there. Kinetics-Sounds (OGM-GE's
  chain): ffmpeg decodes the whole clip to a 16 kHz 16-bit wav (``-ar 16000``, channels kept), whose
  first channel, minus the mean of all, goes into the fbank.
* Frames: ffmpeg's ``fps=1`` filter (UCF-101: every frame, or ``fps=F``), JPEG quality ``-q:v 2``, numbered
  from 1.
* Optical flow (UCF-101): OpenCV's Dual TV-L1 (default parameters) where opencv-contrib provides it,
  else Farneback (``--flow`` chooses); computed on the grayscale extracted frames, clipped to
  [-20, 20] pixels, mapped linearly onto 0..255 and stored at JPEG quality 95. The method is
  recorded in ``flow_method.txt``; resuming with another method is refused (``--overwrite`` redoes all).
"""

from __future__ import annotations

from pdmp_lightning.prepare.audio import (
    AVE_AUDIO_RATE,
    AVE_NOVERLAP,
    AVE_NPERSEG,
    AVE_SECONDS,
    AVE_SHAPE,
    AVE_TUKEY_ALPHA,
    AVE_WAV_RATE,
    KS_AUDIO_RATE,
    KS_MEAN,
    KS_MEL_BINS,
    KS_STD,
    KS_TARGET_LENGTH,
    ave_event_spectrogram,
    ave_log_spectrogram,
    kinetics_fbank,
)
from pdmp_lightning.prepare.ave import AVE_SPLITS
from pdmp_lightning.prepare.cli import DATASETS, build_parser, main, prepare
from pdmp_lightning.prepare.cremad import CREMAD_AUDIO_RATE, CREMAD_EMOTIONS, cremad_emotion, stratified_split
from pdmp_lightning.prepare.ffmpeg import INSTALL_HINT, JPEG_QUALITY, ClipFailure, FFmpeg, find_ffmpeg
from pdmp_lightning.prepare.files import TEMP_SUFFIX
from pdmp_lightning.prepare.jobs import EXAMPLES_SHOWN, ClipJob, ClipResult, Output, PrepareSummary
from pdmp_lightning.prepare.kinetics_sounds import KS_MAX_FRAMES, KS_SPLITS
from pdmp_lightning.prepare.raw import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS
from pdmp_lightning.prepare.ucf101 import (
    FLOW_BOUND,
    FLOW_METHODS,
    UCF101_LISTS,
    compute_flow,
    default_flow_method,
    flow_to_uint8,
    ucf101_list_clip,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "AVE_AUDIO_RATE",
    "AVE_NOVERLAP",
    "AVE_NPERSEG",
    "AVE_SECONDS",
    "AVE_SHAPE",
    "AVE_SPLITS",
    "AVE_TUKEY_ALPHA",
    "AVE_WAV_RATE",
    "CREMAD_AUDIO_RATE",
    "CREMAD_EMOTIONS",
    "DATASETS",
    "EXAMPLES_SHOWN",
    "FLOW_BOUND",
    "FLOW_METHODS",
    "INSTALL_HINT",
    "JPEG_QUALITY",
    "KS_AUDIO_RATE",
    "KS_MAX_FRAMES",
    "KS_MEAN",
    "KS_MEL_BINS",
    "KS_SPLITS",
    "KS_STD",
    "KS_TARGET_LENGTH",
    "TEMP_SUFFIX",
    "UCF101_LISTS",
    "VIDEO_EXTENSIONS",
    "ClipFailure",
    "ClipJob",
    "ClipResult",
    "FFmpeg",
    "Output",
    "PrepareSummary",
    "ave_event_spectrogram",
    "ave_log_spectrogram",
    "build_parser",
    "compute_flow",
    "cremad_emotion",
    "default_flow_method",
    "find_ffmpeg",
    "flow_to_uint8",
    "kinetics_fbank",
    "main",
    "prepare",
    "stratified_split",
    "ucf101_list_clip",
]
