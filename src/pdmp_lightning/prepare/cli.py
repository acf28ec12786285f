"""Entry points: ``prepare`` (one dataset) and the command line ``python -m pdmp_lightning.prepare``."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import time
from pathlib import Path
from typing import Any

from pdmp_lightning.errors import PDMPConfigurationError, config_error, is_number
from pdmp_lightning.prepare.audio import _kaldi, _soundfile
from pdmp_lightning.prepare.ave import _plan_ave
from pdmp_lightning.prepare.cremad import _plan_cremad
from pdmp_lightning.prepare.ffmpeg import find_ffmpeg
from pdmp_lightning.prepare.files import _remove_stale_temporaries
from pdmp_lightning.prepare.jobs import PrepareSummary, _run_jobs
from pdmp_lightning.prepare.kinetics_sounds import _plan_kinetics_sounds
from pdmp_lightning.prepare.ucf101 import FLOW_METHODS, FlowMethod, _plan_ucf101, default_flow_method

__all__ = ["DATASETS", "build_parser", "main", "prepare"]

DATASETS = ("cremad", "ave", "kinetics_sounds", "ucf101")


def prepare(
    dataset: str,
    raw: Path | str,
    out: Path | str,
    *,
    ffmpeg: str = "ffmpeg",
    splits: Path | str | None = None,
    overwrite: bool = False,
    test_fraction: float | None = None,
    seed: int | None = None,
    limit: int | None = None,
    workers: int = 1,
    progress: bool = True,
    fps: float | None = None,
    flow: str | None = None,
) -> PrepareSummary:
    """Prepares one dataset; see the package docstring for the layouts and choices.

    Args:
        dataset: ``cremad``, ``ave``, ``kinetics_sounds`` or ``ucf101``.
        raw: The raw download.
        out: Where the prepared layout goes (created; must differ from ``raw``).
        ffmpeg: The ffmpeg program name or path.
        splits: Folder of the split files (CREMA-D: OGM-GE's csv files, else a drawn split; AVE and
            Kinetics-Sounds: default ``raw``; UCF-101: default ``raw/ucfTrainTestlist``, else ``raw``).
        overwrite: Redo frames and audio that already exist.
        test_fraction: CREMA-D without ``splits``: the test share per emotion (default 0.1).
        seed: CREMA-D without ``splits``: the split's seed (default 0).
        limit: Prepare only the first ``limit`` clips (sorted ids), for a trial run.
        workers: Clips prepared at once (threads; ffmpeg does the heavy work).
        progress: Show a progress bar on stderr.
        fps: UCF-101: frames per second to extract (default: every frame).
        flow: UCF-101: ``tvl1`` or ``farneback`` (default: TV-L1 where opencv-contrib provides it).

    Returns:
        The summary; ``summary.ready`` counts clips with complete outputs.

    Raises:
        PDMPConfigurationError: An argument is wrong (names the argument, the value and what is allowed).
        ImportError: soundfile (or torchaudio for Kinetics-Sounds, OpenCV for UCF-101) is missing.
    """
    started = time.perf_counter()
    if dataset not in DATASETS:
        raise config_error("dataset", dataset, f"one of {', '.join(DATASETS)}")
    program = find_ffmpeg(ffmpeg)
    raw_path, out_path = Path(raw).expanduser(), Path(out).expanduser()
    if not raw_path.is_dir():
        raise config_error(
            "--raw", str(raw), f"an existing folder holding the raw {dataset} download", "see `--help` for the layout"
        )
    if out_path.exists() and not out_path.is_dir():
        raise config_error("--out", str(out), "a folder (created when missing)", "it is an existing file")
    if out_path.resolve() == raw_path.resolve():
        raise config_error("--out", str(out), "a folder different from --raw", "write the prepared layout elsewhere")
    splits_path = Path(splits).expanduser() if splits is not None else None
    if splits_path is not None and not splits_path.is_dir():
        raise config_error("--splits", str(splits), "an existing folder holding the split files")
    if dataset != "cremad" or splits_path is not None:
        for name, given in (("--test-fraction", test_fraction), ("--seed", seed)):
            if given is not None:
                raise config_error(
                    name, given, "no value here", "it only applies to cremad without --splits (a drawn split)"
                )
    fraction = 0.1 if test_fraction is None else test_fraction
    if not 0.0 < fraction < 1.0:
        raise config_error("--test-fraction", test_fraction, "a number strictly between 0 and 1")
    if dataset != "ucf101":
        for name, value in (("--fps", fps), ("--flow", flow)):
            if value is not None:
                raise config_error(name, value, "no value here", "it only applies to ucf101")
    if fps is not None and not is_number(fps, above=0):
        raise config_error("--fps", fps, "a positive number of frames per second (default: every frame)")
    if flow is not None and flow not in FLOW_METHODS:
        raise config_error("--flow", flow, f"one of {', '.join(FLOW_METHODS)}")
    if limit is not None and limit < 1:
        raise config_error("--limit", limit, "a positive number of clips")
    if workers < 1:
        raise config_error("--workers", workers, "a positive number of threads")
    method: FlowMethod | None = None
    if dataset == "ucf101":
        method = default_flow_method() if flow is None else flow
        if method == "tvl1" and default_flow_method() != "tvl1":
            raise config_error(
                "--flow", flow, "farneback (this OpenCV has no TV-L1)", 'pip install "pdmp-lightning[av]" for TV-L1'
            )
    else:
        _soundfile()
    if dataset == "kinetics_sounds":
        _kaldi()

    if dataset == "cremad":
        plan = _plan_cremad(raw_path, out_path, program, splits_path, fraction, 0 if seed is None else seed)
    elif dataset == "ave":
        plan = _plan_ave(raw_path, out_path, program, splits_path)
    elif method is not None:
        plan = _plan_ucf101(raw_path, out_path, program, splits_path, fps, method, overwrite)
    else:
        plan = _plan_kinetics_sounds(raw_path, out_path, program, splits_path)
    out_path.mkdir(parents=True, exist_ok=True)
    stale = sum(_remove_stale_temporaries(folder) for folder in plan.folders)
    if stale:
        plan.notes.append(f"removed {stale} temporaries left by an interrupted run")
    jobs = plan.jobs[:limit] if limit is not None else plan.jobs
    if limit is not None and len(plan.jobs) > limit:
        plan.notes.append(f"--limit {limit}: {len(plan.jobs) - limit} further clips not looked at")
    results = _run_jobs(jobs, overwrite, workers, progress, f"prepare {dataset}")
    ready = {result.clip for result in results if result.status in ("processed", "complete")}
    summary = PrepareSummary(dataset, raw_path, out_path, results, plan.finish(ready), plan.notes)
    summary.seconds = time.perf_counter() - started
    return summary


def build_parser() -> argparse.ArgumentParser:
    """The command line parser of ``python -m pdmp_lightning.prepare``."""
    # The package docstring (``pdmp_lightning.prepare``) gives the description and the epilog.
    package_doc = importlib.import_module(__package__ or "pdmp_lightning.prepare").__doc__
    summary, _, rest = (package_doc or "").partition("\n")
    parser = argparse.ArgumentParser(
        prog="python -m pdmp_lightning.prepare",
        description=summary + " Needs the external program ffmpeg (Debian/Ubuntu: `apt-get install ffmpeg`).",
        epilog=re.sub(r":(?:mod|func):", "", rest.strip().replace("``", "`").replace("**", "")),  # layouts, choices
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", choices=DATASETS, help="Which dataset the raw folder holds.")
    parser.add_argument(
        "--raw",
        type=Path,
        required=True,
        metavar="DIR",
        help="The raw download: cremad: AudioWAV/ and VideoFlash/; ave: AVE/<id>.mp4 and the annotation "
        "files; kinetics_sounds: the videos (searched recursively) and, unless --splits, my_train.txt/my_test.txt; "
        "ucf101: the .avi videos (searched recursively) and, unless --splits, ucfTrainTestlist/.",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="Where the prepared layout goes (created)."
    )
    parser.add_argument(
        "--splits",
        type=Path,
        default=None,
        metavar="DIR",
        help="Folder of the split files. cremad: OGM-GE's train.csv/test.csv, copied (default: a split drawn "
        "with --test-fraction and --seed). ave, kinetics_sounds: default --raw. ucf101: the official lists "
        "(classInd.txt, trainlist0N.txt, testlist0N.txt); default --raw/ucfTrainTestlist, else --raw.",
    )
    parser.add_argument(
        "--ffmpeg",
        default="ffmpeg",
        metavar="PATH",
        help="The ffmpeg program (external, required; default: `ffmpeg` on PATH).",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="Redo frames and audio that exist (default: skip them, resume)."
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        metavar="F",
        help="cremad without --splits: share of each emotion put in test.csv (default 0.1).",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="cremad without --splits: seed of the drawn split (default 0).",
    )
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="Prepare only the first N clips (a trial run)."
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="Clips prepared at once (threads running ffmpeg; default 1).",
    )
    parser.add_argument(
        "--fps",
        type=float,
        default=None,
        metavar="F",
        help="ucf101: frames per second to extract (default: every frame, as the two-stream recipes do).",
    )
    parser.add_argument(
        "--flow",
        choices=FLOW_METHODS,
        default=None,
        help="ucf101: the optical flow method (default: tvl1 where opencv-contrib provides it, else farneback).",
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        0 when at least one clip has complete outputs, 1 when none has, 2 for a configuration error,
        130 when interrupted.
    """
    arguments = build_parser().parse_args(argv)
    options: dict[str, Any] = {
        "ffmpeg": arguments.ffmpeg,
        "splits": arguments.splits,
        "overwrite": arguments.overwrite,
        "test_fraction": arguments.test_fraction,
        "seed": arguments.seed,
        "limit": arguments.limit,
        "workers": arguments.workers,
        "progress": not arguments.no_progress,
        "fps": arguments.fps,
        "flow": arguments.flow,
    }
    try:
        summary = prepare(arguments.dataset, arguments.raw, arguments.out, **options)
    except (PDMPConfigurationError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; run the same command again to resume", file=sys.stderr)
        return 130
    print(summary.format())
    return 0 if summary.ready else 1
