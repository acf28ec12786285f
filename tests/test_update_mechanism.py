"""``mechanism="update"`` is a per-modality learning rate: no parameter copy, exact, invisible outside the step.

The reference of every check is the same model trained without the callback, its optimizer given one
parameter group per modality with the learning rate multiplied by that modality's k: the update
mechanism must give the same parameters (float64, every step), while the user's scheduler, optimizer
state and checkpoints see only the user's single group and rate.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor

from pdmp_lightning.callbacks.base import ModalityModulationCallback
from pdmp_lightning.modulation import is_learning_rate_linear, mechanisms, register_learning_rate_linear
from tests.helpers import MODALITIES, K, TwoModalityModel, parameters, pdmp, random_data, trainer

OPTIMIZERS: dict[str, Any] = {
    "sgd": lambda groups: torch.optim.SGD(groups),
    "sgd_momentum_decay": lambda groups: torch.optim.SGD(groups, momentum=0.9, weight_decay=0.05),
    "adamw": lambda groups: torch.optim.AdamW(groups, weight_decay=0.0),
    "adamw_decay": lambda groups: torch.optim.AdamW(groups, weight_decay=0.1),
    "adam_l2": lambda groups: torch.optim.Adam(groups, weight_decay=0.01),
    "rmsprop": lambda groups: torch.optim.RMSprop(groups, momentum=0.5),
}
SCHEDULERS: dict[str, Any] = {
    "none": None,
    # Chainable: each step multiplies the group's current rate, so a multiplied rate left behind would compound.
    "exponential": lambda optimizer: torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.7),
    # Also cycles momentum / betas every step.
    "one_cycle": lambda optimizer: torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=20
    ),
}


class GroupedModel(TwoModalityModel):
    """The test model; ``per_modality`` gives each encoder its own group with its rate multiplied by ``K``."""

    def __init__(
        self, optimizer: str = "adamw", scheduler: str = "none", per_modality: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(lr=0.01, **kwargs)
        self.optimizer_key, self.scheduler_key, self.per_modality = optimizer, scheduler, per_modality
        self.seen_rates: list[list[float]] = []

    def configure_optimizers(self) -> Any:
        if self.per_modality:
            groups = [
                {"params": list(self.visual_encoder.parameters()), "lr": self.lr * K["visual"]},
                {"params": list(self.audio_encoder.parameters()), "lr": self.lr * K["audio"]},
                {"params": list(self.head.parameters()), "lr": self.lr},
            ]
        else:
            groups = [{"params": list(self.parameters()), "lr": self.lr}]
        optimizer = OPTIMIZERS[self.optimizer_key](groups)
        factory = SCHEDULERS[self.scheduler_key]
        if factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": factory(optimizer), "interval": "step"}}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        optimizer = self.optimizers(use_pl_optimizer=False)
        self.seen_rates.append([float(g["lr"]) for g in optimizer.param_groups])


def fitted(model: pl.LightningModule, callbacks: list[pl.Callback] | None = None, **kwargs: Any) -> pl.LightningModule:
    model = copy.deepcopy(model)
    trainer(callbacks=callbacks or [], **{"max_steps": 4, **kwargs}).fit(model)
    return model


def assert_same_parameters(model: pl.LightningModule, reference: pl.LightningModule) -> None:
    expected = parameters(reference)
    for name, value in parameters(model).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-10, atol=1e-13, msg=name)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_update_equals_per_modality_learning_rates(optimizer: str, scheduler: str) -> None:
    torch.manual_seed(0)
    model = GroupedModel(optimizer=optimizer, scheduler=scheduler)
    reference = copy.deepcopy(model)
    reference.per_modality = True
    callback = pdmp(mechanism="update")
    modulated = fitted(model, [callback])
    assert_same_parameters(modulated, fitted(reference))
    assert callback._modulator is not None and callback._modulator.copies_parameters == []  # type: ignore[attr-defined]
    # The scheduler and the optimizer only ever saw the user's single group and its own rate.
    plain = fitted(model)
    assert modulated.seen_rates == plain.seen_rates and all(len(rates) == 1 for rates in plain.seen_rates)
    if scheduler != "none":
        assert len({rates[0] for rates in plain.seen_rates}) == len(plain.seen_rates)  # it did change every step


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_accumulation_and_resume_equal_per_modality_learning_rates(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # 24 samples in batches of 4, three per step: two steps per epoch; the checkpoint ends the first epoch.
    model = GroupedModel(optimizer="adamw_decay", scheduler="exponential", batch_size=4, data=random_data(24))
    reference = copy.deepcopy(model)
    reference.per_modality = True
    two_epochs = dict(max_steps=-1, max_epochs=2, accumulate_grad_batches=3)
    assert_same_parameters(fitted(model, [pdmp(mechanism="update")], **two_epochs), fitted(reference, **two_epochs))

    def resumed(start: GroupedModel, callbacks: Any, directory: Path) -> GroupedModel:
        first = copy.deepcopy(start)
        checkpoint = ModelCheckpoint(dirpath=directory, save_last=True)
        options = dict(accumulate_grad_batches=3, max_steps=-1)
        trainer(callbacks=[*callbacks(), checkpoint], max_epochs=1, enable_checkpointing=True, **options).fit(first)
        again = copy.deepcopy(start)
        trainer(callbacks=callbacks(), max_epochs=2, **options).fit(again, ckpt_path=str(directory / "last.ckpt"))
        assert again.trainer.global_step == 4
        return again

    modulated = resumed(model, lambda: [pdmp(mechanism="update")], tmp_path / "modulated")
    (state,) = torch.load(tmp_path / "modulated" / "last.ckpt", weights_only=False)["optimizer_states"]
    assert len(state["param_groups"]) == 1 and state["param_groups"][0]["lr"] == pytest.approx(0.01 * 0.7**2)
    # Compared with the reference resumed the same way (Lightning's own resume is not bit-exact in float64).
    assert_same_parameters(modulated, resumed(reference, list, tmp_path / "reference"))


class StepCoefficients(ModalityModulationCallback):
    """Sets a new multiplier for every step during that step's forward (as OGM-GE and AGM do)."""

    def __init__(self, values: list[float]) -> None:
        super().__init__(MODALITIES, mechanism="update")
        self.values = values

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        self._coefficients["visual"] = self.values[trainer.global_step]
        self._coefficients["audio"] = 1.0
        super().on_before_backward(trainer, pl_module, loss)


class LambdaModel(GroupedModel):
    """The reference of :class:`StepCoefficients`: the visual group's rate follows the same values."""

    def __init__(self, values: list[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.values = values

    def configure_optimizers(self) -> Any:
        groups = [
            {"params": list(self.visual_encoder.parameters()), "lr": self.lr},
            {"params": list(self.audio_encoder.parameters()) + list(self.head.parameters()), "lr": self.lr},
        ]
        optimizer = OPTIMIZERS[self.optimizer_key](groups)
        lambdas = [lambda step: self.values[step], lambda step: 1.0]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def test_each_step_uses_the_coefficient_computed_in_that_step() -> None:
    torch.manual_seed(0)
    values = [4.0, 0.25, 8.0, 2.0, 1.0]  # the first step is modulated too; the scheduler reads one more
    model = GroupedModel(optimizer="adamw")
    reference = LambdaModel(values, optimizer="adamw")
    reference.load_state_dict(model.state_dict())
    assert_same_parameters(fitted(model, [StepCoefficients(values)]), fitted(reference))


@pytest.mark.parametrize("closure", [False, True])
def test_manual_optimization_with_the_raw_optimizer(closure: bool) -> None:
    """``optimizer.step()`` without a closure is scaled; a closure Lightning does not see is refused."""

    class Raw(GroupedModel):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(manual=True, **kwargs)

        def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
            optimizer = self.optimizers(use_pl_optimizer=False)
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(self(batch), batch["label"])
            if closure:
                optimizer.step(lambda: self.manual_backward(loss))
            else:
                self.manual_backward(loss)
                optimizer.step()

    torch.manual_seed(0)
    model = Raw()
    one_epoch = dict(max_steps=-1, max_epochs=1)  # the raw optimizer's steps are not counted by Lightning
    if closure:
        with pytest.raises(RuntimeError, match=r"did not go through Lightning's on_before_optimizer_step"):
            fitted(model, [pdmp(mechanism="update")], **one_epoch)
        return
    reference = copy.deepcopy(model)
    reference.per_modality = True
    assert_same_parameters(fitted(model, [pdmp(mechanism="update")], **one_epoch), fitted(reference, **one_epoch))


def amp_trainer(**kwargs: Any) -> pl.Trainer:
    """fp16 autocast on the CPU with a loss scaler whose first scale overflows: the first steps are skipped."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24, growth_interval=1000)
    precision = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    return trainer(precision=None, plugins=[precision], max_steps=12, **kwargs)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
def test_steps_skipped_by_the_loss_scaler_leave_the_groups_alone() -> None:
    torch.manual_seed(0)
    model = GroupedModel(optimizer="adamw", scheduler="exponential").float()
    reference = copy.deepcopy(model)
    reference.per_modality = True
    run = amp_trainer(callbacks=[pdmp(mechanism="update")])
    modulated = copy.deepcopy(model)
    run.fit(modulated)
    scaler = run.precision_plugin.scaler  # type: ignore[attr-defined]
    assert scaler.get_scale() < 2.0**24  # some steps were skipped: the scaler lowered its scale
    moved = [n for n, p in parameters(modulated).items() if not torch.equal(p, parameters(model)[n])]
    assert len(moved) == len(parameters(model))  # and later ones were taken
    expected = copy.deepcopy(reference)
    amp_trainer().fit(expected)
    expected_parameters = parameters(expected)
    for name, value in parameters(modulated).items():
        torch.testing.assert_close(value, expected_parameters[name], rtol=1e-6, atol=1e-7, msg=name)
    (optimizer,) = run.optimizers
    assert len(optimizer.param_groups) == 1
    assert modulated.seen_rates == fitted_rates(model)


def fitted_rates(model: GroupedModel) -> list[list[float]]:
    plain = copy.deepcopy(model)
    amp_trainer().fit(plain)
    return plain.seen_rates


class FailInStep(pl.Callback):
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if trainer.global_step == 1:
            raise RuntimeError("planned failure in the step")


def test_an_exception_inside_the_step_restores_the_users_groups() -> None:
    model = GroupedModel(optimizer="adamw")
    run = trainer(callbacks=[pdmp(mechanism="update"), FailInStep()], max_steps=3)
    with pytest.raises(RuntimeError, match="planned failure in the step"):
        run.fit(model)
    (optimizer,) = run.optimizers
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["lr"] == 0.01
    assert len(optimizer.param_groups[0]["params"]) == len(list(model.parameters()))
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks


class NotLinear(torch.optim.SGD):
    """SGD whose step clips the rate: not proportional to it, so only a parameter copy is exact."""

    def step(self, closure: Any = None) -> Any:
        saved = [g["lr"] for g in self.param_groups]
        for group in self.param_groups:
            group["lr"] = min(group["lr"], 0.02)
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, saved, strict=True):
                group["lr"] = lr


class NotLinearModel(GroupedModel):
    def configure_optimizers(self) -> Any:
        return NotLinear(self.parameters(), lr=self.lr)


def test_an_optimizer_not_known_to_be_linear_is_scaled_by_a_copy_with_one_warning() -> None:
    torch.manual_seed(0)
    model = NotLinearModel()
    assert not is_learning_rate_linear(NotLinear(model.parameters(), lr=0.1))
    callback = pdmp(mechanism="update")
    with pytest.warns(UserWarning, match=r"copies the modulated parameters before every NotLinear step") as record:
        modulated = fitted(model, [callback])
    assert sum("copies the modulated parameters" in str(w.message) for w in record) == 1
    assert callback._modulator is not None and callback._modulator.copies_parameters == ["NotLinear"]  # type: ignore[attr-defined]
    # Exact even though the rate is clipped: each step moves k times as far as NotLinear moved it.
    plain_model = copy.deepcopy(model)
    before = parameters(plain_model)
    one_step = parameters(fitted(plain_model, max_steps=1))
    with pytest.warns(UserWarning, match="copies the modulated parameters"):
        modulated_one_step = parameters(fitted(model, [pdmp(mechanism="update")], max_steps=1))
    for name, value in modulated_one_step.items():
        k = K.get(name.split("_encoder")[0], 1.0)
        torch.testing.assert_close(value - before[name], k * (one_step[name] - before[name]), rtol=1e-10, atol=1e-14)
    assert all(torch.isfinite(v).all() for v in parameters(modulated).values())


def test_which_optimizers_are_learning_rate_linear() -> None:
    weight = [torch.nn.Parameter(torch.zeros(2))]
    linear = [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam]
    linear += [torch.optim.Adagrad, torch.optim.Adadelta, torch.optim.RMSprop, torch.optim.Adamax]
    assert all(is_learning_rate_linear(cls(weight, lr=0.1)) for cls in linear)
    assert not any(is_learning_rate_linear(cls(weight, lr=0.1)) for cls in (torch.optim.ASGD, torch.optim.Rprop))
    assert not is_learning_rate_linear(torch.optim.LBFGS(weight, lr=0.1))

    class SameStep(torch.optim.AdamW):  # a subclass that keeps AdamW's step is still linear
        pass

    assert is_learning_rate_linear(SameStep(weight, lr=0.1))

    class OwnStep(torch.optim.Adam):
        def step(self, closure: Any = None) -> Any:
            return super().step(closure)

    assert not is_learning_rate_linear(OwnStep(weight, lr=0.1))
    try:
        assert register_learning_rate_linear(OwnStep) is OwnStep and is_learning_rate_linear(OwnStep(weight, lr=0.1))
    finally:
        mechanisms.LEARNING_RATE_LINEAR_OPTIMIZERS.remove(OwnStep)
    with pytest.raises(TypeError, match="expects an Optimizer subclass"):
        register_learning_rate_linear(torch.nn.Linear)  # type: ignore[arg-type]


def test_the_learning_rate_monitor_logs_the_users_rate(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    model = GroupedModel(optimizer="adamw", scheduler="exponential")
    trainer(callbacks=[pdmp(mechanism="update"), LearningRateMonitor("step")], logger=logger, log_every_n_steps=1).fit(
        model
    )
    logger.save()
    rows = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("lr-AdamW")
    rates = [float(r.split(",")[column]) for r in rows[1:] if r.split(",")[column]]
    assert rates and all(math.isclose(r, 0.01 * 0.7**i) for i, r in enumerate(rates))


class TwoOptimizers(GroupedModel):
    """Manual optimization with one AdamW per encoder (the head with the audio one), both stepped every batch."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(manual=True, **kwargs)

    def configure_optimizers(self) -> Any:
        scale = K if self.per_modality else {"visual": 1.0, "audio": 1.0}
        visual = torch.optim.AdamW(self.visual_encoder.parameters(), lr=self.lr * scale["visual"], weight_decay=0.1)
        audio = torch.optim.AdamW(
            [
                {"params": list(self.audio_encoder.parameters()), "lr": self.lr * scale["audio"]},
                {"params": list(self.head.parameters()), "lr": self.lr},
            ],
            weight_decay=0.1,
        )
        return [visual, audio]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        optimizers = self.optimizers(use_pl_optimizer=False)
        self.seen_rates.append([float(g["lr"]) for optimizer in optimizers for g in optimizer.param_groups])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        optimizers = self.optimizers()
        for optimizer in optimizers:
            optimizer.zero_grad()
        self.manual_backward(torch.nn.functional.cross_entropy(self(batch), batch["label"]))
        for optimizer in optimizers:
            optimizer.step()


def test_several_optimizers_are_each_scaled() -> None:
    torch.manual_seed(0)
    model = TwoOptimizers()
    reference = copy.deepcopy(model)
    reference.per_modality = True
    one_epoch = dict(max_steps=-1, max_epochs=1)
    modulated = fitted(model, [pdmp(mechanism="update")], **one_epoch)
    assert_same_parameters(modulated, fitted(reference, **one_epoch))
    assert modulated.seen_rates == fitted(model, **one_epoch).seen_rates  # the user's groups and rates, every step
