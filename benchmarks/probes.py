"""Probe fidelity and cost: does the default probe find the ranking of full unimodal training, and at what price?

The full-training ranking orders the modalities by the best validation accuracy of a unimodal model
trained with the task's whole budget (the ``unimodal:*`` runs of ``benchmarks.accuracy``, rerun here
if ``docs/benchmarks/accuracy.json`` is missing). The probe ranking and probe time come from
PDMPCallback's default probes; the main training's time is the PDMP run's fit time minus probing.
Then the probe budget is varied (data fraction x epoch cap). Writes ``docs/benchmarks/probes.{json,md}``.

    python -m benchmarks.probes
    python -m benchmarks.probes --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from typing import Any

from benchmarks.common import OUT, TASKS, Run, machine, run_all, write_json

VARIANTS = [
    {"probe_data_fraction": fraction, "probe_max_epochs": cap} for fraction in (0.25, 0.5, 1.0) for cap in (5, 20)
]


def full_rankings(tasks: list[str], seeds: int) -> dict[tuple[str, int], dict[str, Any]]:
    source = OUT / "accuracy.json"
    unimodal: list[dict[str, Any]] = []
    if source.is_file():
        unimodal = json.loads(source.read_text())["unimodal_runs"]
    wanted = {(t, s) for t in tasks for s in range(seeds)}
    have = {(r["task"], r["seed"]) for r in unimodal}
    missing = [Run(t, f"unimodal:{m}", s, test=False) for t, s in sorted(wanted - have) for m in TASKS[t].modalities]
    unimodal += run_all(missing) if missing else []
    by_key: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    seconds: dict[tuple[str, int], float] = defaultdict(float)
    for row in unimodal:
        key = (row["task"], row["seed"])
        if key in wanted:
            by_key[key][row["method"].split(":", 1)[1]] = row["best_val_accuracy"]
            seconds[key] += row["train_seconds"]
    return {
        key: {"ranking": sorted(scores, key=lambda m: (-scores[m], m)), "scores": scores, "seconds": seconds[key]}
        for key, scores in by_key.items()
    }


#: A full-training lead of at least this much validation accuracy makes the dominant modality decisive.
DECISIVE_GAP = 0.01


def top_gap(scores: dict[str, float]) -> float:
    """Validation-accuracy lead of the best modality over the second in full unimodal training."""
    best, second = sorted(scores.values(), reverse=True)[:2]
    return round(best - second, 4)


def compare(row: dict[str, Any], full: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """A probe run's ranking against the full-training ranking of the same (task, seed)."""
    reference = full[(row["task"], row["seed"])]
    return {
        "task": row["task"],
        "seed": row["seed"],
        "probe_ranking": row["probe_ranking"],
        "full_ranking": reference["ranking"],
        "ranking_match": row["probe_ranking"] == reference["ranking"],
        "dominant_match": row["probe_ranking"][0] == reference["ranking"][0],
        "full_top_gap": top_gap(reference["scores"]),
        "full_scores": reference["scores"],
        "probe_seconds": row["probe_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    tasks = ["synthetic2"] if options.quick else list(TASKS)
    seeds = 2 if options.quick else options.seeds
    full = full_rankings(tasks, seeds)
    # Default probes inside a complete PDMP run: probe time against the main training's time.
    default_rows = run_all(
        Run(t, "pdmp", s, test=False, epochs=3 if options.quick else None) for t in tasks for s in range(seeds)
    )
    rows = [
        {
            **compare(row, full),
            "train_seconds": round(row["train_seconds"] - row["probe_seconds"], 2),
            "probe_scores": row["probe_scores"],
            "settings": "default",
        }
        for row in default_rows
    ]
    # The budget varied: probes only (one training step), fraction x epoch cap.
    variant_runs = [
        Run(t, "pdmp", s, options=v, probe_only=True) for v in VARIANTS for t in tasks for s in range(seeds)
    ]
    variants = [{**compare(row, full), **row["options"]} for row in run_all(variant_runs)]
    suffix = "_quick" if options.quick else ""
    write_json(f"probes{suffix}.json", {"machine": machine(), "rows": rows, "variants": variants})
    match = statistics.mean(r["ranking_match"] for r in rows)
    dominant = statistics.mean(r["dominant_match"] for r in rows)
    cost = [r["probe_seconds"] / r["train_seconds"] for r in rows]
    decisive = [r for r in rows if r["full_top_gap"] >= DECISIVE_GAP]
    decisive_match = statistics.mean(r["dominant_match"] for r in decisive) if decisive else float("nan")
    lines = [
        f"Default probes over {len(rows)} (task, seed): full ranking reproduced in {100 * match:.0f}%, "
        f"dominant modality in {100 * dominant:.0f}%; where full training has a decisive dominant modality "
        f"(lead of at least {100 * DECISIVE_GAP:.0f} validation points, {len(decisive)} cases) the probes find it in "
        f"{100 * decisive_match:.0f}%. Probe time / main training time: median "
        f"{100 * statistics.median(cost):.1f}%, max {100 * max(cost):.1f}%. {machine()}.",
        "",
        "| task | full ranking reproduced | dominant reproduced | probe s (median) | training s (median) "
        "| probe / training |",
        "|---|---|---|---|---|---|",
    ]
    for task in tasks:
        mine = [r for r in rows if r["task"] == task]
        ratio = statistics.median(r["probe_seconds"] / r["train_seconds"] for r in mine)
        matches = sum(r["ranking_match"] for r in mine)
        dominants = sum(r["dominant_match"] for r in mine)
        probe = statistics.median(r["probe_seconds"] for r in mine)
        train = statistics.median(r["train_seconds"] for r in mine)
        count = len(mine)
        lines.append(
            f"| {task} | {matches}/{count} | {dominants}/{count} | {probe:.2f} | {train:.2f} | {100 * ratio:.1f}% |"
        )
    lines += ["", "Probe budget varied (all tasks and seeds):", "",
              "| data fraction | epoch cap | full ranking reproduced | dominant reproduced | probe s (median) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for variant in VARIANTS:
        mine = [r for r in variants if all(r[k] == v for k, v in variant.items())]
        lines.append(
            f"| {variant['probe_data_fraction']} | {variant['probe_max_epochs']} "
            f"| {100 * statistics.mean(r['ranking_match'] for r in mine):.0f}% "
            f"| {100 * statistics.mean(r['dominant_match'] for r in mine):.0f}% "
            f"| {statistics.median(r['probe_seconds'] for r in mine):.2f} |"
        )
    (OUT / f"probes{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
