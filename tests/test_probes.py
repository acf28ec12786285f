"""The unimodal probes: default budget, isolation from the trained module, reports."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader

from pdmp_lightning import PDMPCallback, PDMPConfigurationError, ProbeRankingWarning
from pdmp_lightning.probing.runner import ProbeCurve, ProbeOutcome
from tests.helpers import (
    MODALITIES,
    StopAfterTrainStart,
    TwoModalityModel,
    WithValidation,
    parameters,
    plateau_task,
    random_data,
    trainer,
)


def plateau_model(seed: int = 0, **kwargs: Any) -> WithValidation:
    torch.manual_seed(seed)
    return WithValidation(
        data=plateau_task(seed=seed),
        val_data=plateau_task(400, seed=seed + 100),
        batch_size=32,
        num_classes=4,
        **kwargs,
    )


def probe_only(callback: PDMPCallback, **trainer_options: Any) -> PDMPCallback:
    options: dict[str, Any] = {"max_steps": -1, "precision": "32-true", **trainer_options}
    trainer(callbacks=[callback, StopAfterTrainStart()], **options).fit(plateau_model())
    assert callback.probe_outcome is not None
    return callback


@pytest.mark.parametrize("seed", [0, 6])
@pytest.mark.filterwarnings("error::pdmp_lightning.ProbeRankingWarning")  # a clear ranking raises no doubt
def test_default_probes_rank_the_slow_strong_modality_first(seed: int) -> None:
    # A 100-epoch main training: the default budget (a tenth of it) allows full-data probe epochs.
    callback = PDMPCallback(MODALITIES)
    trainer(callbacks=[callback, StopAfterTrainStart()], precision="32-true", max_steps=-1, max_epochs=100).fit(
        plateau_model(seed)
    )
    assert callback.probe_outcome is not None and callback.probe_outcome.train_batches_per_epoch == 38
    curves = callback.probe_outcome.curves  # type: ignore[union-attr]
    # The hard case: after one probe epoch the weak modality is ahead, so a tiny budget ranks wrong.
    assert curves["audio"].scores[0] > curves["visual"].scores[0]
    assert curves["audio"].stopped == "patience" and len(curves["audio"].scores) < len(curves["visual"].scores)
    assert callback.ranking == ["visual", "audio"] and callback.dominant == "visual"
    assert (
        callback.probe_scores is not None
        and callback.probe_scores["visual"] > 0.9 > 0.7 > callback.probe_scores["audio"]
    )
    assert callback.coefficients == {"visual": 10.0, "audio": 1.0}


class Snapshot(pl.Callback):
    """Records the module's weights and the global RNG state at on_train_start."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.weights = parameters(pl_module)
        self.buffers = {n: b.clone() for n, b in pl_module.named_buffers()}
        self.rng = torch.get_rng_state()


def test_probing_leaves_weights_and_rng_untouched() -> None:
    before, after = Snapshot(), Snapshot()
    model = plateau_model(shuffle=True)
    model.audio_encoder.insert(1, nn.BatchNorm1d(16))  # running statistics must not move either
    callback = PDMPCallback(MODALITIES, probe_max_epochs=2, probe_min_epochs=1)
    trainer(callbacks=[before, callback, after], max_steps=1).fit(model)
    assert callback.probe_outcome is not None
    for name, value in before.weights.items():
        assert torch.equal(after.weights[name], value), name
    for name, value in before.buffers.items():
        assert torch.equal(after.buffers[name], value), name
    assert torch.equal(before.rng, after.rng)


def test_probed_run_trains_exactly_like_the_given_ranking() -> None:
    model = plateau_model(shuffle=True)
    given = copy.deepcopy(model)
    probed = PDMPCallback(MODALITIES, start_epoch=0, probe_max_epochs=2, probe_min_epochs=1)
    torch.manual_seed(123)
    trainer(callbacks=[probed], max_steps=-1, max_epochs=2).fit(model)
    torch.manual_seed(123)
    trainer(
        callbacks=[PDMPCallback(MODALITIES, start_epoch=0, ranking=probed.ranking)], max_steps=-1, max_epochs=2
    ).fit(given)
    for name, value in parameters(given).items():
        assert torch.equal(parameters(model)[name], value), name


def test_report_and_logged_curves(tmp_path: Path) -> None:
    callback = PDMPCallback(MODALITIES, probe_max_epochs=3, probe_min_epochs=1, probe_metric="macro_f1")
    logger = CSVLogger(tmp_path, name="run")
    trainer(callbacks=[callback], logger=logger, max_steps=2, log_every_n_steps=1).fit(plateau_model())
    reports = list(Path(logger.log_dir).glob("*probe*.json"))
    assert reports == [callback.report_path]
    report = json.loads(reports[0].read_text())
    assert report["ranking"] == callback.ranking and report["metric"] == "macro_f1"
    assert report["main_train_batches"] == 2 and report["config"]["probe"]["budget"] == 0.15
    assert report["scores"] == pytest.approx(callback.probe_scores)
    assert set(report["curves"]) == {"audio", "visual"} and report["validation"] == "val_dataloader"
    assert report["coefficients"] == callback.coefficients and report["source"] == "probes"
    with open(Path(logger.log_dir) / "metrics.csv") as handle:
        columns = set(next(csv.reader(handle)))
    assert {"pdmp/probe_macro_f1/audio", "pdmp/probe_macro_f1/visual"} <= columns
    assert {"pdmp/coefficient/visual", "pdmp/grad_norm/audio"} <= columns


def test_held_out_slice_when_there_is_no_validation_loader() -> None:
    torch.manual_seed(0)
    model = TwoModalityModel(data=plateau_task(600), num_classes=4, batch_size=32)
    callback = PDMPCallback(
        MODALITIES, probe_max_epochs=2, probe_min_epochs=1, probe_val_fraction=0.25, probe_budget=None
    )
    trainer(callbacks=[callback]).fit(model)
    outcome = callback.probe_outcome
    assert outcome is not None and outcome.val_source == "held-out 25% of train"
    assert outcome.train_batches_per_epoch == 15  # 450 samples, batches of 32


def test_data_fraction_limits_the_probe_batches() -> None:
    callback = PDMPCallback(
        MODALITIES, probe_max_epochs=1, probe_min_epochs=1, probe_data_fraction=0.25, probe_budget=None
    )
    trainer(callbacks=[callback], max_steps=1).fit(plateau_model())
    assert callback.probe_outcome.train_batches_per_epoch == 10  # type: ignore[union-attr]  # 38 batches


# The plateau task has 38 train batches per epoch.
@pytest.mark.parametrize(
    ("trainer_options", "main_batches", "per_epoch"),
    [
        ({"max_epochs": 5}, 190, 14),  # floor(0.15 * 190 / 2)
        ({"max_epochs": 5, "accumulate_grad_batches": 2}, 190, 14),  # counted in batches, not optimizer steps
        ({"max_epochs": 5, "max_steps": 50}, 50, 3),  # max_steps ends the main training first
        ({"max_epochs": 5, "limit_train_batches": 10}, 50, 3),
        ({"max_epochs": 100}, 3800, 38),  # capped by the data: full probe epochs
        ({"max_epochs": 1, "max_steps": 10}, 10, 1),  # at least one batch per probe epoch
        ({"max_epochs": -1}, None, 38),  # an unbounded training sets no budget
    ],
)
def test_budget_caps_the_probe_batches_by_the_main_training(
    trainer_options: dict[str, Any], main_batches: int | None, per_epoch: int
) -> None:
    outcome = probe_only(
        PDMPCallback(MODALITIES, probe_max_epochs=2, probe_min_epochs=1), **trainer_options
    ).probe_outcome
    assert outcome is not None
    assert (outcome.main_train_batches, outcome.train_batches_per_epoch) == (main_batches, per_epoch)
    if main_batches is not None and per_epoch > 1:
        assert per_epoch * 2 <= 0.15 * main_batches  # the probes never train on more than the budget


def test_budget_none_and_data_fraction_compose() -> None:
    unbounded = probe_only(PDMPCallback(MODALITIES, probe_max_epochs=1, probe_budget=None), max_epochs=2)
    assert unbounded.probe_outcome is not None and unbounded.probe_outcome.train_batches_per_epoch == 38
    # The smaller of the two limits wins: ceil(0.25 * 38) = 10 under a budget of floor(0.5 * 380 / 1) = 190.
    both = probe_only(
        PDMPCallback(MODALITIES, probe_max_epochs=1, probe_budget=0.5, probe_data_fraction=0.25), max_epochs=10
    )
    assert both.probe_outcome is not None and both.probe_outcome.train_batches_per_epoch == 10


class TupleModel(TwoModalityModel):
    """Tuple batches ``(audio, visual, label)``."""

    def train_dataloader(self) -> DataLoader:
        tensors = self.data.tensors
        return DataLoader(list(zip(tensors["audio"], tensors["visual"], tensors["label"], strict=True)), batch_size=8)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        audio, visual, label = batch
        return super().training_step({"audio": audio, "visual": visual, "label": label}, batch_idx)  # type: ignore[return-value]


def test_tuple_batches_by_index() -> None:
    callback = PDMPCallback(
        MODALITIES, inputs={"audio": 0, "visual": 1}, target=2, probe_max_epochs=1, probe_min_epochs=1
    )
    trainer(callbacks=[callback], max_steps=1).fit(TupleModel())
    assert sorted(callback.ranking or []) == ["audio", "visual"]


class RegexModel(TwoModalityModel):
    def probe_encoder(self, modality: str) -> nn.Module:
        return self.audio_encoder if modality == "audio" else self.visual_encoder


def test_regex_modalities_need_a_probe_encoder_hook() -> None:
    spec = {"audio": "re:^audio_", "visual": "re:^visual_"}
    with pytest.raises(PDMPConfigurationError, match=r"modalities\['audio'\].*probe_encoder"):
        trainer(callbacks=[PDMPCallback(spec)], max_steps=1).fit(TwoModalityModel())
    callback = PDMPCallback(spec, probe_max_epochs=1, probe_min_epochs=1)
    trainer(callbacks=[callback], max_steps=1).fit(RegexModel())
    assert callback.probe_scores is not None


def test_a_diverging_probe_names_its_modality() -> None:
    data = random_data()
    data.tensors["visual"][3, 0] = float("nan")
    with pytest.raises(RuntimeError, match=r"\['visual'\] diverged"):
        trainer(callbacks=[PDMPCallback(MODALITIES)]).fit(TwoModalityModel(data=data))


def test_labels_out_of_range_are_named() -> None:
    with pytest.raises(PDMPConfigurationError, match=r"`target`.*num_classes=3"):
        trainer(callbacks=[PDMPCallback(MODALITIES)]).fit(TwoModalityModel(data=plateau_task(64)))


def test_missing_batch_key_is_named() -> None:
    callback = PDMPCallback(MODALITIES, inputs={"audio": "spectrogram"})
    with pytest.raises(
        PDMPConfigurationError, match=r"`inputs\['audio'\]`: got 'spectrogram'.*\['audio', 'visual', 'label'\]"
    ):
        trainer(callbacks=[callback]).fit(TwoModalityModel())
    assert not callback.is_modulating


def test_num_classes_found_by_scanning_labels() -> None:
    model = TwoModalityModel()
    del model.num_classes
    callback = PDMPCallback(MODALITIES, probe_max_epochs=1, probe_min_epochs=1)
    trainer(callbacks=[callback], max_steps=1).fit(model)
    assert callback.probe_outcome.num_classes == 3  # type: ignore[union-attr]


class EmptyTrain(TwoModalityModel):
    def train_dataloader(self) -> DataLoader:
        return DataLoader(random_data(n=0), batch_size=8)


def test_an_empty_train_loader_trains_nothing_and_registers_nothing() -> None:
    # Lightning itself warns and skips the fit loop, so the callback never probes or modulates.
    callback = PDMPCallback(MODALITIES)
    model = EmptyTrain()
    with pytest.warns(UserWarning, match="Total length of `(DataLoader|CombinedLoader)` across ranks is zero"):
        trainer(callbacks=[callback], max_steps=1).fit(model)
    assert callback.ranking is None and not callback.is_modulating
    assert all(not m._forward_hooks for m in model.modules())


def test_a_single_sample_cannot_be_split_for_held_out_scoring() -> None:
    model = TwoModalityModel(data=random_data(n=1), batch_size=1)
    with pytest.raises(PDMPConfigurationError, match=r"`train_dataloader`: got '1 samples'; expected at least 2"):
        trainer(callbacks=[PDMPCallback(MODALITIES)], max_steps=1).fit(model)


class EmptyValidation(WithValidation):
    def val_dataloader(self) -> DataLoader:
        return DataLoader(random_data(n=0), batch_size=8)


def test_an_empty_validation_loader_is_named() -> None:
    with (
        pytest.warns(UserWarning, match="Total length of `(DataLoader|CombinedLoader)` across ranks is zero"),
        pytest.raises(PDMPConfigurationError, match=r"`val_dataloader`: got 'an empty or unsized loader'"),
    ):
        trainer(callbacks=[PDMPCallback(MODALITIES)], max_steps=1).fit(EmptyValidation())


def outcome_with(scores: dict[str, float], num_classes: int = 4, val_samples: int = 400) -> ProbeOutcome:
    curves = {m: ProbeCurve(m, scores=[score]) for m, score in scores.items()}
    return ProbeOutcome(curves, num_classes, 0.0, 1, "val_dataloader", val_samples=val_samples)


@pytest.mark.parametrize(
    ("scores", "num_classes", "val_samples", "expected"),
    [
        ({"audio": 0.6, "visual": 0.95}, 4, 400, []),
        # one standard error of the difference: sqrt((.8 * .2 + .78 * .22) / 400) = 0.0288
        ({"audio": 0.78, "visual": 0.80}, 4, 400, ["within one standard error (0.029) on 400 validation samples"]),
        ({"audio": 0.78, "visual": 0.80}, 4, 10_000, []),  # the same gap is clear on more samples
        ({"audio": 0.26, "visual": 0.31}, 4, 4000, ["barely above chance (0.250)"]),  # threshold 0.325
        ({"a": 0.9, "b": 0.89, "c": 0.2}, 10, 400, ["a (0.900) leads b (0.890)"]),  # only the top two matter
    ],
)
def test_doubts_flag_near_chance_and_ties(
    scores: dict[str, float], num_classes: int, val_samples: int, expected: list[str]
) -> None:
    doubts = outcome_with(scores, num_classes, val_samples).doubts()
    assert len(doubts) == len(expected)
    for doubt, fragment in zip(doubts, expected, strict=True):
        assert fragment in doubt


def test_undertrained_probes_warn_and_the_report_lists_the_doubt(tmp_path: Path) -> None:
    # A five-step main training leaves the probes one batch: they cannot learn anything.
    callback = PDMPCallback(MODALITIES, probe_max_epochs=1, probe_min_epochs=1)
    logger = CSVLogger(tmp_path, name="run")
    with pytest.warns(ProbeRankingWarning, match=r"uncertain: the best probe .* barely above chance.*probe_budget"):
        trainer(callbacks=[callback, StopAfterTrainStart()], logger=logger, max_steps=5, max_epochs=1).fit(
            plateau_model()
        )
    assert callback.probe_outcome is not None and callback.probe_outcome.val_samples == 400
    report = json.loads(Path(callback.report_path or "").read_text())
    assert report["doubts"] == callback.probe_outcome.doubts() and len(report["doubts"]) >= 1
