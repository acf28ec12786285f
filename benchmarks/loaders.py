"""Audio-visual loaders: samples per second and the time of each stage, the library against the official loaders.

Generated media in the layouts of CREMA-D, AVE and Kinetics-Sounds (written into a temporary folder
and removed afterwards; nothing is committed but the results): wavs and 480 x 360 JPEG frames as the
official preprocessing leaves them, and for AVE and Kinetics-Sounds the stored features (the official
pickles; the ``.npy`` files ``python -m pdmp_lightning.prepare`` writes). Each dataset is read through

- the library: the datamodule's own dataset (training transforms, each dataset's official frame
  rule), for CREMA-D once from the raw 16 kHz wavs (resampled as it goes) and once from the 22,050 Hz
  wavs ``prepare cremad`` writes (``library_prepared``, no resampling);
- the official loader, transplanted in ``tests/references/loaders.py`` (repository, commit and lines
  are cited there): OGM-GE's ``CramedDataset``, PMR's ``AVEDataset``, OGM-GE's ``AVDataset`` on
  Kinetics-Sounds.

Throughput: a ``DataLoader`` (batch 16, shuffled, persistent workers) per loader and worker count, one
torch thread in the main process as in each worker;
after one untimed epoch (worker start-up, lazy imports), the loaders' epochs are timed in turn,
``--rounds`` times, and the median of samples per second is reported. Stages: every clip once through
each stage in this process, the mean milliseconds per sample. Writes ``docs/benchmarks/loaders.{json,md}``.

    python -m benchmarks.loaders                                  # the three datasets, 0 and 2 workers
    python -m benchmarks.loaders --datasets ave --append          # one dataset, kept beside the others' rows
    python -m benchmarks.loaders --quick                          # 24 clips, 2 rounds (loaders_quick.*)
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from PIL import Image
from tests.references import loaders as official
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import OUT, machine, write_results
from pdmp_lightning.data.audiovisual import (
    AudioVisualClipDataset,
    AudioVisualDataModule,
    AVEDataModule,
    CREMADDataModule,
    KineticsSoundsDataModule,
)
from pdmp_lightning.data.audiovisual.media import (
    Resampler,
    decode_frames,
    frame_indices,
    load_audio,
    log_spectrogram,
    read_samples,
)

DATASETS = ("cremad", "ave", "kinetics_sounds")
WORKERS = (0, 2)
BATCH_SIZE = 16
WIDTH, HEIGHT = 480, 360
#: Frames written per clip (CREMA-D ~2.5 s at 1 fps; an AVE event of ~8 s; Kinetics-Sounds' 10) and used.
FRAMES_WRITTEN = {"cremad": 3, "ave": 8, "kinetics_sounds": 10}
FRAMES_USED = {"cremad": 1, "ave": 3, "kinetics_sounds": 3}
CREMAD_RATE = 16_000
CREMAD_SECONDS = 2.5


# --- generated media ------------------------------------------------------------------------------


def _frame_bytes(generator: np.random.Generator) -> list[np.ndarray]:
    """A few smooth 480 x 360 pictures with some texture (JPEGs of ~30-60 KB, like video frames)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    pictures = []
    for _ in range(4):
        phase = generator.uniform(0, 2 * np.pi, 3)
        base = np.stack([128 + 90 * np.sin(x / (40 + 30 * k) + y / 70 + phase[k]) for k in range(3)], axis=-1)
        pictures.append(np.clip(base + generator.normal(0, 6, base.shape), 0, 255).astype(np.uint8))
    return pictures


def _write_frames(folder: Path, count: int, names: str, pictures: list[np.ndarray], seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        picture = np.roll(pictures[(seed + index) % len(pictures)], 7 * (seed + index), axis=1)
        # cv2.imencode's default quality (the official frame extraction) is 95.
        Image.fromarray(picture).save(folder / names.format(index + 1), quality=95)


def _wave(generator: np.random.Generator, samples: int) -> np.ndarray:
    t = np.arange(samples) / CREMAD_RATE
    wave = 0.2 * generator.standard_normal(samples) + 0.5 * np.sin(2 * np.pi * 220 * t)
    return np.clip(wave, -1, 1).astype(np.float32)


def generate(dataset: str, root: Path, clips: int) -> list[str]:
    """Writes ``clips`` clips of ``dataset`` in its layout under ``root``; returns the clip names."""
    generator = np.random.default_rng(0)
    pictures = _frame_bytes(generator)
    count = FRAMES_WRITTEN[dataset]
    if dataset == "cremad":
        names = [f"10{i:02d}_IEO_{('NEU', 'HAP', 'SAD', 'FEA', 'DIS', 'ANG')[i % 6]}_XX" for i in range(clips)]
        resampler = Resampler(22_050)
        for i, name in enumerate(names):
            wave = _wave(generator, int(CREMAD_SECONDS * CREMAD_RATE) + 37 * i)
            (root / "AudioWAV").mkdir(parents=True, exist_ok=True)
            soundfile.write(root / "AudioWAV" / f"{name}.wav", wave, CREMAD_RATE, subtype="PCM_16")
            # What `prepare cremad` writes: the wav as librosa.load(sr=22050) reads it, in float32.
            samples, rate = read_samples(root / "AudioWAV" / f"{name}.wav")
            (root / "AudioWAV22k").mkdir(exist_ok=True)
            soundfile.write(root / "AudioWAV22k" / f"{name}.wav", resampler(samples, rate), 22_050, subtype="FLOAT")
            _write_frames(root / "Image-01-FPS" / name, count, "{:05d}.jpg", pictures, i)
        rows = "".join(f"{name},{name.split('_')[2]}\n" for name in names)
        (root / "train.csv").write_text(rows)
        (root / "test.csv").write_text(rows)
        return names
    if dataset == "ave":
        names = [f"ave{i:08d}" for i in range(clips)]
        lines = "".join(f"{('Dog', 'Bark', 'Cat')[i % 3]}&{name}&good&0&{count}\n" for i, name in enumerate(names))
        for file in ("trainSet.txt", "valSet.txt", "testSet.txt"):
            (root / file).write_text(lines)
        (root / "Audio-1004-SE").mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(names):
            spectrogram = generator.standard_normal((257, 1004)).astype(np.float32)
            with (root / "Audio-1004-SE" / f"{name}.pkl").open("wb") as handle:
                pickle.dump(spectrogram, handle)
            np.save(root / "Audio-1004-SE" / f"{name}.npy", spectrogram)
            _write_frames(root / "Image-01-FPS-SE" / name, count, "{:05d}.jpg", pictures, i)
        return names
    names = [f"yt{i:08d}_000010_000020" for i in range(clips)]
    rows = "".join(f"{name},10,{i % 3}\n" for i, name in enumerate(names))
    (root / "my_train.txt").write_text(rows)
    (root / "my_test.txt").write_text(rows)
    for folder in ("audio", "audio_spec"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        fbank = generator.standard_normal((1024, 128)).astype(np.float32)
        np.save(root / "audio" / f"{name}.npy", fbank)
        with (root / "audio_spec" / f"{name}.pkl").open("wb") as handle:
            pickle.dump(fbank, handle)
        _write_frames(root / "visual" / name, count, "frame_{:05d}.jpg", pictures, i)
    return names


# --- the loaders ----------------------------------------------------------------------------------


def library_dataset(dataset: str, root: Path, prepared: bool = False) -> AudioVisualClipDataset:
    """Every generated clip, found by the datamodule, once each, with the training transforms."""
    datamodule: AudioVisualDataModule
    if dataset == "cremad":
        audio_dir = "AudioWAV22k" if prepared else "AudioWAV"
        datamodule = CREMADDataModule(str(root), num_frames=FRAMES_USED[dataset], audio_dir=audio_dir)
    elif dataset == "ave":
        datamodule = AVEDataModule(str(root), num_frames=FRAMES_USED[dataset])
    else:
        datamodule = KineticsSoundsDataModule(str(root), num_frames=FRAMES_USED[dataset])
    datamodule.setup("fit")
    # CREMA-D and Kinetics-Sounds carve validation out of train; AVE's lists all name every generated clip.
    found = {clip.clip_id: clip for split in ("train", "val") for clip in datamodule.datasets[split].clips}
    clips = list(found.values())
    return AudioVisualClipDataset(clips, FRAMES_USED[dataset], 224, True, datamodule.frame_selection)


def official_dataset(dataset: str, root: Path, names: list[str]) -> Dataset[Any]:
    if dataset == "cremad":
        items = [(str(root / "AudioWAV" / f"{n}.wav"), str(root / "Image-01-FPS" / n), 0) for n in names]
        return official.CramedDataset(items, "train", fps=FRAMES_USED[dataset])
    if dataset == "ave":
        items = [(str(root / "Audio-1004-SE" / f"{n}.pkl"), str(root / "Image-01-FPS-SE" / n), 0) for n in names]
        return official.AVEDataset(items, "train", num_frame=FRAMES_USED[dataset])
    items = [(str(root / "audio_spec" / f"{n}.pkl"), str(root / "visual" / n), 0) for n in names]
    return official.KineticsSoundsDataset(items, "train")


def _seed_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)
    random.seed(torch.initial_seed())


def throughput(loaders: dict[str, Dataset[Any]], workers: int, rounds: int) -> dict[str, list[float]]:
    """Samples per second of each loader's timed epochs (loaders taken in turn, ``rounds`` times)."""
    built = {
        name: DataLoader(
            data,
            batch_size=BATCH_SIZE,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=_seed_worker if workers else None,
        )
        for name, data in loaders.items()
    }
    for loader in built.values():  # untimed: worker start-up, lazy imports, first-call set-up
        for _ in loader:
            pass
    rates: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(rounds):
        for name, loader in built.items():
            samples, start = 0, time.perf_counter()
            for batch in loader:
                samples += len(batch["label"] if isinstance(batch, dict) else batch[2])
            rates[name].append(samples / (time.perf_counter() - start))
    del built
    return rates


def _timed(stages: dict[str, float], stage: str, function: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = function()
    stages[stage] = stages.get(stage, 0.0) + time.perf_counter() - start
    return result


def library_stages(data: AudioVisualClipDataset) -> dict[str, float]:
    """Seconds per stage over every clip, the steps of ``AudioVisualClipDataset.__getitem__`` one by one."""
    stages: dict[str, float] = {}
    for clip in data.clips:
        if clip.audio.suffix == ".wav":
            samples, rate = _timed(stages, "decode audio", lambda c=clip: read_samples(c.audio))
            waveform = _timed(stages, "resample", lambda s=samples, r=rate: data.resampler(s, r))
            _timed(stages, "spectrogram", lambda w=waveform: log_spectrogram(torch.from_numpy(w)))
        else:
            _timed(stages, "load features", lambda c=clip: load_audio(c.audio))
        chosen = frame_indices(len(clip.frames), data.num_frames, data.frame_selection)
        stack = _timed(stages, "decode JPEG", lambda c=clip, i=chosen: decode_frames(c.frames, i))
        _timed(stages, "frame transforms", lambda s=stack: data.transform(s).permute(1, 0, 2, 3).contiguous())
    return stages


def official_stages(dataset: str, data: Any) -> dict[str, float]:
    """Seconds per stage over every clip, the steps of the official ``__getitem__`` one by one."""
    librosa = official._librosa()
    transform = official._transforms("train")
    stages: dict[str, float] = {}
    for index in range(len(data)):
        if dataset == "cremad":
            samples, rate = _timed(stages, "decode audio", lambda i=index: official.librosa_load(data.audio[i], None))
            resampled = _timed(
                stages, "resample", lambda s=samples, r=rate: librosa.resample(s, orig_sr=r, target_sr=22050)
            )

            def spectrogram(samples: np.ndarray = resampled) -> np.ndarray:
                tiled = np.clip(np.tile(samples, 3)[: 22050 * 3], -1.0, 1.0)
                return np.log(np.abs(librosa.stft(tiled, n_fft=512, hop_length=353)) + 1e-7)

            _timed(stages, "spectrogram", spectrogram)
            folder, count = data.image[index], data.fps
        else:

            def load(path: str = data.audio[index]) -> Any:
                with open(path, "rb") as handle:
                    return pickle.load(handle)

            _timed(stages, "load features", load)
            folder = data.image[index] if dataset == "ave" else data.visual[index]
            count = data.num_frame if dataset == "ave" else 3
        listed = os.listdir(folder)
        if dataset == "kinetics_sounds":
            seg = len(listed) // 3
            paths = [os.path.join(folder, f"frame_0000{seg * i + 1}.jpg") for i in range(3)]
        else:
            paths = [os.path.join(folder, listed[i]) for i in range(count)]
        images = _timed(stages, "decode JPEG", lambda p=paths: [Image.open(path).convert("RGB") for path in p])
        _timed(stages, "frame transforms", lambda m=images: torch.stack([transform(image) for image in m], dim=1))
    return stages


# --- the run --------------------------------------------------------------------------------------


def measure(dataset: str, clips: int, rounds: int, workers: tuple[int, ...]) -> tuple[list[dict[str, Any]], ...]:
    with tempfile.TemporaryDirectory(prefix=f"pdmp-loaders-{dataset}-") as scratch:
        root = Path(scratch)
        names = generate(dataset, root, clips)
        loaders: dict[str, Dataset[Any]] = {"library": library_dataset(dataset, root)}
        if dataset == "cremad":
            loaders["library_prepared"] = library_dataset(dataset, root, prepared=True)
        loaders["official"] = official_dataset(dataset, root, names)
        rows = []
        for count in workers:
            torch.manual_seed(0)
            rates = throughput(loaders, count, rounds)
            for name, values in rates.items():
                rows.append(
                    {
                        "dataset": dataset,
                        "loader": name,
                        "workers": count,
                        "samples_per_second": statistics.median(values),
                        "rounds": values,
                    }
                )
            print(
                f"{dataset}, {count} workers: "
                + ", ".join(f"{r['loader']} {r['samples_per_second']:.0f}/s" for r in rows[-len(rates) :])
            )
        stage_rows = []
        for name, data in loaders.items():
            seconds = official_stages(dataset, data) if name == "official" else library_stages(data)  # type: ignore[arg-type]
            stage_rows += [
                {"dataset": dataset, "loader": name, "stage": stage, "ms_per_sample": 1000 * value / len(data)}  # type: ignore[arg-type]
                for stage, value in seconds.items()
            ]
    return rows, stage_rows


def report(payload: dict[str, Any]) -> str:
    lines = [
        f"Generated media: {payload['clips']} clips per dataset, frames 480 x 360 JPEG (quality 95); CREMA-D "
        f"wavs {CREMAD_SECONDS} s at 16 kHz (`library_prepared`: the 22,050 Hz float wavs `prepare cremad` writes); "
        "AVE and Kinetics-Sounds read stored features (the official loaders pickles, the library `.npy`). "
        f"Training transforms, batch {BATCH_SIZE}; median samples/s over {payload['rounds']} timed epochs per "
        f"loader, taken in turn after an untimed one. {payload['machine']}.",
        "",
        "| dataset | workers | library samples/s | official samples/s | library / official |",
        "|---|---|---|---|---|",
    ]
    rows = payload["rows"]
    for dataset in DATASETS:
        for count in sorted({r["workers"] for r in rows if r["dataset"] == dataset}):
            found = {
                r["loader"]: r["samples_per_second"] for r in rows if r["dataset"] == dataset and r["workers"] == count
            }
            for name in [n for n in ("library", "library_prepared") if n in found]:
                label = dataset if name == "library" else f"{dataset} (prepared 22,050 Hz wav)"
                lines.append(
                    f"| {label} | {count} | {found[name]:.0f} | {found['official']:.0f} "
                    f"| {found[name] / found['official']:.2f} |"
                )
    lines += [
        "",
        "Per-stage time, ms per sample (one process, every clip once):",
        "",
        "| dataset | loader | " + " | ".join(STAGES) + " | total |",
        "|---|---|" + "---|" * (len(STAGES) + 1),
    ]
    for dataset in DATASETS:
        for name in ("library", "library_prepared", "official"):
            stages = {
                r["stage"]: r["ms_per_sample"]
                for r in payload["stages"]
                if r["dataset"] == dataset and r["loader"] == name
            }
            if stages:
                cells = " | ".join(f"{stages[s]:.2f}" if s in stages else "-" for s in STAGES)
                lines.append(f"| {dataset} | {name} | {cells} | {sum(stages.values()):.2f} |")
    return "\n".join(lines) + "\n"


STAGES = ("decode audio", "resample", "spectrogram", "load features", "decode JPEG", "frame transforms")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--workers", nargs="+", type=int, default=list(WORKERS), help="DataLoader worker counts")
    parser.add_argument("--clips", type=int, default=96, help="generated clips per dataset")
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per loader and worker count")
    parser.add_argument("--append", action="store_true", help="keep the other datasets' rows of the existing JSON")
    parser.add_argument("--quick", action="store_true", help="24 clips, 2 rounds (writes loaders_quick.*)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the JSON and markdown results")
    options = parser.parse_args(argv)
    if options.quick:
        options.clips, options.rounds = 24, 2
    return options


def main(argv: list[str] | None = None) -> None:
    options = parse(argv)
    warnings.filterwarnings("ignore")
    # One torch thread, as in each DataLoader worker: with 0 workers the loader then uses one core as a
    # worker does, and no OpenMP pool spins against the other processes on a small machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    name = "loaders_quick" if options.quick else "loaders"
    path = options.out / f"{name}.json"
    rows: list[dict[str, Any]] = []
    stages: list[dict[str, Any]] = []
    if options.append and path.exists():
        previous = json.loads(path.read_text())
        if (previous["clips"], previous["rounds"]) != (options.clips, options.rounds):
            raise SystemExit(f"--append: {path} was measured with other --clips/--rounds; rerun every dataset")
        rows = [r for r in previous["rows"] if r["dataset"] not in options.datasets]
        stages = [r for r in previous["stages"] if r["dataset"] not in options.datasets]
    try:
        for dataset in options.datasets:
            new_rows, new_stages = measure(dataset, options.clips, options.rounds, tuple(options.workers))
            rows += new_rows
            stages += new_stages
    finally:
        torch.set_num_threads(threads)
    order = {name: index for index, name in enumerate(DATASETS)}
    rows.sort(key=lambda r: (order[r["dataset"]], r["workers"]))
    stages.sort(key=lambda r: order[r["dataset"]])
    payload = {"machine": machine(), "clips": options.clips, "rounds": options.rounds, "rows": rows, "stages": stages}
    write_results(name, payload, report(payload), options.out)


if __name__ == "__main__":
    main()
