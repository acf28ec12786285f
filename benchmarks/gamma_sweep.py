"""gamma_p x gamma_r for PDMP on two tasks: the evidence behind the defaults.

Writes ``docs/benchmarks/gamma_sweep.{json,md,png}`` (one heatmap of mean test accuracy per task).

    python -m benchmarks.gamma_sweep            # 5 x 3 grid, 2 tasks, 3 seeds
    python -m benchmarks.gamma_sweep --quick    # 2 x 2 grid, 1 task, 1 seed, 3 epochs
"""

from __future__ import annotations

import argparse
import statistics

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks.common import OUT, Run, machine, run_all, write_json

GAMMA_P = (1.0, 2.0, 5.0, 10.0, 20.0)
GAMMA_R = (0.25, 0.5, 1.0)
TASKS = ("synthetic2", "mfeat_fou_kar")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    tasks, gamma_p, gamma_r = (TASKS[:1], GAMMA_P[1:3], GAMMA_R[1:]) if options.quick else (TASKS, GAMMA_P, GAMMA_R)
    seeds = 1 if options.quick else options.seeds
    epochs = 3 if options.quick else None
    runs = [
        Run(task, "pdmp", seed, options={"gamma_p": p, "gamma_r": r}, epochs=epochs)
        for task in tasks
        for p in gamma_p
        for r in gamma_r
        for seed in range(seeds)
    ]
    joint = [Run(task, "joint", seed, epochs=epochs) for task in tasks for seed in range(seeds)]
    results = run_all([*runs, *joint])
    rows = [r for r in results if r["method"] == "pdmp"]
    baseline = {
        task: statistics.mean(r["test_accuracy"] for r in results if r["method"] == "joint" and r["task"] == task)
        for task in tasks
    }
    suffix = "_quick" if options.quick else ""
    write_json(f"gamma_sweep{suffix}.json", {"machine": machine(), "rows": rows, "joint_mean": baseline})
    figure = Figure(figsize=(5 * len(tasks), 4), layout="constrained")
    FigureCanvasAgg(figure)
    lines = [f"Mean test accuracy (%) of PDMP over {seeds} seeds; rows gamma_p, columns gamma_r; {machine()}.", ""]
    for axis, task in zip(figure.subplots(1, len(tasks), squeeze=False)[0], tasks, strict=True):
        grid = [
            [
                statistics.mean(
                    r["test_accuracy"]
                    for r in rows
                    if r["task"] == task and r["options"] == {"gamma_p": p, "gamma_r": g}
                )
                for g in gamma_r
            ]
            for p in gamma_p
        ]
        image = axis.imshow(grid, cmap="viridis", aspect="auto")
        axis.set_xticks(range(len(gamma_r)), [str(g) for g in gamma_r])
        axis.set_yticks(range(len(gamma_p)), [str(p) for p in gamma_p])
        axis.set(xlabel="gamma_r", ylabel="gamma_p", title=f"{task} (joint: {100 * baseline[task]:.1f}%)")
        for i, line in enumerate(grid):
            for j, value in enumerate(line):
                axis.text(j, i, f"{100 * value:.1f}", ha="center", va="center", color="white", fontsize=8)
        figure.colorbar(image, ax=axis)
        lines += [
            f"**{task}** (joint training: {100 * baseline[task]:.2f})",
            "",
            "| gamma_p \\ gamma_r | " + " | ".join(str(g) for g in gamma_r) + " |",
            "|---|" + "---|" * len(gamma_r),
            *(
                f"| {p} | " + " | ".join(f"{100 * v:.2f}" for v in line) + " |"
                for p, line in zip(gamma_p, grid, strict=True)
            ),
            "",
        ]
    figure.savefig(OUT / f"gamma_sweep{suffix}.png", dpi=110)
    (OUT / f"gamma_sweep{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
