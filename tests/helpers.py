"""Small models and data shared by the tests (importable by ddp_spawn workers)."""

from __future__ import annotations

import copy
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from pdmp_lightning import PDMPCallback

AUDIO_DIM, VISUAL_DIM, HIDDEN, NUM_CLASSES = 6, 8, 16, 3


class DictDataset(Dataset[dict[str, Tensor]]):
    """Samples ``{"audio": ..., "visual": ..., "label": ...}`` from stored tensors."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["label"])

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}


def random_data(n: int = 48, seed: int = 0) -> DictDataset:
    generator = torch.Generator().manual_seed(seed)
    return DictDataset(
        {
            "audio": torch.randn(n, AUDIO_DIM, generator=generator),
            "visual": torch.randn(n, VISUAL_DIM, generator=generator),
            "label": torch.randint(0, NUM_CLASSES, (n,), generator=generator),
        }
    )


class TwoModalityModel(pl.LightningModule):
    """Late fusion of two MLP encoders; SGD without momentum unless told otherwise."""

    def __init__(
        self,
        optimizer: str = "sgd",
        lr: float = 0.1,
        manual: bool = False,
        batch_size: int = 8,
        data: DictDataset | None = None,
        fail_at_step: int | None = None,
        num_classes: int = NUM_CLASSES,
        shuffle: bool = False,
    ) -> None:
        super().__init__()
        self.audio_encoder = nn.Sequential(nn.Linear(AUDIO_DIM, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN))
        self.visual_encoder = nn.Sequential(nn.Linear(VISUAL_DIM, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN))
        self.head = nn.Linear(2 * HIDDEN, num_classes)
        self.num_classes = num_classes
        self.optimizer_name = optimizer
        self.lr = lr
        self.automatic_optimization = not manual
        self.batch_size = batch_size
        self.data = data if data is not None else random_data()
        self.fail_at_step = fail_at_step
        self.shuffle = shuffle

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        features = torch.cat([self.audio_encoder(batch["audio"]), self.visual_encoder(batch["visual"])], dim=1)
        return self.head(features)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        if self.fail_at_step is not None and self.global_step == self.fail_at_step:
            raise RuntimeError("planned failure")
        loss = F.cross_entropy(self(batch), batch["label"])
        if self.automatic_optimization:
            return loss
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return None

    def configure_optimizers(self) -> Any:
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.0)
        if self.optimizer_name == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.lr)
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=self.shuffle)


class WithValidation(TwoModalityModel):
    """The same model with a validation set (used by the probes when present)."""

    def __init__(self, val_data: DictDataset | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.val_data = val_data if val_data is not None else random_data(seed=1)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.log("val_loss", F.cross_entropy(self(batch), batch["label"]))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_data, batch_size=self.batch_size, shuffle=False)


class StopAfterTrainStart(pl.Callback):
    """Ends fit right after on_train_start: the probes and the warm-up see the budget of a long training
    without running it."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.should_stop = True


def trainer(**overrides: Any) -> pl.Trainer:
    options: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        max_steps=1,
        # Parameter deltas are measured as differences of parameters: float64 keeps them exact enough
        # for relative tolerances of 1e-5.
        precision="64-true",
    )
    options.update(overrides)
    return pl.Trainer(**options)


def parameters(module: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def moves(module: nn.Module, **kwargs: Any) -> dict[str, Tensor]:
    """Fits a copy of ``module`` and returns how far each parameter moved."""
    module = copy.deepcopy(module)
    before = parameters(module)
    callbacks = kwargs.pop("callbacks", [])
    trainer(callbacks=callbacks, **kwargs).fit(module)
    return {name: p.detach() - before[name] for name, p in module.named_parameters()}


def group_of(name: str) -> str:
    return name.split("_encoder")[0] if "_encoder" in name else "other"


def plateau_task(n: int = 1200, seed: int = 0) -> DictDataset:
    """Two modalities where the fast learner is the weak one.

    ``audio`` reveals the class linearly for 45% of the samples and is pure noise for the rest: a
    probe learns it in an epoch and plateaus near 0.6. ``visual`` encodes the class as two XORs of
    coordinate signs: the encoder has to learn a non-linear feature first, so it starts near chance
    and climbs past 0.9.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=generator)
    informative = torch.rand(n, generator=generator) < 0.45
    audio = torch.randn(n, AUDIO_DIM, generator=generator) * 0.5
    audio[informative, labels[informative]] += 3.0
    bits = torch.stack([labels // 2, labels % 2], dim=1).float() * 2 - 1  # [-1, 1] per XOR
    first = torch.rand(n, 2, generator=generator) * 2 + 0.2
    first = first * torch.where(torch.rand(n, 2, generator=generator) < 0.5, -1.0, 1.0)
    visual = torch.randn(n, VISUAL_DIM, generator=generator) * 0.3
    visual[:, 0], visual[:, 1] = first[:, 0], first[:, 0].sign() * bits[:, 0] * first[:, 1].abs()
    visual[:, 2], visual[:, 3] = (
        first[:, 1],
        first[:, 1].sign() * bits[:, 1] * (torch.rand(n, generator=generator) * 2 + 0.2),
    )
    return DictDataset({"audio": audio, "visual": visual, "label": labels})


MODALITIES = {"audio": "audio_encoder", "visual": "visual_encoder"}
#: Coefficients of :func:`pdmp`: powers of two, so scaling is exact in every floating-point format.
K = {"visual": 4.0, "audio": 0.5}


def pdmp(**kwargs: Any) -> PDMPCallback:
    """A PDMPCallback with the ranking given (visual first), constant coefficients, modulation from the first epoch."""
    options: dict[str, Any] = dict(
        ranking=["visual", "audio"], gamma_p=K["visual"], gamma_r=K["audio"], start_epoch=0, adaptation="none"
    )
    options.update(kwargs)
    return PDMPCallback(MODALITIES, **options)


class MultiplierHistory(pl.Callback):
    """The multipliers of the watched callback at each optimizer step, in order.

    Listed before the callback under test, it reads them before that callback's own
    ``on_before_optimizer_step`` updates them: the multipliers this step uses.
    """

    def __init__(self, watched: Any) -> None:
        self.watched = watched
        self.history: list[dict[str, float]] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.history.append(dict(self.watched.coefficients))
