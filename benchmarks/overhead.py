"""Per-step time and peak memory of each callback against plain Lightning, on two model sizes, SGD and AdamW.

Steps are timed hook to hook (``on_train_batch_start`` to ``on_train_batch_end``: forward,
backward, the callback's work and the optimizer step; no set-up, no probing), in one process,
with the methods interleaved round by round so that drift in the machine's speed hits all of them
alike. Each callback modulates from the first step. The ratio of a method is the median over
rounds of (its median step time / plain's in the same round); ``plain_again`` is a second plain
run timed like a method, so its ratio is the A/A noise of the measurement.

Peak memory is measured apart, in one short fit per method under ``torch.profiler`` (every CPU
allocation and free, so the peak of live bytes is exact; torch has no peak counter for CPU
memory): the extra bytes over plain training's peak, and their share of the modulated encoders'
parameter bytes. Writes ``docs/benchmarks/overhead.{json,md}``.

    python -m benchmarks.overhead                         # both sizes, 9 rounds x 40 steps
    python -m benchmarks.overhead --sizes large --append  # one size, kept beside the others' rows
    python -m benchmarks.overhead --methods agm --append  # one method's rows (timed against plain again)
    python -m benchmarks.overhead --quick                 # 2 rounds x 6 steps, small model
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import random
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader

import pdmp_lightning
from benchmarks.common import OUT, machine, write_results
from pdmp_lightning.data import TensorMultimodalDataset
from pdmp_lightning.models import MLPEncoder, MultimodalClassifier

CLASSES = 10
MODALITIES = {"audio": "encoders.audio", "visual": "encoders.visual"}
RANKING = ["visual", "audio"]


@dataclass(frozen=True)
class Size:
    """One model: two MLP towers ``inputs -> hidden... -> features`` and a linear fusion head."""

    inputs: int
    hidden: tuple[int, ...]
    features: int
    batch: int

    def describe(self) -> str:
        widths = "-".join(str(w) for w in (self.inputs, *self.hidden, self.features))
        return f"two MLP towers {widths}, batch {self.batch}"


SIZES = {
    "small": Size(64, (256,), 128, 64),
    # Parameter-sized work dominates: 1024-wide layers, 3.7 M modulated parameters, batch 256.
    "large": Size(256, (1024, 1024), 512, 256),
}


def _pdmp(**options: Any) -> Callable[[], pl.Callback]:
    return lambda: pdmp_lightning.PDMPCallback(MODALITIES, ranking=RANKING, start_epoch=0, **options)


#: Method -> callback factory (None: plain training).
METHODS: dict[str, Callable[[], pl.Callback] | None] = {
    "plain": None,
    "plain_again": None,
    "pdmp": _pdmp(),
    "pdmp_constant": _pdmp(adaptation="none"),
    "pdmp_activation": _pdmp(adaptation="none", mechanism="activation"),
    "pdmp_parameter": _pdmp(adaptation="none", mechanism="parameter"),
    "pdmp_grad": _pdmp(adaptation="none", mechanism="grad"),
    "pdmp_update": _pdmp(adaptation="none", mechanism="update"),
    "pdmp_update_copy": _pdmp(adaptation="none", mechanism="update"),
    "ogm_ge": lambda: pdmp_lightning.OGMGECallback(MODALITIES),
    "opm": lambda: pdmp_lightning.OPMCallback(MODALITIES, start_epoch=0),
    "agm": lambda: pdmp_lightning.AGMCallback(MODALITIES),
    "agm_features": lambda: pdmp_lightning.AGMCallback(MODALITIES, masking="features"),
    "mmpareto": lambda: pdmp_lightning.MMParetoCallback(MODALITIES),
}
#: What each row measures, for the report.
DESCRIPTIONS = {
    "plain_again": "plain Lightning again (A/A: the noise)",
    "pdmp": "PDMP defaults (adaptive boost, `auto` mechanism)",
    "pdmp_constant": "PDMP, paper constants (`adaptation='none'`, `auto`)",
    "pdmp_activation": "PDMP constants, `mechanism='activation'`",
    "pdmp_parameter": "PDMP constants, `mechanism='parameter'`",
    "pdmp_grad": "PDMP constants, `mechanism='grad'`",
    "pdmp_update": "PDMP constants, `mechanism='update'` (learning rates)",
    "pdmp_update_copy": "PDMP constants, `mechanism='update'`, optimizer not learning-rate linear (parameter copy)",
    "ogm_ge": "OGM-GE",
    "opm": "OPM",
    "agm": "AGM (official: masked passes rerun the model)",
    "agm_features": "AGM, `masking='features'` (masked passes rerun the fusion only)",
    "mmpareto": "MMPareto",
}


class OpaqueSGD(torch.optim.SGD):
    """SGD behind its own ``step``: not known to be learning-rate linear, so ``update`` copies parameters."""

    def step(self, closure: Any = None) -> Any:
        return super().step(closure)


class OpaqueAdamW(torch.optim.AdamW):
    """AdamW behind its own ``step`` (see :class:`OpaqueSGD`)."""

    def step(self, closure: Any = None) -> Any:
        return super().step(closure)


OPTIMIZERS: dict[str, Callable[[Any, bool], torch.optim.Optimizer]] = {
    "sgd": lambda p, opaque: (OpaqueSGD if opaque else torch.optim.SGD)(p, lr=0.01, momentum=0.9),
    "adamw": lambda p, opaque: (OpaqueAdamW if opaque else torch.optim.AdamW)(p, lr=1e-3),
}


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self.started)


def build(size: Size, optimizer: str, method: str) -> MultimodalClassifier:
    torch.manual_seed(0)
    encoders = {
        m: MLPEncoder(in_features=size.inputs, hidden=list(size.hidden), out_features=size.features) for m in MODALITIES
    }
    opaque = method == "pdmp_update_copy"
    return MultimodalClassifier(
        encoders,
        num_classes=CLASSES,
        unimodal_heads=method == "mmpareto",
        unimodal_loss_weight=1.0 if method == "mmpareto" else 0.0,
        optimizer=lambda p: OPTIMIZERS[optimizer](p, opaque),
    )


def loader(size: Size, steps: int) -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(0)
    count = size.batch * steps
    dataset = TensorMultimodalDataset(
        {m: torch.randn(count, size.inputs, generator=generator) for m in MODALITIES},
        torch.randint(0, CLASSES, (count,), generator=generator),
    )
    return DataLoader(dataset, batch_size=size.batch)


def fit(size: Size, optimizer: str, method: str, steps: int, extra: list[pl.Callback]) -> MultimodalClassifier | Any:
    """Fits ``steps`` steps; returns the method's callback (None for plain training)."""
    factory = METHODS[method]
    callback = factory() if factory else None
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=([callback] if callback else []) + extra,
    )
    trainer.fit(build(size, optimizer, method), train_dataloaders=loader(size, steps))
    return callback


def mechanism_of(method: str, callback: Any) -> str:
    if callback is None:
        return "-"
    if method == "opm":
        return "forward hook on the fusion"
    if method == "pdmp_update_copy":
        return "update (copy)"
    return str(callback.mechanism_in_use)


def time_steps(size: Size, optimizer: str, method: str, steps: int, warmup: int) -> tuple[list[float], str]:
    """Step times after ``warmup`` steps, and the mechanism the callback used."""
    timer = StepTimer()
    callback = fit(size, optimizer, method, steps + warmup, [timer])
    return timer.times[warmup:], mechanism_of(method, callback)


def peak_bytes(size: Size, optimizer: str, method: str, steps: int = 4) -> int:
    """Peak of live CPU bytes over a short fit (model and data built inside it, so all are counted)."""
    gc.collect()  # earlier fits' garbage, freed during this one, would count as negative allocations
    gc.disable()
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, acc_events=True) as prof:
            fit(size, optimizer, method, steps, [])
    finally:
        gc.enable()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def modulated_bytes(size: Size) -> int:
    model = build(size, "sgd", "plain")
    return sum(p.numel() * p.element_size() for p in model.encoders.parameters())


def measure(size_name: str, rounds: int, steps: int, only: list[str] | None = None) -> list[dict[str, Any]]:
    """The rows of one size; ``only`` times those methods (and plain, their reference) instead of all."""
    size = SIZES[size_name]
    order = random.Random(0)
    rows = []
    encoder_bytes = modulated_bytes(size)
    selected = list(METHODS) if only is None else ["plain", *[m for m in METHODS if m in only and m != "plain"]]
    for optimizer in OPTIMIZERS:
        medians: dict[str, list[float]] = {m: [] for m in selected}
        mechanisms: dict[str, str] = {}
        for _ in range(rounds):
            methods = list(selected)
            order.shuffle(methods)
            for method in methods:
                times, mechanisms[method] = time_steps(size, optimizer, method, steps, warmup=3)
                medians[method].append(statistics.median(times))
        plain_peak = peak_bytes(size, optimizer, "plain")
        for method in selected:
            if method == "plain":
                continue
            ratios = [m / p for m, p in zip(medians[method], medians["plain"], strict=True)]
            extra = peak_bytes(size, optimizer, method) - plain_peak
            rows.append(
                {
                    "size": size_name,
                    "model": size.describe(),
                    "method": method,
                    "optimizer": optimizer,
                    "mechanism": mechanisms[method],
                    "ratio_median": statistics.median(ratios),
                    "ratios": ratios,
                    "step_ms_median": 1000 * statistics.median(medians[method]),
                    "plain_step_ms_median": 1000 * statistics.median(medians["plain"]),
                    "extra_peak_bytes": extra,
                    "modulated_parameter_bytes": encoder_bytes,
                    "extra_peak_share": extra / encoder_bytes,
                }
            )
            print(
                f"{size_name} {optimizer} {method}: {rows[-1]['ratio_median']:.3f} "
                f"(rounds {min(ratios):.3f}-{max(ratios):.3f}), extra peak {extra / 1024:.0f} KiB",
                flush=True,
            )
    return rows


def report(payload: dict[str, Any]) -> str:
    lines = [
        f"Median over rounds of (median step time with the callback modulating / plain Lightning's in the same "
        f"round); {payload['rounds']} interleaved rounds of {payload['steps']} timed steps; `plain_again` is the "
        "A/A noise. Extra peak memory: peak of live CPU bytes over a 4-step fit minus plain training's, and its "
        f"share of the two encoders' parameter bytes. {payload['machine']}.",
    ]
    for size_name in SIZES:
        rows = [r for r in payload["rows"] if r["size"] == size_name]
        if not rows:
            continue
        megabytes = rows[0]["modulated_parameter_bytes"] / 2**20
        lines += [
            "",
            f"**{size_name}**: {rows[0]['model']} ({megabytes:.1f} MiB of modulated parameters).",
            "",
            "| method | optimizer | mechanism | ratio (median) | rounds (min-max) | step ms | plain step ms "
            "| extra peak KiB | share of modulated |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            lines.append(
                f"| {row['method']} | {row['optimizer']} | {row['mechanism']} | {row['ratio_median']:.3f} "
                f"| {min(row['ratios']):.3f}-{max(row['ratios']):.3f} | {row['step_ms_median']:.1f} "
                f"| {row['plain_step_ms_median']:.1f} | {row['extra_peak_bytes'] / 1024:.0f} "
                f"| {100 * row['extra_peak_share']:.2f}% |"
            )
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument(
        "--methods", nargs="+", choices=[m for m in METHODS if m != "plain"], help="only these rows (default: all)"
    )
    parser.add_argument(
        "--append", action="store_true", help="keep the other sizes' and methods' rows of the existing JSON"
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds x 6 steps on the small model")
    options = parser.parse_args(argv)
    if options.quick:
        options.sizes, options.rounds, options.steps = ["small"], 2, 6
    return options


def main() -> None:
    options = parse()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    name = "overhead_quick" if options.quick else "overhead"
    rows = []
    path = OUT / f"{name}.json"
    if options.append and path.exists():
        previous = json.loads(path.read_text())
        if (previous["rounds"], previous["steps"]) != (options.rounds, options.steps):
            raise SystemExit(f"--append: {path} was measured with other --rounds/--steps; rerun every size")
        rows = [
            r
            for r in previous["rows"]
            if r["size"] not in options.sizes or (options.methods is not None and r["method"] not in options.methods)
        ]
    for size_name in options.sizes:
        rows += measure(size_name, options.rounds, options.steps, options.methods)
    rows.sort(key=lambda r: (list(SIZES).index(r["size"]), r["optimizer"] != "sgd", list(METHODS).index(r["method"])))
    payload = {"machine": machine(), "rounds": options.rounds, "steps": options.steps, "rows": rows}
    write_results(name, payload, report(payload))


if __name__ == "__main__":
    main()
