"""``python -m pdmp_lightning fit --config cfg.yaml``: LightningCLI for multimodal models and data.

Any LightningModule / LightningDataModule can be named by ``class_path`` (subclass mode). A
datamodule's ``num_classes`` and ``modalities`` attributes are linked into the model's
``num_classes`` and ``modalities`` arguments when both sides have them. After ``fit``, the best
checkpoint (or the last weights) is tested, ``results.json`` and ``training_curves.png`` are
written next to the logs and the saved ``config.yaml``. With ``--trainer.default_root_dir DIR``,
relative logger ``save_dir`` and ``ModelCheckpoint`` ``dirpath`` values are taken relative to ``DIR``
(absolute paths and URLs are left alone), so that every file of the run lands under ``DIR``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

import pdmp_lightning.callbacks
import pdmp_lightning.data
import pdmp_lightning.models  # noqa: F401  (registers the models and encoders for short class names)
from pdmp_lightning.callbacks import PDMPCallback
from pdmp_lightning.plots import plot_run
from pdmp_lightning.probing.report import write_json_atomically

RESULTS_FILENAME = "results.json"


class PDMPLightningCLI(LightningCLI):
    """LightningCLI with data-to-model links and a results file and plot after ``fit``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, test the best checkpoint (or the last weights) and record the test metrics.",
        )
        parser.add_argument(
            "--plot", type=bool, default=True, help="After fit, draw training_curves.png into the run directory."
        )
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.modalities", "model.init_args.modalities", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        self._relocated = _relocate_under_default_root_dir(self._config())

    def after_instantiate_classes(self) -> None:
        # The objects are built with the resolved paths; the config (saved as config.yaml) keeps the
        # paths as given, so a rerun of the saved config applies the same rule to its default_root_dir.
        for init_args, key, value in getattr(self, "_relocated", []):
            init_args[key] = value

    def before_fit(self) -> None:
        self._fit_started = time.perf_counter()

    def after_fit(self) -> None:
        trainer, options = self.trainer, self._options()
        seconds = time.perf_counter() - getattr(self, "_fit_started", time.perf_counter())
        validation = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        test: dict[str, float] = {}
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
        if options.get("test_after_fit", True) and _has_test_data(self.datamodule, self.model):
            results = trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if best else None)
            test = {k: float(v) for k, v in (results[0] if results else {}).items()}
        if not trainer.is_global_zero:
            return
        run_dir = Path(trainer.loggers[0].log_dir or trainer.default_root_dir) if trainer.loggers else None
        if run_dir is None:
            return
        pdmp = next((c for c in trainer.callbacks if isinstance(c, PDMPCallback)), None)  # type: ignore[attr-defined]
        results_file = {
            "validation": validation,
            "test": test,
            "tested_checkpoint": best or "last weights",
            "fit_seconds": round(seconds, 2),
            "seed": self._config().get("seed_everything"),
            "pdmp": None
            if pdmp is None
            else {
                "ranking": pdmp.ranking,
                "dominant": pdmp.dominant,
                "probe_scores": pdmp.probe_scores,
                "coefficients": pdmp.coefficients,
            },
        }
        write_json_atomically(run_dir / RESULTS_FILENAME, results_file)
        plot = plot_run(run_dir) if options.get("plot", True) else None
        summary = ", ".join(f"{k} {v:.4f}" for k, v in {**validation, **test}.items() if "loss" not in k)
        rank_zero_info(
            f"Results: {summary}\nWritten to {run_dir}: {RESULTS_FILENAME}" + (f", {plot.name}" if plot else "")
        )

    def _config(self) -> Namespace:
        config: Namespace = self.config.get(str(self.subcommand), self.config)
        return config

    def _options(self) -> dict[str, Any]:
        config = self._config()
        return {key: config.get(key) for key in ("test_after_fit", "plot")}


def _relocate_under_default_root_dir(config: Namespace) -> list[tuple[Namespace, str, Any]]:
    """Joins ``trainer.default_root_dir`` in front of the relative output paths of ``config``'s loggers
    (``save_dir``) and ``ModelCheckpoint`` callbacks (``dirpath``), in place.

    Returns ``(init_args, key, original value)`` for each path it changed. Nothing changes without a
    ``default_root_dir``; absolute paths, URLs (``s3://...``) and unset values are left alone.
    """
    trainer = config.get("trainer")
    root = trainer.get("default_root_dir") if isinstance(trainer, Namespace) else None
    if root is None:
        return []
    changed: list[tuple[Namespace, str, Any]] = []

    def relocate(init_args: Any, key: str) -> None:
        value = init_args.get(key) if isinstance(init_args, Namespace) else None
        if not isinstance(value, (str, os.PathLike)):
            return
        path = os.fspath(value)
        if "://" in path or os.path.isabs(path):
            return
        root_text = os.fspath(root)
        init_args[key] = f"{root_text.rstrip('/')}/{path}" if "://" in root_text else os.path.join(root_text, path)
        changed.append((init_args, key, value))

    for logger in _entries(trainer.get("logger")):
        relocate(logger.get("init_args"), "save_dir")
    for callback in _entries(trainer.get("callbacks")):
        if _is_subclass(callback.get("class_path"), ModelCheckpoint):
            relocate(callback.get("init_args"), "dirpath")
    return changed


def _entries(value: Any) -> list[Namespace]:
    """The ``class_path`` / ``init_args`` entries of a config value that holds one or a list of them."""
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, Namespace)]


def _is_subclass(class_path: Any, base: type) -> bool:
    if not isinstance(class_path, str) or "." not in class_path:
        return False
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(cls, type) and issubclass(cls, base)


def _has_test_data(datamodule: Any, model: Any) -> bool:
    for source in (datamodule, model):
        method = getattr(source, "test_dataloader", None)
        if method is not None and _overrides(source, "test_dataloader"):
            return True
    return False


def _overrides(obj: Any, name: str) -> bool:
    base = pl.LightningDataModule if isinstance(obj, pl.LightningDataModule) else pl.LightningModule
    return inspect.getattr_static(type(obj), name) is not inspect.getattr_static(base, name)


def main(args: list[str] | None = None) -> PDMPLightningCLI:
    """Runs the command line (``args`` replaces ``sys.argv[1:]``, for tests and scripts)."""
    return PDMPLightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=args,
    )


def entry_point() -> None:
    """The ``pdmp-lightning`` console script."""
    main()
