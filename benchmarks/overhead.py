"""Per-step cost of each callback against plain Lightning on the same model, SGD and AdamW.

Steps are timed hook to hook (``on_train_batch_start`` to ``on_train_batch_end``: forward,
backward, the callback's work and the optimizer step; no set-up, no probing), in one process,
with the methods interleaved round by round so drift in the machine's speed hits all of them
alike. Each callback modulates from the first step. Writes ``docs/benchmarks/overhead.{json,md}``.

    python -m benchmarks.overhead            # 7 rounds x 30 steps per method and optimizer
    python -m benchmarks.overhead --quick    # 2 rounds x 8 steps
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import time
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

import pdmp_lightning
from benchmarks.common import OUT, machine, write_json
from pdmp_lightning.data import TensorMultimodalDataset
from pdmp_lightning.models import MLPEncoder, MultimodalClassifier

DIM, BATCH, CLASSES = 256, 256, 10
MODALITIES = {"audio": "encoders.audio", "visual": "encoders.visual"}
METHODS: dict[str, Any] = {
    "plain": None,
    "pdmp": lambda: pdmp_lightning.PDMPCallback(MODALITIES, ranking=["visual", "audio"], start_epoch=0),
    "pdmp_constant": lambda: pdmp_lightning.PDMPCallback(
        MODALITIES, ranking=["visual", "audio"], start_epoch=0, adaptation="none"
    ),
    "pdmp_parameter": lambda: pdmp_lightning.PDMPCallback(
        MODALITIES, ranking=["visual", "audio"], start_epoch=0, mechanism="parameter"
    ),
    "ogm_ge": lambda: pdmp_lightning.OGMGECallback(MODALITIES),
    "opm": lambda: pdmp_lightning.OPMCallback(MODALITIES, start_epoch=0),
    "agm": lambda: pdmp_lightning.AGMCallback(MODALITIES),
    "mmpareto": lambda: pdmp_lightning.MMParetoCallback(MODALITIES),
}
OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3),
}


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self.started)


def build(optimizer: str, method: str) -> MultimodalClassifier:
    torch.manual_seed(0)
    encoders = {m: MLPEncoder(in_features=DIM, hidden=[1024, 1024], out_features=512) for m in MODALITIES}
    return MultimodalClassifier(
        encoders,
        num_classes=CLASSES,
        unimodal_heads=method == "mmpareto",
        unimodal_loss_weight=1.0 if method == "mmpareto" else 0.0,
        optimizer=OPTIMIZERS[optimizer],
    )


def time_steps(
    optimizer: str, method: str, loader: DataLoader[Any], steps: int, warmup: int
) -> tuple[list[float], str]:
    """Step times after ``warmup`` steps, and the mechanism the callback used."""
    timer = StepTimer()
    factory = METHODS[method]
    callback = factory() if factory else None
    callbacks = [callback, timer] if callback else [timer]
    trainer = pl.Trainer(
        max_steps=steps + warmup,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(build(optimizer, method), train_dataloaders=loader)
    mechanism = "-" if callback is None else str(callback.mechanism_in_use)
    if method == "opm":
        mechanism = "forward hook on the fusion"
    return timer.times[warmup:], mechanism


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    rounds, steps = (2, 8) if options.quick else (options.rounds, options.steps)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    generator = torch.Generator().manual_seed(0)
    count = BATCH * (steps + 3)
    dataset = TensorMultimodalDataset(
        {m: torch.randn(count, DIM, generator=generator) for m in MODALITIES},
        torch.randint(0, CLASSES, (count,), generator=generator),
    )
    loader = DataLoader(dataset, batch_size=BATCH)
    order = random.Random(0)
    rows = []
    for optimizer in OPTIMIZERS:
        medians: dict[str, list[float]] = {m: [] for m in METHODS}
        mechanisms: dict[str, str] = {}
        for _ in range(rounds):
            methods = list(METHODS)
            order.shuffle(methods)
            for method in methods:
                times, mechanisms[method] = time_steps(optimizer, method, loader, steps, warmup=3)
                medians[method].append(statistics.median(times))
        for method in METHODS:
            if method == "plain":
                continue
            ratios = [m / p for m, p in zip(medians[method], medians["plain"], strict=True)]
            rows.append(
                {
                    "method": method,
                    "optimizer": optimizer,
                    "mechanism": mechanisms[method],
                    "ratio_median": statistics.median(ratios),
                    "ratios": ratios,
                    "step_ms_median": 1000 * statistics.median(medians[method]),
                    "plain_step_ms_median": 1000 * statistics.median(medians["plain"]),
                    "peak_memory": None,  # CPU run: torch reports peak memory for CUDA devices only
                }
            )
            print(f"{optimizer} {method}: {rows[-1]['ratio_median']:.3f}", flush=True)
    suffix = "_quick" if options.quick else ""
    write_json(f"overhead{suffix}.json", {"machine": machine(), "rounds": rounds, "steps": steps, "rows": rows})
    lines = [
        f"Median step time with the callback modulating / plain Lightning; two MLP encoders (256-1024-1024-512), "
        f"batch {BATCH}; {rounds} interleaved rounds of {steps} timed steps; {machine()}.",
        "",
        "| method | optimizer | mechanism | ratio (median) | step ms | plain step ms |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['optimizer']} | {row['mechanism']} | {row['ratio_median']:.3f} "
            f"| {row['step_ms_median']:.1f} | {row['plain_step_ms_median']:.1f} |"
        )
    (OUT / f"overhead{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
