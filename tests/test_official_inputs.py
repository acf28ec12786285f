"""The audio features and frames equal those of the official pipelines (``tests/references/loaders.py``).

Generated clips at the recipe's rate and at others, short ones (tiled) and odd lengths. Spectrograms
must match to 1e-4 in relative norm (``||ours - official|| / ||official||``); float32 rounding leaves
about 1e-6.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from pdmp_lightning.data.audiovisual import CREMADDataModule
from pdmp_lightning.data.audiovisual.media import Resampler, frame_indices, load_audio, read_samples, read_wav
from tests.references import loaders as official

TOLERANCE = 1e-4


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def write_clip(path: Path, rate: int, samples: int, channels: int = 1, subtype: str = "PCM_16") -> Path:
    """Noise (energy up to the Nyquist frequency) over a loud 440 Hz tone that the recipes clip at 1."""
    generator = np.random.default_rng(samples + rate)
    t = np.arange(samples) / rate
    wave = 0.3 * generator.standard_normal((samples, channels)) + 0.9 * np.sin(2 * np.pi * 440 * t)[:, None]
    soundfile.write(path, np.clip(wave, -1, 1).astype(np.float32) if subtype == "PCM_16" else wave, rate, subtype)
    return path


# --- CREMA-D ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "samples", "channels", "subtype"),
    [
        (16_000, 20_807, 1, "PCM_16"),  # CREMA-D's own rate, an odd length: resampled to 22,050 Hz
        (22_050, 30_001, 1, "FLOAT"),  # the recipe's rate (as `prepare cremad` writes it): not resampled
        (44_100, 60_001, 2, "FLOAT"),  # stereo, downsampled, samples beyond [-1, 1] clipped
    ],
)
def test_cremad_spectrogram_equals_ogm_ge(tmp_path: Path, rate: int, samples: int, channels: int, subtype: str) -> None:
    path = write_clip(tmp_path / "clip.wav", rate, samples, channels, subtype)
    ours = load_audio(path)
    reference = official.cremad_spectrogram(str(path))
    assert ours.shape == (1, 257, 188) and reference.shape == (257, 188)
    assert relative_difference(ours[0].numpy(), reference) < TOLERANCE


def test_short_cremad_clip_is_tiled_to_3_s_and_matches_where_the_official_is_defined(tmp_path: Path) -> None:
    # 0.6 s: the official np.tile(samples, 3) covers 1.8 s (113 frames, a shape its batches cannot hold);
    # the library repeats the clip until 3 s. The frames inside the official 1.8 s are the same.
    path = write_clip(tmp_path / "short.wav", 16_000, 9_601)
    ours, reference = load_audio(path)[0].numpy(), official.cremad_spectrogram(str(path))
    assert ours.shape == (257, 188) and reference.shape == (257, 113)
    covered = (3 * Resampler(22_050)(np.zeros(9_601, np.float32), 16_000).size - 256) // 353
    assert relative_difference(ours[:, :covered], reference[:, :covered]) < TOLERANCE


def test_resampling_is_librosa_load(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "clip.wav", 16_000, 16_001, channels=2)
    samples, rate = read_samples(path)
    ours = Resampler(22_050)(samples, rate)
    reference, _ = official.librosa_load(str(path), sr=22_050)
    assert ours.dtype == np.float32 and ours.shape == reference.shape == (22_052,)  # ceil(16001 * 22050 / 16000)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)
    assert Resampler(22_050)(samples, 22_050) is samples  # the recipe's rate: untouched
    with pytest.raises(ValueError, match="`sample_rate`: got 0"):
        Resampler(0)
    with pytest.raises(ValueError, match=r"`resampler`: got .*expected a Resampler to sample_rate"):
        read_wav(path, 22_050, Resampler(16_000))
    with pytest.raises(ValueError, match="`selection`: got 'last'"):
        frame_indices(3, 1, "last")  # type: ignore[arg-type]


def test_cremad_datamodule_batches_the_official_spectrogram(tmp_path: Path) -> None:
    clips = ["1001_DFA_ANG_XX", "1002_DFA_NEU_XX"]
    (tmp_path / "AudioWAV").mkdir()
    for index, clip in enumerate(clips):
        write_clip(tmp_path / "AudioWAV" / f"{clip}.wav", 16_000, 24_000 + 7 * index)
        (tmp_path / "Image-01-FPS" / clip).mkdir(parents=True)
        Image.new("RGB", (24, 20)).save(tmp_path / "Image-01-FPS" / clip / "00001.jpg")
    (tmp_path / "train.csv").write_text("".join(f"{clip},{clip.split('_')[2]}\n" for clip in clips * 2))
    (tmp_path / "test.csv").write_text("".join(f"{clip},{clip.split('_')[2]}\n" for clip in clips))
    datamodule = CREMADDataModule(str(tmp_path), batch_size=2, image_size=16, num_workers=1)
    batch = next(iter(datamodule.test_dataloader()))  # through a worker process
    for row, clip in enumerate(clips):
        reference = official.cremad_spectrogram(str(tmp_path / "AudioWAV" / f"{clip}.wav"))
        assert relative_difference(batch["audio"][row, 0].numpy(), reference) < TOLERANCE


# --- frames ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("available", [1, 2, 3, 5, 9, 10, 11])
def test_frame_rules_equal_the_official_indexing(available: int) -> None:
    names = [f"{index:05d}.jpg" for index in range(1, available + 1)]
    # OGM-GE CREMA-D / PMR AVE: image_samples[i] for i < T (os.listdir, here listed in order).
    for count in range(1, min(available, 3) + 1):
        assert [names[i] for i in frame_indices(available, count, "first")] == names[:count]
    # OGM-GE AVDataset (Kinetics-Sounds): 'frame_0000' + str(seg * i + 1) with seg = int(N / 3).
    seg = int(available / 3)
    official_files = ["frame_0000" + str(seg * i + 1) + ".jpg" for i in range(3)]
    ks_names = [f"frame_0000{index}.jpg" for index in range(1, available + 1)]
    assert [ks_names[i] for i in frame_indices(available, 3, "segment_starts")] == official_files


def test_torch_resampler_would_fail_the_tolerance(tmp_path: Path) -> None:
    """The defect of issue 19: torchaudio's default resampler differs from librosa above 8 kHz."""
    from torchaudio.functional import resample

    from pdmp_lightning.data.audiovisual.media import log_spectrogram

    path = write_clip(tmp_path / "clip.wav", 16_000, 20_807)
    samples, _ = read_samples(path)
    theirs = log_spectrogram(resample(torch.from_numpy(samples), 16_000, 22_050))[0].numpy()
    assert relative_difference(theirs, official.cremad_spectrogram(str(path))) > 100 * TOLERANCE


# --- AVE (PMR's Audio-1004-SE) ------------------------------------------------------------------------


def read_channels(path: Path) -> tuple[np.ndarray, int]:
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), int(rate)


@pytest.mark.parametrize(
    ("rate", "seconds", "channels", "start", "end"),
    [
        (44_100, 4.3, 2, 1, 3),  # the rate of PMR's wavs (moviepy), stereo: a 2 s event inside the clip
        (48_000, 2.6011, 1, 0, 2),  # another rate, an odd length
        (16_000, 2.5, 1, 2, 3),  # the recipe's rate: an event cut short by the clip's end (0.5 s, tiled)
        (22_050, 0.7, 1, 0, 10),  # a clip shorter than 1 s: the whole clip, tiled to 10 s
    ],
)
def test_ave_spectrogram_equals_pmr(
    tmp_path: Path, rate: int, seconds: float, channels: int, start: int, end: int
) -> None:
    from pdmp_lightning.prepare import ave_event_spectrogram

    path = write_clip(tmp_path / "clip.wav", rate, int(seconds * rate), channels)
    waveform, _ = read_channels(path)
    ours = ave_event_spectrogram(waveform, rate, start, end)
    reference = official.ave_spectrogram(str(path), start, end)
    assert ours.shape == reference.shape == (257, 1004) and ours.dtype == np.float32
    assert relative_difference(ours, reference) < TOLERANCE


# --- Kinetics-Sounds (OGM-GE) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "seconds", "channels"),
    [
        (16_000, 2.30007, 2),  # the official wavs' rate (ffmpeg -ar 16000), stereo: the first channel counts
        (48_000, 10.5, 1),  # another rate (the official fbank runs at the file's own rate), cut to 1024 frames
        (44_100, 0.5, 1),  # shorter than 1 s: zero-padded to 1024 frames
    ],
)
def test_kinetics_fbank_equals_ogm_ge(tmp_path: Path, rate: int, seconds: float, channels: int) -> None:
    from pdmp_lightning.prepare import kinetics_fbank

    path = write_clip(tmp_path / "clip.wav", rate, int(seconds * rate), channels)
    waveform, _ = read_channels(path)
    ours = kinetics_fbank(waveform, rate)
    reference = official.kinetics_fbank(str(path))
    assert ours.shape == reference.shape == (1024, 128)
    assert relative_difference(ours, reference) < TOLERANCE


# --- prepare, end to end --------------------------------------------------------------------------


def test_prepare_writes_the_official_features(tmp_path: Path) -> None:
    """``prepare ave`` / ``kinetics_sounds`` / ``cremad`` against the official chains on the same decoded audio."""
    import shutil
    import subprocess

    from pdmp_lightning.prepare import main

    ffmpeg = shutil.which("ffmpeg") or "ffmpeg"
    quiet = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    video = tmp_path / "clip.mp4"
    frames = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=2:duration=3"]
    sound = ["-f", "lavfi", "-i", "anoisesrc=duration=3:color=pink:sample_rate=48000:amplitude=0.5"]
    subprocess.run([*quiet, *frames, *sound, "-ac", "2", "-shortest", str(video)], check=True)
    raw = tmp_path / "ave_raw"
    (raw / "AVE").mkdir(parents=True)
    shutil.copy(video, raw / "AVE" / "vid.mp4")
    for name in ("trainSet.txt", "valSet.txt", "testSet.txt"):
        (raw / name).write_text("Dog&vid&good&1&3\n")
    assert main(["ave", "--raw", str(raw), "--out", str(tmp_path / "ave"), "--no-progress"]) == 0
    # PMR: mp4_to_wav.py writes a 44.1 kHz 16-bit wav (moviepy, through ffmpeg), extractWav_SE reads it.
    wav44 = tmp_path / "ave.wav"
    subprocess.run([*quiet, "-i", str(video), "-vn", "-acodec", "pcm_s16le", "-ar", "44100", str(wav44)], check=True)
    prepared = np.load(tmp_path / "ave" / "Audio-1004-SE" / "vid.npy")
    assert relative_difference(prepared, official.ave_spectrogram(str(wav44), 1, 3)) < TOLERANCE

    videos, splits = tmp_path / "ks_raw", tmp_path / "ks_splits"
    videos.mkdir()
    splits.mkdir()
    shutil.copy(video, videos / "vid_000000_000003.mp4")
    (splits / "my_train.txt").write_text("vid_000000_000003,10,0\n")
    (splits / "my_test.txt").write_text("vid_000000_000003,10,0\n")
    out = tmp_path / "ks"
    assert (
        main(["kinetics_sounds", "--raw", str(videos), "--splits", str(splits), "--out", str(out), "--no-progress"])
        == 0
    )
    # OGM-GE: `ffmpeg -i <mp4> -acodec pcm_s16le -ar 16000 <wav>` (data/VGGSound/mp4_to_wav.py), process_audio.py.
    wav16 = tmp_path / "ks.wav"
    subprocess.run([*quiet, "-i", str(video), "-acodec", "pcm_s16le", "-ar", "16000", str(wav16)], check=True)
    prepared = np.load(out / "audio" / "vid_000000_000003.npy")
    assert relative_difference(prepared, official.kinetics_fbank(str(wav16))) < TOLERANCE

    raw = tmp_path / "cremad_raw"
    (raw / "AudioWAV").mkdir(parents=True)
    (raw / "VideoFlash").mkdir()
    write_clip(raw / "AudioWAV" / "1001_DFA_ANG_XX.wav", 16_000, 33_333)
    shutil.copy(video, raw / "VideoFlash" / "1001_DFA_ANG_XX.flv")
    assert main(["cremad", "--raw", str(raw), "--out", str(tmp_path / "cremad"), "--no-progress"]) == 0
    # The prepared 22,050 Hz wav is read without resampling and gives the official spectrogram.
    ours = load_audio(tmp_path / "cremad" / "AudioWAV" / "1001_DFA_ANG_XX.wav")[0].numpy()
    reference = official.cremad_spectrogram(str(raw / "AudioWAV" / "1001_DFA_ANG_XX.wav"))
    assert relative_difference(ours, reference) < TOLERANCE
    np.testing.assert_array_equal(ours, load_audio(raw / "AudioWAV" / "1001_DFA_ANG_XX.wav")[0].numpy())


def test_frames_decode_to_the_official_pixels(tmp_path: Path) -> None:
    """torchvision's JPEG decoder (the library's) gives the pixels PIL's (the official loaders') gives."""
    from pdmp_lightning.data.audiovisual.media import decode_frames

    generator = np.random.default_rng(0)
    y, x = np.mgrid[0:360, 0:480]
    picture = np.stack([128 + 90 * np.sin(x / (40 + 30 * k) + y / 70) for k in range(3)], axis=-1)
    picture = np.clip(picture + generator.normal(0, 6, picture.shape), 0, 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "00001.jpg", quality=95)
    ours = decode_frames([tmp_path / "00001.jpg"], [0])[0]
    official_pixels = np.array(Image.open(tmp_path / "00001.jpg").convert("RGB"))
    assert torch.equal(ours, torch.from_numpy(official_pixels).permute(2, 0, 1))
