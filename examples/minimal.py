"""PDMPCallback on an existing two-encoder LightningModule, on data generated in memory.

The generated task has the imbalance PDMP is about: ``audio`` is easy but weak (it reveals the class
for under half of the samples, so a model learns it at once and then plateaus), ``visual`` is slow
but strong (the class is hidden in an XOR of coordinate signs). The probes find ``visual``
dominant; PDMP then boosts its encoder's learning signal.

Run it:

    python examples/minimal.py                # --help lists the options
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from jsonargparse import CLI
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassAccuracy

from pdmp_lightning import PDMPCallback

NUM_CLASSES = 4


class GeneratedAudioVisual(Dataset[dict[str, Tensor]]):
    """Dict samples ``{"audio": [8], "visual": [8], "label": []}``, deterministic given ``seed``."""

    def __init__(self, size: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.label = torch.randint(0, NUM_CLASSES, (size,), generator=g)
        informative = torch.rand(size, generator=g) < 0.45
        self.audio = torch.randn(size, 8, generator=g) * 0.5
        self.audio[informative, self.label[informative]] += 3.0
        bits = torch.stack([self.label // 2, self.label % 2], dim=1).float() * 2 - 1
        base = (torch.rand(size, 2, generator=g) * 2 + 0.2) * torch.where(torch.rand(size, 2, generator=g) < 0.5, -1, 1)
        partner = torch.rand(size, 2, generator=g) * 2 + 0.2
        self.visual = torch.randn(size, 8, generator=g) * 0.3
        self.visual[:, [0, 2]] = base
        self.visual[:, [1, 3]] = base.sign() * bits * partner

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"audio": self.audio[index], "visual": self.visual[index], "label": self.label[index]}


class LateFusionClassifier(pl.LightningModule):
    """An ordinary multimodal LightningModule: nothing in it knows about PDMP."""

    def __init__(self, hidden: int = 32, lr: float = 0.005) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.audio_encoder = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.visual_encoder = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(2 * hidden, NUM_CLASSES)
        self.num_classes = NUM_CLASSES
        self.val_accuracy = MulticlassAccuracy(NUM_CLASSES, average="micro")

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.head(torch.cat([self.audio_encoder(batch["audio"]), self.visual_encoder(batch["visual"])], 1))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = F.cross_entropy(self(batch), batch["label"])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.val_accuracy(self(batch).argmax(1), batch["label"])
        self.log("val_accuracy", self.val_accuracy, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def main(
    max_epochs: int = 15,
    seed: int = 0,
    gamma_p: float = 10.0,
    gamma_r: float = 1.0,
    root: str = "runs",
    joint: bool = False,
) -> None:
    """Trains the late-fusion classifier with PDMPCallback and prints where the results are.

    Args:
        max_epochs: Training epochs (the first ``min(5, max_epochs - 1)`` are warm-up).
        seed: Seed of the data and of the training run.
        gamma_p: Coefficient of the performance-dominant modality.
        gamma_r: Coefficient of the other modality.
        root: Directory of the logs, the probe report and the checkpoints.
        joint: Train without PDMPCallback (plain joint training), to compare.
    """
    pl.seed_everything(seed, workers=True)
    train = DataLoader(GeneratedAudioVisual(2000, seed), batch_size=64, shuffle=True)
    val = DataLoader(GeneratedAudioVisual(500, seed + 1), batch_size=256)
    pdmp = PDMPCallback(
        {"audio": "audio_encoder", "visual": "visual_encoder"},
        gamma_p=gamma_p,
        gamma_r=gamma_r,
        start_epoch=min(5, max_epochs - 1),
    )
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        callbacks=[] if joint else [pdmp],
        logger=CSVLogger(root, name="minimal_joint" if joint else "minimal"),
        deterministic=True,
        log_every_n_steps=10,
    )
    trainer.fit(LateFusionClassifier(), train, val)
    print(f"final val_accuracy: {float(trainer.callback_metrics['val_accuracy']):.4f}; logs: {trainer.log_dir}")
    if joint:
        return
    print(f"dominant modality: {pdmp.dominant}; ranking {pdmp.ranking}; probe scores {pdmp.probe_scores}")
    print(f"coefficients: {pdmp.coefficients}")
    print(f"probe report: {pdmp.report_path}")


if __name__ == "__main__":
    CLI(main)
