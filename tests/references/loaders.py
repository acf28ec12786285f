"""The official audio-visual input pipelines, transplanted for the conformance tests and ``benchmarks/loaders.py``.

Each function or ``__getitem__`` below is the official code as written, with only what ties it to the
authors' machines replaced (``args``, hard-coded folders) and ``torchaudio.load`` replaced by soundfile
where FFmpeg is not at hand (the same float32 samples for PCM wavs). librosa (a test-only dependency, in
the ``dev`` extra) is imported when first used.

- CREMA-D: GeWu-Lab/OGM-GE_CVPR2022@343dc1d, ``dataset/CramedDataset.py`` lines 54-97 (``__getitem__``:
  ``librosa.load(sr=22050)``, ``np.tile(samples, 3)``, ``librosa.stft(n_fft=512, hop_length=353)``,
  ``log(|S| + 1e-7)``; the first ``fps`` names of ``os.listdir``).
- AVE (the ``Audio-1004-SE`` / ``Image-01-FPS-SE`` layout): fanyunfeng-bit/Modal-Imbalance-PMR@3615e48
  (files of 1e5c79b), ``data/AVE/video_preprocessing.py`` lines 199-229 (``extractWav_SE``:
  ``librosa.load(sr=16000)``, the event segment ``samples[16000 * start:16000 * end]``, tiled,
  ``scipy.signal.spectrogram(nperseg=512, noverlap=353)``, log, z-score) and ``dataset/AVEDataset.py``
  lines 70-116 (``__getitem__``: the pickle, the first ``num_frame`` names of ``os.listdir``); the wavs
  are written by ``data/AVE/mp4_to_wav.py`` line 83 (moviepy's ``write_audiofile``: 44.1 kHz 16-bit).
- Kinetics-Sounds: GeWu-Lab/OGM-GE_CVPR2022@343dc1d, ``data/KineticSound/process_audio.py`` lines 30-49
  (kaldi fbank at the wav's own rate) and ``dataset/dataset.py`` lines 69-113 (``AVDataset.__getitem__``:
  the pickled features, frames ``frame_0000{seg * i + 1}.jpg`` with ``seg = N // 3``).
"""

from __future__ import annotations

import copy
import os
import pickle
import warnings
from typing import Any

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from scipy import signal
from torch.utils.data import Dataset


def _librosa() -> Any:
    with warnings.catch_warnings():
        # librosa imports audioread, which imports the deprecated aifc module on Python 3.11-3.12.
        warnings.simplefilter("ignore", DeprecationWarning)
        import librosa
    return librosa


def librosa_load(path: str, sr: int) -> tuple[np.ndarray, int]:
    """``librosa.load(path, sr=sr)`` (its audioread fallback imports a deprecated module: silenced)."""
    librosa = _librosa()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        samples, rate = librosa.load(path, sr=sr)
    return samples, int(rate)


def _transforms(mode: str) -> Any:
    from torchvision import transforms

    if mode == "train":
        return transforms.Compose(
            [
                transforms.RandomResizedCrop(224),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        )
    return transforms.Compose(
        [
            transforms.Resize(size=(224, 224)),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )


# --- CREMA-D (OGM-GE) -----------------------------------------------------------------------------


def cremad_spectrogram(path: str, pad_mode: str = "reflect") -> np.ndarray:
    """``CramedDataset.__getitem__`` lines 57-63. ``pad_mode="reflect"``: librosa < 0.10's default, OGM-GE's."""
    librosa = _librosa()
    samples, rate = librosa_load(path, sr=22050)
    resamples = np.tile(samples, 3)[: 22050 * 3]
    resamples[resamples > 1.0] = 1.0
    resamples[resamples < -1.0] = -1.0

    spectrogram = librosa.stft(resamples, n_fft=512, hop_length=353, pad_mode=pad_mode)
    spectrogram = np.log(np.abs(spectrogram) + 1e-7)
    return spectrogram


class CramedDataset(Dataset[Any]):
    """OGM-GE's CREMA-D dataset: ``items`` are (wav path, frame folder, label); ``fps`` frames per clip."""

    def __init__(self, items: list[tuple[str, str, int]], mode: str = "train", fps: int = 1) -> None:
        self.audio = [item[0] for item in items]
        self.image = [item[1] for item in items]
        self.label = [item[2] for item in items]
        self.mode = mode
        self.fps = fps

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, idx: int) -> tuple[Any, Any, int]:
        # audio
        spectrogram = cremad_spectrogram(self.audio[idx])

        transform = _transforms(self.mode)

        # Visual
        image_samples = os.listdir(self.image[idx])
        select_index = np.random.choice(len(image_samples), size=self.fps, replace=False)
        select_index.sort()
        images = torch.zeros((self.fps, 3, 224, 224))
        for i in range(self.fps):
            img = Image.open(os.path.join(self.image[idx], image_samples[i])).convert("RGB")
            img = transform(img)
            images[i] = img

        images = torch.permute(images, (1, 0, 2, 3))

        # label
        label = self.label[idx]

        return spectrogram, images, label


# --- AVE (PMR's Audio-1004-SE layout) ---------------------------------------------------------------


def ave_spectrogram(path: str, start_t: int, end_t: int, sr: int = 16000) -> np.ndarray:
    """``extractWav_SE``, lines 203-225, for one wav and its event segment ``[start_t, end_t]`` (seconds)."""
    shape = sr * 10
    samples, rate = librosa_load(path, sr=sr)
    samples = samples[sr * start_t : sr * end_t]
    resamples = np.tile(samples, 10)
    if resamples.shape[0] < shape:
        resamples = np.tile(resamples, 10)[:shape]
    else:
        resamples = resamples[:shape]
    resamples[resamples > 1.0] = 1.0
    resamples[resamples < -1.0] = -1.0

    frequencies, times, spectrogram = signal.spectrogram(resamples, rate, nperseg=512, noverlap=353)
    spectrogram = np.log(np.abs(spectrogram) + 1e-7)
    mean = np.mean(spectrogram)
    std = np.std(spectrogram)
    spectrogram = np.divide(spectrogram - mean, std + 1e-9)
    return spectrogram


class AVEDataset(Dataset[Any]):
    """PMR's AVE dataset: ``items`` are (pickle path, frame folder, label); ``num_frame`` frames per clip."""

    def __init__(self, items: list[tuple[str, str, int]], mode: str = "train", num_frame: int = 3) -> None:
        self.audio = [item[0] for item in items]
        self.image = [item[1] for item in items]
        self.label = [item[2] for item in items]
        self.mode = mode
        self.num_frame = num_frame

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, idx: int) -> tuple[Any, Any, int]:
        with open(self.audio[idx], "rb") as handle:  # the original leaves the file to the garbage collector
            spectrogram = pickle.load(handle)

        transform = _transforms(self.mode)

        # Visual
        image_samples = os.listdir(self.image[idx])
        images = torch.zeros((self.num_frame, 3, 224, 224))
        for i in range(self.num_frame):
            img = Image.open(os.path.join(self.image[idx], image_samples[i])).convert("RGB")
            img = transform(img)
            images[i] = img

        images = torch.permute(images, (1, 0, 2, 3))

        # label
        label = self.label[idx]

        return spectrogram, images, label


# --- Kinetics-Sounds (OGM-GE) ------------------------------------------------------------------------


def kinetics_fbank(path: str) -> np.ndarray:
    """``process_audio.py`` lines 30-49 for one wav (``torchaudio.load`` read with soundfile: ``[C, n]`` float32)."""
    import torchaudio

    data, sr = sf.read(path, dtype="float32", always_2d=True)
    waveform = torch.from_numpy(np.ascontiguousarray(data.T))
    waveform = waveform - waveform.mean()
    norm_mean = -4.503877
    norm_std = 5.141276

    fbank = torchaudio.compliance.kaldi.fbank(
        waveform,
        htk_compat=True,
        sample_frequency=sr,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )

    target_length = 1024
    n_frames = fbank.shape[0]
    p = target_length - n_frames

    # cut and pad
    if p > 0:
        m = torch.nn.ZeroPad2d((0, 0, 0, p))
        fbank = m(fbank)
    elif p < 0:
        fbank = fbank[0:target_length, :]
    fbank = (fbank - norm_mean) / (norm_std * 2)
    result: np.ndarray = fbank.numpy()
    return result


class KineticsSoundsDataset(Dataset[Any]):
    """OGM-GE's ``AVDataset`` on Kinetics-Sounds: ``items`` are (pickle path, frame folder, label)."""

    def __init__(self, items: list[tuple[str, str, int]], mode: str = "train") -> None:
        self.audio = [item[0] for item in items]
        self.visual = [item[1] for item in items]
        self.label = [item[2] for item in items]
        self.mode = mode

    def __len__(self) -> int:
        return len(self.visual)

    def __getitem__(self, idx: int) -> tuple[Any, Any, int]:
        # Audio
        with open(self.audio[idx], "rb") as handle:  # the original leaves the file to the garbage collector
            spectrogram = pickle.load(handle)

        # Visual
        visual_path = self.visual[idx]
        file_num = len(os.listdir(visual_path))

        transform = _transforms(self.mode)

        pick_num = 3
        seg = int(file_num / pick_num)
        path1 = []
        image = []
        image_arr = []
        t = [0] * pick_num

        for i in range(pick_num):
            t[i] = seg * i + 1
            path1.append("frame_0000" + str(t[i]) + ".jpg")
            image.append(Image.open(visual_path + "/" + path1[i]).convert("RGB"))
            image_arr.append(transform(image[i]))
            image_arr[i] = image_arr[i].unsqueeze(1).float()
            if i == 0:
                image_n = copy.copy(image_arr[i])
            else:
                image_n = torch.cat((image_n, image_arr[i]), 1)

        return spectrogram, image_n, self.label[idx]
