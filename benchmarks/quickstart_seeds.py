"""Quickstart PDMP against joint training over several seeds.

Runs ``examples/configs/quickstart.yaml`` and ``quickstart_joint.yaml`` through the command line,
each seed changing both the generated data and the training seed, and writes
``docs/benchmarks/quickstart_seeds.json`` and ``quickstart_seeds.md``.

    python -m benchmarks.quickstart_seeds            # 5 seeds
    python -m benchmarks.quickstart_seeds --quick    # 2 seeds, 6 epochs (a smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"pdmp": "examples/configs/quickstart.yaml", "joint": "examples/configs/quickstart_joint.yaml"}


def run(config: str, seed: int, root: Path, epochs: int | None) -> dict[str, object]:
    """One CLI run; returns its results.json."""
    name = f"{Path(config).stem}_seed{seed}"
    # A second config replaces the logger list (a dotted override would only change its last entry).
    override = root / f"{name}.yaml"
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(root), "name": name}}
    override.write_text(json.dumps({"trainer": {"logger": [logger]}}))
    args = [
        sys.executable, "-m", "pdmp_lightning", "fit", "--config", str(ROOT / config), "--config", str(override),
        "--seed_everything", str(seed), "--data.init_args.seed", str(seed),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    if epochs is not None:
        args += ["--trainer.max_epochs", str(epochs)]
    started = time.perf_counter()
    subprocess.run(args, check=True, cwd=ROOT, capture_output=True, text=True)
    results = json.loads(next((root / name).glob("version_*/results.json")).read_text())
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 6 epochs")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    options = parser.parse_args()
    seeds, epochs = (2, 6) if options.quick else (options.seeds, None)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in range(seeds):
            for method, config in CONFIGS.items():
                result = run(config, seed, Path(scratch), epochs)
                rows.append(
                    {
                        "method": method,
                        "seed": seed,
                        "test_accuracy": result["test"]["test_accuracy"],
                        "test_macro_f1": result["test"]["test_macro_f1"],
                        "ranking": (result["pdmp"] or {}).get("ranking"),
                        "wall_seconds": result["wall_seconds"],
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    wins = sum(p["test_accuracy"] > j["test_accuracy"] for p, j in zip(rows[0::2], rows[1::2], strict=True))
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    report = {"rows": rows, "pdmp_wins": wins, "seeds": seeds, "machine": machine, "quick": options.quick}
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "quickstart_seeds.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"PDMP beats joint training on test accuracy in {wins} of {seeds} seeds ({machine}).",
        "",
        "| seed | joint acc | PDMP acc | joint macro-F1 | PDMP macro-F1 | PDMP ranking | s per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for p, j in zip(rows[0::2], rows[1::2], strict=True):
        lines.append(
            f"| {p['seed']} | {j['test_accuracy']:.4f} | {p['test_accuracy']:.4f} | {j['test_macro_f1']:.4f} "
            f"| {p['test_macro_f1']:.4f} | {p['ranking']} | {p['wall_seconds']:.0f} |"
        )
    for method in CONFIGS:
        values = [r["test_accuracy"] for r in rows if r["method"] == method]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(f"\n{method}: test accuracy {statistics.mean(values):.4f} +- {spread:.4f}")
    (options.out / "quickstart_seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
