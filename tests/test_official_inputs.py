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
from pdmp_lightning.data.audiovisual.media import Resampler, frame_indices, load_audio, read_samples
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
