"""Probe fidelity and cost: do the default probes find the ranking of converged unimodal training, and at what price?

The reference ranking orders the modalities by the best validation accuracy of a unimodal model
(the main training's model and optimizer, one modality) trained to a validation plateau: early
stopping on ``val_accuracy`` with a patience of 10 epochs, at most 200 epochs, independent of any
main-training length. Every converged training is repeated with other initial weights and batch
order (same split): how often converged training reproduces its own ranking is the ceiling any probe
can be held to.

The probes are PDMPCallback's defaults, run probe-only (fit stops right after them) for main
trainings of 3, 10, 30 and 100 epochs. Their cost is set against the main training's time, which is
extrapolated: the length times the seconds per epoch measured on a short real PDMP run of the same
task and seed (its steady epochs, validation included, probing and the first epoch excluded).

Parts (``--parts``): ``converged`` (the reference and its repeat), ``main`` (the per-epoch time),
``probes`` (the default probes at every length) and, on request, ``variants`` (the probes' epoch cap
varied at one length). Rows go to ``docs/benchmarks/probes.json``; ``--append`` merges them into the
rows already there (replacing rows of the same key), so the benchmark runs in pieces; the report
``docs/benchmarks/probes.md`` is rewritten from the json after every piece (or alone with ``--report``).

Times on 2 cores: the 9 MLP tasks together about 7 minutes; avdigits (CNN encoders) about 3.5
minutes a seed, so two pieces; the variants about 4 minutes. ``--append`` drops the rows of the
former layout (the budget benchmark's) from probes.json.

    python -m benchmarks.probes --tasks synthetic2 synthetic3 synthetic2_balanced mfeat_fou_kar mfeat_mor_pix \
        mfeat_fac_pix mfeat_all slow8 slow_ring3 --append   # the MLP tasks
    python -m benchmarks.probes --tasks avdigits --seeds 0 1 2 --append
    python -m benchmarks.probes --tasks avdigits --seeds 3 4 --append
    python -m benchmarks.probes --parts variants --append   # optional: the probes' epoch cap varied
    python -m benchmarks.probes --report   # rewrites probes.md from probes.json
    python -m benchmarks.probes --quick    # a smoke run, 2 tasks x 2 seeds x 2 lengths: probes_quick.{json,md}
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from benchmarks.common import CONVERGE_MAX_EPOCHS, CONVERGE_PATIENCE, OUT, TASKS, Run, machine, run_all, write_json
from pdmp_lightning import ProbeSettings

#: Main-training lengths (epochs) the probes are run for.
LENGTHS = (3, 10, 30, 100)
SEEDS = (0, 1, 2, 3, 4)
PARTS = ("converged", "main", "probes", "variants")
DEFAULT_PARTS = ("converged", "main", "probes")
#: Offset of the initial-weights seed of the repeated converged trainings.
REPEAT_SEED = 1000
#: The run whose steady epochs give the main training's seconds per epoch, and its length.
MAIN_METHOD = "pdmp"
MAIN_EPOCHS = 3
#: Probe epoch caps compared by the ``variants`` part (the default's rows are the ``probes`` part's),
#: at one main-training length.
VARIANT_MAX_EPOCHS = (5, 10, 40)
VARIANT_LENGTH = 30
#: The cost goal: median probe time at most this share of the main training, at these lengths.
COST_GOAL = 0.15
COST_GOAL_LENGTHS = (30, 100)
#: A converged lead of at least this much validation accuracy makes the dominant modality decisive.
DECISIVE_GAP = 0.01


# --- runs ------------------------------------------------------------------------------------


def planned(parts: Sequence[str], tasks: Sequence[str], seeds: Sequence[int], lengths: Sequence[int]) -> list[Run]:
    """The runs of the chosen parts, the longest kind (converged trainings) first."""
    runs: list[Run] = []
    if "converged" in parts:
        runs += [
            Run(t, f"unimodal:{m}", s, test=False, converge=True, init_seed=s + REPEAT_SEED if again else None)
            for t in tasks
            for s in seeds
            for again in (False, True)
            for m in TASKS[t].modalities
        ]
    if "main" in parts:
        runs += [Run(t, MAIN_METHOD, s, test=False, epochs=MAIN_EPOCHS) for t in tasks for s in seeds]
    if "probes" in parts:
        runs += [Run(t, "pdmp", s, probe_only=True, epochs=length) for t in tasks for s in seeds for length in lengths]
    if "variants" in parts:
        runs += [
            Run(t, "pdmp", s, options={"probes": ProbeSettings(max_epochs=cap)}, probe_only=True, epochs=VARIANT_LENGTH)
            for cap in VARIANT_MAX_EPOCHS
            for t in tasks
            for s in seeds
        ]
    return runs


def labelled(run: Run, row: dict[str, Any]) -> dict[str, Any]:
    """A run's row, tagged with its part and key, without the fields that do not apply to it."""
    row = {k: v for k, v in row.items() if v is not None and k not in ("options", "imbalanced")}
    if run.converge:
        row.update(part="converged", modality=run.method.split(":", 1)[1], repeat=run.init_seed is not None)
    elif not run.probe_only:
        row.update(part="main", main_epochs=MAIN_EPOCHS)
    elif "probes" in run.options:
        row.update(part="variants", length=run.epochs, probe_max_epochs=run.options["probes"].max_epochs)
    else:
        row.update(part="probes", length=run.epochs)
    return row


def key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What a row replaces when ``--append`` merges it in."""
    fields = ("part", "task", "seed", "modality", "repeat", "length", "probe_max_epochs")
    return tuple(str(row.get(f)) for f in fields)


def merge(old: Iterable[dict[str, Any]], new: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The old rows whose key no new row has, then the new ones; sorted by part, task, seed, length."""
    new = list(new)
    replaced = {key(r) for r in new}
    rows = [r for r in old if key(r) not in replaced] + new
    order = {t: i for i, t in enumerate(TASKS)}
    return sorted(
        rows,
        key=lambda r: (
            PARTS.index(r["part"]),
            order.get(r["task"], len(order)),
            r["seed"],
            r.get("length", 0),
            r.get("probe_max_epochs", 0),
            r.get("modality", ""),
            r.get("repeat", False),
        ),
    )


# --- comparison ------------------------------------------------------------------------------


def ranking(scores: dict[str, float]) -> list[str]:
    """Modalities by score, best first (ties by name)."""
    return sorted(scores, key=lambda m: (-scores[m], m))


def top_gap(scores: dict[str, float]) -> float:
    """Validation-accuracy lead of the best modality over the second."""
    best, second = sorted(scores.values(), reverse=True)[:2]
    return round(best - second, 4)


def references(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Per (task, seed) with every converged training and its repeat: both rankings, scores and epochs."""
    scores: dict[tuple[str, int, bool], dict[str, float]] = {}
    epochs: dict[tuple[str, int], list[int]] = {}
    for row in rows:
        if row["part"] == "converged":
            scores.setdefault((row["task"], row["seed"], row["repeat"]), {})[row["modality"]] = row["best_val_accuracy"]
            epochs.setdefault((row["task"], row["seed"]), []).append(row["epochs_trained"])
    found = {}
    for (task, seed, again), first in scores.items():
        other = scores.get((task, seed, True))
        wanted = set(TASKS[task].modalities) if task in TASKS else set(first)
        if again or other is None or set(first) != wanted or set(other) != wanted:
            continue
        found[(task, seed)] = {
            "ranking": ranking(first),
            "scores": first,
            "repeat_ranking": ranking(other),
            "epochs": epochs[(task, seed)],
        }
    return found


def epoch_seconds(rows: list[dict[str, Any]]) -> dict[tuple[str, int], float]:
    """The main training's measured seconds per epoch, per (task, seed)."""
    return {(r["task"], r["seed"]): r["epoch_seconds"] for r in rows if r["part"] == "main" and "epoch_seconds" in r}


def compared(rows: list[dict[str, Any]], part: str = "probes") -> tuple[list[dict[str, Any]], int]:
    """The probe rows set against their converged reference and the main training's time; and how many lack either."""
    reference, per_epoch = references(rows), epoch_seconds(rows)
    out, missing = [], 0
    for row in rows:
        if row["part"] != part:
            continue
        found, seconds = reference.get((row["task"], row["seed"])), per_epoch.get((row["task"], row["seed"]))
        if found is None or seconds is None:
            missing += 1
            continue
        main_seconds = row["length"] * seconds
        out.append(
            {
                **row,
                "converged_ranking": found["ranking"],
                "ranking_match": row["probe_ranking"] == found["ranking"],
                "dominant_match": row["probe_ranking"][0] == found["ranking"][0],
                "self_match": found["repeat_ranking"] == found["ranking"],
                "decisive": top_gap(found["scores"]) >= DECISIVE_GAP,
                "main_seconds": main_seconds,
                "cost": row["probe_seconds"] / main_seconds,
            }
        )
    return out, missing


# --- report ----------------------------------------------------------------------------------


def _count(rows: list[dict[str, Any]], field: str) -> str:
    if not rows:
        return "-"
    hits = sum(r[field] for r in rows)
    return f"{hits}/{len(rows)} ({100 * hits / len(rows):.0f}%)"


def _share(rows: list[dict[str, Any]], field: str) -> float:
    return sum(r[field] for r in rows) / len(rows) if rows else float("nan")


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def length_table(rows: list[dict[str, Any]], lengths: list[int]) -> list[str]:
    lines = [
        "| main epochs | probes = converged ranking | probes = converged dominant | converged = its repeat "
        "| where converged = its repeat: probes match | misses with a ProbeRankingWarning "
        "| probe cost / main (median) | (max) | probe s (median) | probes stopped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for length in lengths:
        mine = [r for r in rows if r["length"] == length]
        stable = [r for r in mine if r["self_match"]]
        stops = Counter(reason for r in mine for reason in r.get("probe_stopped", {}).values())
        misses = [{"warned": bool(r.get("probe_doubts"))} for r in mine if not r["ranking_match"]]
        lines.append(
            f"| {length} | {_count(mine, 'ranking_match')} | {_count(mine, 'dominant_match')} "
            f"| {_count(mine, 'self_match')} | {_count(stable, 'ranking_match')} | {_count(misses, 'warned')} "
            f"| {_pct(statistics.median(r['cost'] for r in mine))} | {_pct(max(r['cost'] for r in mine))} "
            f"| {statistics.median(r['probe_seconds'] for r in mine):.2f} "
            f"| {', '.join(f'{reason} {n}' for reason, n in stops.most_common()) or '-'} |"
        )
    return lines


def task_table(rows: list[dict[str, Any]], all_rows: list[dict[str, Any]], lengths: list[int]) -> list[str]:
    reference, per_epoch = references(all_rows), epoch_seconds(all_rows)
    heads = [f"= converged at {n}" for n in lengths] + [f"cost at {n}" for n in lengths]
    lines = [
        "| task | converged = its repeat | converged epochs (median, max) | main s / epoch (median) "
        "| probe s (median) | " + " | ".join(heads) + " |",
        "|---|---|---|---|---|" + "---|" * len(heads),
    ]
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        seeds = sorted({r["seed"] for r in mine})
        self_match = sum(reference[(task, s)]["repeat_ranking"] == reference[(task, s)]["ranking"] for s in seeds)
        epochs = [e for s in seeds for e in reference[(task, s)]["epochs"]]
        cells = []
        for length in lengths:
            at = [r for r in mine if r["length"] == length]
            cells.append(f"{sum(r['ranking_match'] for r in at)}/{len(at)}" if at else "-")
        for length in lengths:
            at = [r for r in mine if r["length"] == length]
            cells.append(_pct(statistics.median(r["cost"] for r in at)) if at else "-")
        lines.append(
            f"| {task} | {self_match}/{len(seeds)} | {statistics.median(epochs):.0f}, {max(epochs)} "
            f"| {statistics.median(per_epoch[(task, s)] for s in seeds):.3f} "
            f"| {statistics.median(r['probe_seconds'] for r in mine):.2f} | " + " | ".join(cells) + " |"
        )
    return lines


def _verdict(checks: list[bool], unmeasured: list[int]) -> str:
    if not all(checks):
        return "missed"
    return f"not settled (not measured at {', '.join(map(str, unmeasured))} epochs)" if unmeasured else "met"


def goals(rows: list[dict[str, Any]], lengths: list[int]) -> list[str]:
    """The two goals, met or missed, with their figures."""
    fidelity = []
    for length in lengths:
        mine = [r for r in rows if r["length"] == length]
        fidelity.append((length, _share(mine, "ranking_match"), _share(mine, "self_match")))
    verdict = _verdict([p >= c for _, p, c in fidelity], [n for n in LENGTHS if n not in lengths])
    figures = "; ".join(f"{n} epochs: {_pct(p)} vs {_pct(c)}" for n, p, c in fidelity)
    lines = [
        f"**Goal: fidelity equal to what converged training reproduces of itself, at every length: {verdict}** "
        f"(probes = converged ranking vs converged = its repeat: {figures}).",
        "",
    ]
    costs: dict[int, float] = {}
    for length in COST_GOAL_LENGTHS:
        shares = [r["cost"] for r in rows if r["length"] == length]
        if shares:
            costs[length] = statistics.median(shares)
    verdict = _verdict([c <= COST_GOAL for c in costs.values()], [n for n in COST_GOAL_LENGTHS if n not in costs])
    figures = "; ".join(f"{n} epochs: {_pct(c)}" for n, c in costs.items()) or "no figures"
    lines.append(
        f"**Goal: median probe cost at most {100 * COST_GOAL:.0f}% of the main training at "
        f"{' and '.join(map(str, COST_GOAL_LENGTHS))} epochs: {verdict}** ({figures})."
    )
    return lines


def variant_table(all_rows: list[dict[str, Any]], default_rows: list[dict[str, Any]]) -> list[str]:
    variants, _ = compared(all_rows, part="variants")
    if not variants:
        return []
    tasks = sorted({r["task"] for r in variants})
    lines = [
        f"Probe epoch cap varied (`ProbeSettings(max_epochs=...)`, probes only, main training of "
        f"{VARIANT_LENGTH} epochs; tasks {', '.join(tasks)}):",
        "",
        "| probes.max_epochs | probes = converged ranking | where converged = its repeat | probes = converged dominant "
        "| probe s (median) | probe cost / main (median) | probes stopped at the cap |",
        "|---|---|---|---|---|---|---|",
    ]
    default_cap = ProbeSettings().max_epochs
    default = [r for r in default_rows if r["length"] == VARIANT_LENGTH and r["task"] in tasks]
    groups = [(f"{default_cap:g} (default)", default)] + [
        (f"{cap:g}", [r for r in variants if r["probe_max_epochs"] == cap])
        for cap in sorted({r["probe_max_epochs"] for r in variants})
    ]
    for label, mine in groups:
        if not mine:
            continue
        stable = [r for r in mine if r["self_match"]]
        capped = sum(reason == "cap" for r in mine for reason in r.get("probe_stopped", {}).values())
        probes = sum(len(r.get("probe_stopped", {})) for r in mine)
        lines.append(
            f"| {label} | {_count(mine, 'ranking_match')} | {_count(stable, 'ranking_match')} "
            f"| {_count(mine, 'dominant_match')} | {statistics.median(r['probe_seconds'] for r in mine):.2f} "
            f"| {_pct(statistics.median(r['cost'] for r in mine))} | {capped}/{probes} |"
        )
    return lines


def report(payload: dict[str, Any]) -> list[str]:
    all_rows = payload["rows"]
    rows, missing = compared(all_rows)
    if not rows:
        return ["No probe row has both its converged reference and its main-training time yet."]
    lengths = sorted({r["length"] for r in rows})
    pairs = {(r["task"], r["seed"]) for r in rows}
    decisive = [r for r in rows if r["decisive"]]
    capped = [r for r in all_rows if r["part"] == "converged" and r["epochs_trained"] >= CONVERGE_MAX_EPOCHS]
    lines = [
        f"Default probes (probe-only runs) over {len(pairs)} (task, seed) and main trainings of "
        f"{', '.join(map(str, lengths))} epochs, against unimodal training to a validation plateau (early stopping, "
        f"patience {CONVERGE_PATIENCE}, at most {CONVERGE_MAX_EPOCHS} epochs; best validation accuracy), repeated "
        f"with other initial weights for the ceiling. Main training time is extrapolated: length x the seconds per "
        f"epoch measured on a {MAIN_EPOCHS}-epoch `{MAIN_METHOD}` run of the same task and seed (steady epochs, "
        f"validation included). Probe seconds: the probes' wall time, set-up and validation included. "
        f"{machine()}.",
        "",
        *goals(rows, lengths),
        "",
        *length_table(rows, lengths),
        "",
        f"Where converged training has a dominant modality ahead by at least {100 * DECISIVE_GAP:.0f} validation "
        f"points ({len({(r['task'], r['seed']) for r in decisive})} (task, seed)), the probes find it in "
        + ", ".join(f"{_count([r for r in decisive if r['length'] == n], 'dominant_match')} at {n}" for n in lengths)
        + ".",
        "",
        "Per task (probes = converged ranking, and probe cost / main training, median, at each length):",
        "",
        *task_table(rows, all_rows, lengths),
    ]
    if capped:
        lines += ["", f"{len(capped)} converged trainings hit the {CONVERGE_MAX_EPOCHS}-epoch cap before a plateau."]
    if missing:
        lines += ["", f"{missing} probe rows left out: their (task, seed) lacks a converged reference or a main time."]
    variants = variant_table(all_rows, rows)
    return lines + (["", *variants] if variants else [])


def load_rows(suffix: str) -> list[dict[str, Any]]:
    """The rows of probes{suffix}.json, if any (rows of the former layout, without a part, are dropped)."""
    path = OUT / f"probes{suffix}.json"
    rows = json.loads(path.read_text()).get("rows", []) if path.is_file() else []
    return [r for r in rows if "part" in r]


def write_report(suffix: str) -> None:
    lines = report({"rows": load_rows(suffix)})
    (OUT / f"probes{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# --- main ------------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), help="default: every task (quick: 2)")
    parser.add_argument("--seeds", nargs="+", type=int, help="the seeds themselves, not a count; default: 0 1 2 3 4")
    parser.add_argument("--lengths", nargs="+", type=int, help=f"main-training epochs; default: {LENGTHS}")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(DEFAULT_PARTS), help="what to run")
    parser.add_argument("--append", action="store_true", help="merge into probes.json, replacing rows of the same key")
    parser.add_argument("--report", action="store_true", help="only rewrite probes.md from probes.json")
    parser.add_argument("--quick", action="store_true", help="a smoke run: probes_quick.{json,md}")
    parser.add_argument("--processes", type=int, help="worker processes (default: one per core)")
    options = parser.parse_args(argv)
    quick = options.quick
    options.tasks = options.tasks or (["synthetic2", "slow8"] if quick else list(TASKS))
    options.seeds = options.seeds or ([0, 1] if quick else list(SEEDS))
    options.lengths = options.lengths or ([3, 30] if quick else list(LENGTHS))
    if any(n < 1 for n in options.lengths):
        parser.error("--lengths: epochs must be >= 1")
    return options


def main(argv: Sequence[str] | None = None) -> None:
    options = parse(argv)
    suffix = "_quick" if options.quick else ""
    if options.report:
        write_report(suffix)
        return
    started = time.perf_counter()
    runs = planned(options.parts, options.tasks, options.seeds, options.lengths)
    rows = [labelled(run, row) for run, row in zip(runs, run_all(runs, options.processes), strict=True)]
    rows = merge(load_rows(suffix) if options.append else [], rows)
    write_json(f"probes{suffix}.json", {"machine": machine(), "rows": rows}, out=OUT)
    write_report(suffix)
    print(f"{len(runs)} runs in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
