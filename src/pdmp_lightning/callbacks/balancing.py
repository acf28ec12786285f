"""Shared by the methods PDMP is compared with: labels and features of the step, rank-reduced scores."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from pdmp_lightning.batch import BatchKey, check_batch_key, select_from_batch
from pdmp_lightning.callbacks.base import ModalityModulationCallback
from pdmp_lightning.errors import check_int, config_error
from pdmp_lightning.fusion_access import FusionAccess, HeadSpec, LinearHeadAccess, ModuleProtocolAccess, check_head
from pdmp_lightning.modality import ModalitySpecInput
from pdmp_lightning.modulation.mechanisms import Mechanism, at_least_float32
from pdmp_lightning.protocol import require
from pdmp_lightning.types import NonNegativeInt, PositiveInt


def score_ratios(scores: Mapping[str, float]) -> dict[str, float]:
    """``rho_m = s_m / mean_{j != m} s_j``: ``s_a / s_v`` with two modalities (OGM-GE and OPM).

    Examples:
        >>> score_ratios({"a": 3.0, "v": 1.0, "d": 1.0})
        {'a': 3.0, 'v': 0.5, 'd': 0.5}
    """
    ratios = {}
    for modality, score in scores.items():
        others = [s for m, s in scores.items() if m != modality]
        reference = sum(others) / len(others)
        ratios[modality] = score / reference if reference > 0 else (math.inf if score > 0 else 1.0)
    return ratios


def true_class_probability_sums(logits: Mapping[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
    """Per modality, the batch sum of the softmax probability of the true class (OGM's ``s_m``)."""
    return {m: values.softmax(dim=1).gather(1, labels[:, None]).sum() for m, values in logits.items()}


class BalancingCallback(ModalityModulationCallback):
    """Base of OGM-GE, OPM, AGM and MMPareto.

    While modulating it keeps the labels of the current batch (``target``) and, when the method
    needs them, each modality's features from the training forward; a subclass turns them into
    coefficients in ``update_coefficients``, called before every backward. It reaches the model's
    fusion through ``access`` (see ``pdmp_lightning.fusion_access``): through the named
    ``head``, or through the module's ``pdmp_lightning.protocol`` methods.

    Args:
        modalities: Modality -> the parameters to modulate: its encoder's submodule path, or regexes.
        features: Modality -> dotted path of the submodule whose output are that modality's features;
            default: the modality's own (single) submodule path. Not with ``head``.
        head: The model's final linear layer, by path (a concat fusion, e.g.
            ``"model.fusion_module.fc_out"``), or modality -> path of each modality's linear head (a
            sum fusion). The features, each modality's share of the logits and the fused logits are
            then derived from it, with nothing asked of the model. None: the model implements
            ``pdmp_lightning.protocol``.
        head_widths: Modality -> its number of input columns of a concat ``head``, in the order of
            ``modalities``; default: equal widths.
        target: Batch key or index of the integer labels.
        start_epoch: First modulated epoch.
        end_epoch: First epoch after the window (exclusive), or None.
        mechanism: How the coefficients act; see ``ModalityModulationCallback``.
        seed: Seed of the method's random draws (identical on every rank).
        log_every_n_steps: Interval of the coefficient, score and gradient-norm logs.
        log_prefix: Prefix of the logged names.

    Examples:
        >>> callback = BalancingCallback({"audio": "enc.a", "visual": "enc.v"}, target="y")
        >>> callback.target, callback.coefficients  # a subclass fills them in
        ('y', {})
    """

    #: Protocol members (see ``pdmp_lightning.protocol``) the method needs from the module.
    required: tuple[str, ...] = ()
    #: Whether the method reads each modality's features from the training forward.
    needs_features: bool = True

    def __init__(
        self,
        modalities: Mapping[str, ModalitySpecInput],
        *,
        features: Mapping[str, str] | None = None,
        head: HeadSpec | None = None,
        head_widths: Mapping[str, int] | None = None,
        target: BatchKey = "label",
        start_epoch: NonNegativeInt = 0,
        end_epoch: PositiveInt | None = None,
        mechanism: Mechanism = "auto",
        seed: int = 0,
        log_every_n_steps: NonNegativeInt | None = None,
        log_prefix: str = "balancing",
    ) -> None:
        super().__init__(
            modalities,
            start_epoch=start_epoch,
            end_epoch=end_epoch,
            mechanism=mechanism,
            log_every_n_steps=log_every_n_steps,
            log_prefix=log_prefix,
        )
        check_int("seed", seed)
        if features is not None and (
            not isinstance(features, Mapping) or sorted(features) != sorted(self.modality_names)
        ):
            raise config_error("features", features, f"None or one submodule path for each of {self.modality_names}")
        check_head(head, head_widths, self.modality_names, features)
        self.feature_paths = dict(features) if features is not None else None
        self.head: HeadSpec | None = head if isinstance(head, str) or head is None else dict(head)
        self.head_widths = dict(head_widths) if head_widths is not None else None
        self.target = check_batch_key("target", target)
        self.seed = seed
        self._access: FusionAccess | None = None
        self._labels: Tensor | None = None
        self._targets_checked = False

    # --- what a method implements ---------------------------------------------------------------

    def update_coefficients(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        """Sets the coefficients for the coming backward (called only while modulating)."""

    # --- Lightning hooks ------------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self._access = self._build_access(pl_module)
        self._targets_checked = False
        self._coefficients.clear()
        self._coefficients.update(dict.fromkeys(self.modality_names, 1.0))

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.is_modulating or not self._targets_checked:
            targets = select_from_batch(batch, self.target, "target")
            if not self._targets_checked:
                self._check_targets(targets)
            if self.is_modulating:
                self._labels = targets.reshape(-1).long()

    def _check_targets(self, targets: Tensor) -> None:
        """The first batch's targets must be integer class labels, one per sample: the method scores classes."""
        self._targets_checked = True
        floating = targets.dtype.is_floating_point or targets.dtype == torch.bool
        wide = targets.dim() > 1 and targets.shape[1:].numel() > 1
        if floating or wide:
            kind = "multi-label or multi-output" if wide else "real"
            raise config_error(
                "target",
                f"{self.target!r}: {kind} targets of dtype {targets.dtype} and shape {tuple(targets.shape)}",
                "integer class labels, one per sample",
                f"{type(self).__name__} is defined through class probabilities (its scores are the softmax "
                "probability or the cross-entropy of the true class), so it has no meaning for regression or "
                "multi-label targets; PDMPCallback does not depend on the task's loss.",
            )

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        if self.is_modulating:
            self.update_coefficients(trainer, pl_module, loss)
        super().on_before_backward(trainer, pl_module, loss)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._access is not None:
            self._access.clear()  # the graph the features hold is done with

    def _activate(self, trainer: pl.Trainer) -> None:
        super()._activate(trainer)
        if self._access is not None and self.needs_features:
            self._access.attach()

    def _detach(self) -> None:
        super()._detach()
        if self._access is not None:
            self._access.detach()
        self._labels = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        task = getattr(pl_module, "task", None)
        if stage == "fit" and isinstance(task, str) and task in ("multilabel", "regression"):
            raise config_error(
                "target",
                f"{self.target!r} of a {task} model ({type(pl_module).__name__}.task={task!r})",
                "integer class labels of a multiclass model",
                f"{type(self).__name__} is defined through class probabilities, which a {task} task does not "
                "have; PDMPCallback does not depend on the task's loss.",
            )

    def _check_strategy(self, trainer: pl.Trainer) -> None:
        self._refuse_sharded(
            trainer,
            type(self).__name__,
            "the baselines score the modalities from the head's weights and the features outside the module's "
            "forward, where FSDP holds the weights sharded (gathering them there is not built); use DDP.",
        )
        super()._check_strategy(trainer)

    # --- helpers --------------------------------------------------------------------------------

    @property
    def access(self) -> FusionAccess:
        """The way to the model's fusion (built when fitting starts)."""
        if self._access is None:
            raise RuntimeError(f"{type(self).__name__} reaches the model only once fitting has started")
        return self._access

    def _build_access(self, pl_module: pl.LightningModule) -> FusionAccess:
        if self.head is not None:
            return LinearHeadAccess(pl_module, self.head, self.modality_names, self.head_widths)
        name = type(self).__name__
        require(pl_module, name, *self.required)
        own = getattr(pl_module, "modalities", None)
        if isinstance(own, list | tuple) and sorted(own) != sorted(self.modality_names):
            raise config_error(
                "modalities",
                self.modality_names,
                f"the module's own modality names {sorted(own)}",
                "the method exchanges feature dicts with the module, keyed by modality name; or name the model's "
                "final linear layer with head='<path>'.",
            )
        modules = self._feature_modules(pl_module) if self.needs_features else {}
        paths = {m: (self.feature_paths or {}).get(m) or ", ".join(self.groups[m].module_paths) for m in modules}
        return ModuleProtocolAccess(pl_module, modules, paths)

    def _feature_modules(self, pl_module: pl.LightningModule) -> dict[str, torch.nn.Module]:
        modules = {}
        for modality, group in self.groups.items():
            path = (self.feature_paths or {}).get(modality)
            if path is not None:
                argument = f"features[{modality!r}]"
                try:
                    modules[modality] = pl_module.get_submodule(path)
                except AttributeError:
                    top = [n for n, _ in pl_module.named_children()]
                    raise config_error(
                        argument, path, "a dotted path of an existing submodule", f"top-level: {top}"
                    ) from None
            elif len(group.modules) == 1:
                modules[modality] = group.modules[0]
            else:
                raise config_error(
                    f"modalities[{modality!r}]",
                    list(group.module_paths) or "a 're:' pattern",
                    f"a single submodule path for {type(self).__name__}, whose output are the modality's features",
                    f"or pass features={{{modality!r}: '<encoder path>'}}.",
                )
        return modules

    def features(self) -> dict[str, Tensor]:
        """This step's features (with their graph), keyed by modality: one row per label, or an error."""
        features = self.access.features()
        rows = self.labels().shape[0]
        for modality, values in features.items():
            if values.shape[0] != rows:
                raise config_error(
                    f"features[{modality!r}]",
                    f"{self.access.where(modality)} with {values.shape[0]} rows ({tuple(values.shape)})",
                    f"features with one row per sample ({rows} labels in this batch)",
                    "an encoder that folds frames or clips into the batch ([B*T, d]) must be read after its "
                    "pooling: name the model's final linear layer with head='<path>' (it sees pooled features), "
                    "pass features={modality: '<the submodule that returns [B, d]>'}, or pool inside the encoder. "
                    "Scoring the unpooled rows against the labels would pair features with the wrong samples.",
                )
        return features

    def labels(self) -> Tensor:
        """This step's labels."""
        if self._labels is None:
            raise RuntimeError("no labels captured for this step: on_train_batch_start did not run while modulating")
        return self._labels

    @staticmethod
    def reduce(trainer: pl.Trainer, values: Mapping[str, Tensor], op: str = "sum") -> dict[str, float]:
        """Reduces per-modality scalars across processes (sum or mean), in one collective call."""
        names = sorted(values)
        stacked = torch.stack([at_least_float32(values[m].detach()).reshape(()) for m in names])
        reduced = trainer.strategy.reduce(stacked, reduce_op=op)
        assert isinstance(reduced, Tensor)
        return {m: float(v) for m, v in zip(names, reduced.tolist(), strict=True)}

    def step_generator(
        self, trainer: pl.Trainer, device: torch.device, per_rank: bool = False, stream: str = ""
    ) -> torch.Generator:
        """A generator seeded by the seed and the global step: the same draws on every rank unless ``per_rank``.

        Draws that must be independent of each other within one step use different ``stream`` names.
        """
        key = f"{self.seed}:{trainer.global_step}:{trainer.global_rank if per_rank else 0}"
        if stream:
            key += f":{stream}"
        seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & (2**63 - 1)
        return torch.Generator(device=device).manual_seed(seed)
