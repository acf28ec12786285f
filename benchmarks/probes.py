"""Probe fidelity and cost: does the default probe find the ranking of full unimodal training, and at what price?

The full-training ranking orders the modalities by the best validation accuracy of a unimodal model
trained with the task's whole budget (the ``unimodal:*`` runs of ``benchmarks.accuracy``, rerun here
if ``docs/benchmarks/accuracy.json`` is missing). The same unimodal trainings are repeated with other
initial weights and batch order (same split): how often full training reproduces its own ranking is
the ceiling any probe can be held to. The probe ranking and probe time come from PDMPCallback's
default probes; the main training's time is the PDMP run's fit time minus probing. Then the probe
budget is varied. Writes ``docs/benchmarks/probes.{json,md}``.

    python -m benchmarks.probes
    python -m benchmarks.probes --quick
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
from collections import defaultdict
from typing import Any

from benchmarks.common import OUT, TASKS, Run, machine, run_all, write_json
from pdmp_lightning import PDMPCallback

#: Probe budgets compared (None: no cap, full-data probe epochs); the last row is the former default.
VARIANTS: list[dict[str, Any]] = [{"probe_budget": b} for b in (0.05, 0.1, 0.2, 0.5, None)] + [
    {"probe_budget": None, "probe_max_epochs": 20}
]
#: PDMPCallback's default probe_budget (the budget of the complete runs).
DEFAULT_BUDGET = inspect.signature(PDMPCallback).parameters["probe_budget"].default
#: Offset of the initial-weights seed of the repeated full trainings.
REPEAT_SEED = 1000


def full_rankings(tasks: list[str], seeds: int, repeat: bool = False) -> dict[tuple[str, int], dict[str, Any]]:
    source = OUT / "accuracy.json"
    unimodal: list[dict[str, Any]] = []
    if source.is_file() and not repeat:
        unimodal = json.loads(source.read_text())["unimodal_runs"]
    wanted = {(t, s) for t in tasks for s in range(seeds)}
    have = {(r["task"], r["seed"]) for r in unimodal}
    missing = [
        Run(t, f"unimodal:{m}", s, test=False, init_seed=s + REPEAT_SEED if repeat else None)
        for t, s in sorted(wanted - have)
        for m in TASKS[t].modalities
    ]
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


def compare(
    row: dict[str, Any], full: dict[tuple[str, int], dict[str, Any]], repeat: dict[tuple[str, int], dict[str, Any]]
) -> dict[str, Any]:
    """A probe run's ranking against the full-training ranking of the same (task, seed)."""
    reference = full[(row["task"], row["seed"])]
    again = repeat[(row["task"], row["seed"])]
    return {
        "task": row["task"],
        "seed": row["seed"],
        "probe_ranking": row["probe_ranking"],
        "full_ranking": reference["ranking"],
        "ranking_match": row["probe_ranking"] == reference["ranking"],
        "dominant_match": row["probe_ranking"][0] == reference["ranking"][0],
        "full_top_gap": top_gap(reference["scores"]),
        "full_scores": reference["scores"],
        "full_repeat_ranking": again["ranking"],
        "full_self_match": again["ranking"] == reference["ranking"],
        "probe_seconds": row["probe_seconds"],
    }


def _share(rows: list[dict[str, Any]], key: str) -> str:
    return f"{100 * statistics.mean(r[key] for r in rows):.0f}%" if rows else "-"


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """The goals' figures: fidelity (raw, and where full training agrees with itself) and cost."""
    cost = [r["probe_seconds"] / r["train_seconds"] for r in rows]
    stable = [r for r in rows if r["full_self_match"]]
    decisive = [r for r in rows if r["full_top_gap"] >= DECISIVE_GAP]
    return [
        f"Default probes over {len(rows)} (task, seed): full ranking reproduced in {_share(rows, 'ranking_match')}, "
        f"dominant modality in {_share(rows, 'dominant_match')}. Full training repeated with other initial weights "
        f"reproduces its own ranking in {_share(rows, 'full_self_match')}: the ceiling for any probe. Where it does "
        f"({len(stable)} cases), the probes match it in {_share(stable, 'ranking_match')}. Where full training has a "
        f"dominant modality ahead by at least {100 * DECISIVE_GAP:.0f} validation points ({len(decisive)} cases), the "
        f"probes find it in {_share(decisive, 'dominant_match')}. Probe time / main training time: median "
        f"{100 * statistics.median(cost):.1f}%, max {100 * max(cost):.1f}%. {machine()}.",
    ]


def task_table(rows: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    lines = [
        "| task | probes = full ranking | probes = full dominant | full = its repeat | probe s (median) "
        "| training s (median) | probe / training |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        mine = [r for r in rows if r["task"] == task]
        count = len(mine)
        ratio = statistics.median(r["probe_seconds"] / r["train_seconds"] for r in mine)
        lines.append(
            f"| {task} | {sum(r['ranking_match'] for r in mine)}/{count} "
            f"| {sum(r['dominant_match'] for r in mine)}/{count} | {sum(r['full_self_match'] for r in mine)}/{count} "
            f"| {statistics.median(r['probe_seconds'] for r in mine):.2f} "
            f"| {statistics.median(r['train_seconds'] for r in mine):.2f} | {100 * ratio:.1f}% |"
        )
    return lines


def _variant_line(label: str, cap: int, mine: list[dict[str, Any]], train: dict[tuple[str, int], float]) -> str:
    ratio = statistics.median(r["probe_seconds"] / train[(r["task"], r["seed"])] for r in mine)
    stable = [r for r in mine if r["full_self_match"]]
    return (
        f"| {label} | {cap} | {_share(mine, 'ranking_match')} | {_share(stable, 'ranking_match')} "
        f"| {_share(mine, 'dominant_match')} | {statistics.median(r['probe_seconds'] for r in mine):.2f} "
        f"| {100 * ratio:.1f}% |"
    )


def variant_table(variants: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    """Fidelity and cost as the budget moves; cost relative to the same (task, seed)'s main training."""
    train = {(r["task"], r["seed"]): r["train_seconds"] for r in rows}
    lines = [
        "Probe budget varied (all tasks and seeds; probes only, each against its task's main training):",
        "",
        "| probe_budget | probe_max_epochs | probes = full ranking | where full = its repeat | probes = full dominant "
        "| probe s (median) | probe / training (median) |",
        "|---|---|---|---|---|---|---|",
        _variant_line(f"{DEFAULT_BUDGET} (default, runs above)", 10, rows, train),
    ]
    for variant in VARIANTS:
        cap = variant.get("probe_max_epochs", 10)
        mine = [
            r for r in variants if r["probe_budget"] == variant["probe_budget"] and r.get("probe_max_epochs", 10) == cap
        ]
        lines.append(_variant_line(str(variant["probe_budget"]), cap, mine, train))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report", action="store_true", help="only rewrite probes.md from probes.json")
    options = parser.parse_args()
    tasks = ["synthetic2"] if options.quick else list(TASKS)
    seeds = 2 if options.quick else options.seeds
    suffix = "_quick" if options.quick else ""
    if options.report:
        saved = json.loads((OUT / f"probes{suffix}.json").read_text())
        write_report(saved["rows"], saved["variants"], tasks, suffix)
        return
    full = full_rankings(tasks, seeds)
    repeat = full_rankings(tasks, seeds, repeat=True)
    # Default probes inside a complete PDMP run: probe time against the main training's time.
    default_rows = run_all(
        Run(t, "pdmp", s, test=False, epochs=3 if options.quick else None) for t in tasks for s in range(seeds)
    )
    rows = [
        {
            **compare(row, full, repeat),
            "train_seconds": round(row["train_seconds"] - row["probe_seconds"], 2),
            "probe_scores": row["probe_scores"],
            "settings": "default",
        }
        for row in default_rows
    ]
    # The budget varied: probes only (fit ends after them; the budget still comes from the task's epochs).
    variant_runs = [
        Run(t, "pdmp", s, options=v, probe_only=True, epochs=3 if options.quick else None)
        for v in VARIANTS
        for t in tasks
        for s in range(seeds)
    ]
    variants = [{**compare(row, full, repeat), **row["options"]} for row in run_all(variant_runs)]
    write_json(f"probes{suffix}.json", {"machine": machine(), "rows": rows, "variants": variants})
    write_report(rows, variants, tasks, suffix)


def write_report(rows: list[dict[str, Any]], variants: list[dict[str, Any]], tasks: list[str], suffix: str) -> None:
    lines = [*summary(rows), "", *task_table(rows, tasks), "", *variant_table(variants, rows)]
    (OUT / f"probes{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
