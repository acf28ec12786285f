"""Test accuracy of PDMP against every baseline, joint training and the best single modality.

Every method gets the same model, optimizer, epochs and seeded splits; the checkpoint with the best
validation accuracy is tested. "best_single" is, per seed, the unimodal model with the best
validation accuracy. Writes ``docs/benchmarks/accuracy.{json,md,png}``.

    python -m benchmarks.accuracy --methods joint pdmp ogm_ge opm agm mmpareto pdmp_heads   # ~30 min on 2 cores
    python -m benchmarks.accuracy --tasks synthetic2 synthetic3 synthetic2_balanced mfeat_fou_kar \
        mfeat_mor_pix mfeat_fac_pix mfeat_all slow8 slow_ring3 --append   # the 9 MLP tasks, 6 methods: ~6 min
    python -m benchmarks.accuracy --tasks avdigits --methods pdmp --append   # replaces PDMP's avdigits rows
    python -m benchmarks.accuracy --tasks synthetic2_8ep synthetic3_8ep synthetic2_balanced_8ep slow8_8ep \
        slow_ring3_8ep --methods joint pdmp --append   # the generated tasks trained for 8 epochs: ~3 min
    python -m benchmarks.accuracy --quick            # 2 tasks x 2 seeds, 3 epochs (a smoke run)
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks.common import (
    ALL_TASKS,
    EXTRA_METHODS,
    METHODS,
    OUT,
    SHORT_TASKS,
    TASKS,
    Run,
    machine,
    mean_std,
    run_all,
    write_json,
)

COLUMNS = (*METHODS, "best_single", *EXTRA_METHODS)


def best_single(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (task, seed), the unimodal run with the best validation accuracy, as a "best_single" row."""
    chosen: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        if row["method"].startswith("unimodal:"):
            key = (row["task"], row["seed"])
            if key not in chosen or row["best_val_accuracy"] > chosen[key]["best_val_accuracy"]:
                chosen[key] = row
    return [{**row, "method": "best_single", "modality": row["method"].split(":", 1)[1]} for row in chosen.values()]


def present(rows: list[dict[str, Any]]) -> list[str]:
    """The columns that have rows, in ``COLUMNS`` order."""
    methods = {row["method"] for row in rows}
    return [m for m in COLUMNS if m in methods]


def table(rows: list[dict[str, Any]], metric: str) -> list[str]:
    by_cell: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        by_cell[(row["task"], row["method"])].append(row[metric])
    columns = present(rows)
    lines = [
        "| task | imbalanced | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for task in dict.fromkeys(row["task"] for row in rows):
        cells = []
        means = {m: mean_std(by_cell[(task, m)])[0] for m in columns}
        best = max((v for v in means.values() if v == v), default=None)
        for method in columns:
            mean, std = mean_std(by_cell[(task, method)])
            text = f"{100 * mean:.2f} ± {100 * std:.2f}" if mean == mean else "-"
            cells.append(f"**{text}**" if mean == best else text)
        lines.append(f"| {task} | {ALL_TASKS[task].imbalanced} | " + " | ".join(cells) + " |")
    return lines


def plot(rows: list[dict[str, Any]]) -> None:
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    figure = Figure(figsize=(max(8, 2 * len(tasks)), 4), layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    columns = present(rows)
    width = 0.8 / len(columns)
    for index, method in enumerate(columns):
        stats = [
            mean_std([r["test_accuracy"] for r in rows if r["task"] == t and r["method"] == method]) for t in tasks
        ]
        positions = [t + (index - len(columns) / 2) * width + width / 2 for t in range(len(tasks))]
        axis.bar(positions, [s[0] for s in stats], width, yerr=[s[1] for s in stats], label=method, capsize=2)
    axis.set_xticks(range(len(tasks)), tasks, rotation=15)
    axis.set(ylabel="test accuracy", title="Test accuracy (mean ± std over seeds)")
    low = min(r["test_accuracy"] for r in rows)
    axis.set_ylim(max(0.0, low - 0.05), 1.0)
    axis.legend(ncol=len(columns), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    figure.savefig(OUT / "accuracy.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--tasks",
        nargs="*",
        default=list(TASKS),
        choices=list(ALL_TASKS),
        help=f"default: the benchmark tasks; their {len(SHORT_TASKS)} shorter variants on request",
    )
    parser.add_argument(
        "--methods",
        nargs="*",
        default=list(METHODS),
        choices=[*METHODS, *EXTRA_METHODS],
        help="a subset of the methods",
    )
    parser.add_argument(
        "--append", action="store_true", help="merge into accuracy.json, replacing the rows of these tasks and methods"
    )
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    tasks = ["synthetic2", "mfeat_mor_pix"] if options.quick else options.tasks
    seeds = 2 if options.quick else options.seeds
    epochs = 3 if options.quick else None
    runs = [
        Run(task, method, seed, epochs=epochs)
        for task in tasks
        for seed in range(seeds)
        for method in (*options.methods, *(f"unimodal:{m}" for m in ALL_TASKS[task].modalities))
    ]
    raw = run_all(runs)
    rows = [r for r in raw if not r["method"].startswith("unimodal:")] + best_single(raw)
    unimodal = [r for r in raw if r["method"].startswith("unimodal:")]
    suffix = "_quick" if options.quick else ""
    if options.append and (OUT / "accuracy.json").is_file():
        previous = json.loads((OUT / "accuracy.json").read_text())
        replaced = {(t, m) for t in tasks for m in (*options.methods, "best_single")}
        rows = [r for r in previous["rows"] if (r["task"], r["method"]) not in replaced] + rows
        unimodal = [r for r in previous["unimodal_runs"] if r["task"] not in tasks] + unimodal
        rows.sort(key=lambda r: (list(ALL_TASKS).index(r["task"]), r["seed"]))
    write_json(f"accuracy{suffix}.json", {"machine": machine(), "rows": rows, "unimodal_runs": unimodal})
    lines = [
        f"Test accuracy (%) , mean ± std over {seeds} seeds; {machine()}.",
        "",
        *table(rows, "test_accuracy"),
        "",
        "Test macro-F1 (%):",
        "",
        *table(rows, "test_macro_f1"),
    ]
    (OUT / f"accuracy{suffix}.md").write_text("\n".join(lines) + "\n")
    if not options.quick:
        plot(rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
