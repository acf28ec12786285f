"""The unimodal probes: a ranking that does not depend on the main training's length, isolation, reports."""

from __future__ import annotations

import copy
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins import MixedPrecision
from torch import Tensor, nn
from torch.amp.grad_scaler import GradScaler
from torch.utils.data import DataLoader

from pdmp_lightning import PDMPCallback, PDMPConfigurationError, ProbeRankingWarning, ProbeSettings
from pdmp_lightning.data import SyntheticModality, SyntheticMultimodalDataModule
from pdmp_lightning.models import MLPEncoder, MultimodalClassifier
from pdmp_lightning.probing.outcome import ProbeCost, ProbeCurve, ProbeOutcome
from pdmp_lightning.probing.runner import ProbeRunner
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

QUICK = ProbeSettings(max_epochs=1)


def plateau_model(seed: int = 0, **kwargs: Any) -> WithValidation:
    torch.manual_seed(seed)
    return WithValidation(
        data=plateau_task(seed=seed),
        val_data=plateau_task(400, seed=seed + 100),
        batch_size=32,
        num_classes=4,
        **kwargs,
    )


def probe_only(callback: PDMPCallback, model: pl.LightningModule | None = None, **trainer_options: Any) -> PDMPCallback:
    options: dict[str, Any] = {"max_steps": -1, "precision": "32-true", **trainer_options}
    trainer(callbacks=[callback, StopAfterTrainStart()], **options).fit(model or plateau_model())
    assert callback.probe_outcome is not None
    return callback


# --- the ranking, whatever the main training's length ----------------------------------------------


def slow_learner_task(kind: str, seed: int) -> SyntheticMultimodalDataModule:
    """8 classes, 4,000 samples: a fast-but-weak audio (0.6 alone) beside a slow-but-strong visual (0.95).

    ``"slow"`` writes the class as XORs of coordinate signs, ``"radial"`` as radii at random angles: two
    different reasons for an encoder to start near chance and climb late.
    """
    modalities = [
        SyntheticModality("audio", 0.6, "fast", dim=16, noise=0.5),
        SyntheticModality("visual", 0.95, kind, dim=16, noise=0.3),  # type: ignore[arg-type]
    ]
    return SyntheticMultimodalDataModule(modalities, num_samples=4000, num_classes=8, batch_size=64, seed=seed)


def slow_learner_model() -> MultimodalClassifier:
    encoders = {m: MLPEncoder(in_features=16, hidden=[64], out_features=64) for m in ("audio", "visual")}
    return MultimodalClassifier(encoders, num_classes=8)


@pytest.mark.parametrize("epochs", [3, 10])
@pytest.mark.parametrize("kind", ["slow", "radial"])
@pytest.mark.filterwarnings("error::pdmp_lightning.ProbeRankingWarning")  # a clear ranking raises no doubt
def test_default_probes_rank_the_slow_strong_modality_first_in_short_trainings(kind: str, epochs: int) -> None:
    torch.manual_seed(0)
    callback = PDMPCallback({"audio": "encoders.audio", "visual": "encoders.visual"})
    trainer(callbacks=[callback, StopAfterTrainStart()], precision="32-true", max_steps=-1, max_epochs=epochs).fit(
        slow_learner_model(), datamodule=slow_learner_task(kind, seed=0)
    )
    outcome = callback.probe_outcome
    assert outcome is not None and callback.ranking == ["visual", "audio"]
    # The hard case: the weak modality leads at the first validation pass.
    assert outcome.curves["audio"].scores[0] > outcome.curves["visual"].scores[0]
    assert outcome.curves["audio"].stopped == "plateau" and outcome.curves["visual"].stopped in ("settled", "plateau")
    assert outcome.curves["visual"].trained_epochs < ProbeSettings().max_epochs


@pytest.mark.parametrize("seed", [0, 6])
@pytest.mark.filterwarnings("error::pdmp_lightning.ProbeRankingWarning")
def test_the_ranking_and_its_cost_do_not_depend_on_the_main_trainings_length(seed: int) -> None:
    outcomes = {}
    for epochs in (1, 3, 10, 100):
        callback = probe_only(PDMPCallback(MODALITIES), plateau_model(seed), max_epochs=epochs)
        assert callback.ranking == ["visual", "audio"] and callback.coefficients == {"visual": 10.0, "audio": 1.0}
        outcomes[epochs] = callback.probe_outcome
    curves = {
        epochs: {m: (c.epochs, c.scores, c.stopped) for m, c in o.curves.items()} for epochs, o in outcomes.items()
    }
    assert curves[1] == curves[3] == curves[10] == curves[100]
    hundred = outcomes[100]
    assert hundred is not None
    visual, audio = hundred.curves["visual"], hundred.curves["audio"]
    assert audio.stopped == "plateau" and visual.stopped == "settled" and audio.trained_epochs < visual.trained_epochs
    assert visual.best_score > 0.65 > audio.best_score
    # At most its old share at 100 epochs: the former default trained 570 (seed 6) and 608 (seed 0) probe batches
    # there (10 full-data epochs of the slow probe and 5-6 of the fast one, 38 batches each).
    assert hundred.epoch_batches * (visual.trained_epochs + audio.trained_epochs) <= 570


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
    callback = PDMPCallback(MODALITIES, probes=QUICK)
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
    probed = PDMPCallback(MODALITIES, start_epoch=0, probes=QUICK)
    torch.manual_seed(123)
    trainer(callbacks=[probed], max_steps=-1, max_epochs=2).fit(model)
    torch.manual_seed(123)
    trainer(
        callbacks=[PDMPCallback(MODALITIES, start_epoch=0, **probed.skip_probes_arguments)], max_steps=-1, max_epochs=2
    ).fit(given)
    for name, value in parameters(given).items():
        assert torch.equal(parameters(model)[name], value), name


def test_report_cost_and_logged_curves(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    callback = PDMPCallback(MODALITIES, probes=ProbeSettings(max_epochs=2, metric="macro_f1"))
    logger = CSVLogger(tmp_path, name="run")
    with caplog.at_level(logging.INFO):
        trainer(callbacks=[callback], logger=logger, max_steps=-1, max_epochs=2, log_every_n_steps=1).fit(
            plateau_model()
        )
    reports = list(Path(logger.log_dir).glob("*probe*.json"))
    assert reports == [callback.report_path]
    report = json.loads(reports[0].read_text())
    assert report["ranking"] == callback.ranking and report["metric"] == "macro_f1"
    assert report["config"]["probes"] == {**vars(ProbeSettings()), "max_epochs": 2, "metric": "macro_f1"}
    assert report["config"]["mechanism"] == "auto" and report["config"]["mechanism_in_use"] == "activation"
    assert report["scores"] == pytest.approx(callback.probe_scores)
    assert report["validation"] == "val_dataloader" and report["epoch_batches"] == 38
    assert report["coefficients"] == callback.coefficients and report["source"] == "probes"
    outcome = callback.probe_outcome
    assert outcome is not None
    for modality, curve in report["curves"].items():
        assert curve["stopped"] in ("plateau", "settled", "cap")
        assert curve["stopped"] == outcome.curves[modality].stopped
        assert curve["epochs"] == outcome.curves[modality].epochs and len(curve["val_scores"]) == len(curve["epochs"])
    # The cost: measured probe seconds against the measured first main epoch, times the training's 2 epochs.
    cost, measured = report["cost"], outcome.cost
    assert measured.seconds >= measured.setup_seconds + measured.validation_seconds > 0
    assert cost["seconds"] == round(measured.seconds, 3) and cost["validation_seconds"] > 0
    assert cost["main_epochs"] == 2 and cost["main_epoch_seconds"] > 0 and cost["target"] == 0.15
    assert measured.share == pytest.approx(measured.seconds / (2 * measured.main_epoch_seconds))  # type: ignore[operator]
    assert cost["share_of_main_training"] == round(measured.share, 4)  # type: ignore[arg-type]
    assert f"skip them next time with ranking={callback.ranking!r}" in caplog.text
    assert f"the probes took {measured.seconds:.2f} s" in caplog.text  # the message rounds the raw figure once
    with open(Path(logger.log_dir) / "metrics.csv") as handle:
        columns = set(next(csv.reader(handle)))
    assert {"pdmp/probe_macro_f1/audio", "pdmp/probe_macro_f1/visual", "pdmp/probe_cost_share"} <= columns
    assert {"pdmp/coefficient/visual", "pdmp/grad_norm/audio"} <= columns


def test_a_short_training_says_the_probes_cost_more_than_the_target(caplog: pytest.LogCaptureFixture) -> None:
    callback = PDMPCallback(MODALITIES, probes=ProbeSettings(cost_target=0.01))
    with caplog.at_level(logging.INFO):
        trainer(callbacks=[callback], max_steps=-1, max_epochs=1, precision="32-true").fit(plateau_model())
    outcome = callback.probe_outcome
    assert outcome is not None and outcome.cost.over_target
    assert outcome.cost.share is not None and outcome.cost.share > 0.01
    assert "more than the cost target of 1%" in caplog.text
    assert "To skip the probes next time pass ranking=['visual', 'audio']" in caplog.text


def test_no_report_without_a_logger_and_one_where_asked(tmp_path: Path) -> None:
    workdir = Path.cwd()  # every test runs in an empty temporary directory
    callback = PDMPCallback(MODALITIES, probes=QUICK)
    trainer(callbacks=[callback], max_steps=2).fit(plateau_model())
    assert callback.probe_outcome is not None and callback.report_path is None
    assert list(workdir.iterdir()) == []
    target = tmp_path / "reports" / "probes.json"
    asked = PDMPCallback(MODALITIES, probes=QUICK, report_path=str(target))
    trainer(callbacks=[asked], max_steps=2).fit(plateau_model())
    assert asked.report_path == target and json.loads(target.read_text())["ranking"] == asked.ranking
    assert [p.name for p in target.parent.iterdir()] == ["probes.json"]  # no temporary file left behind


def test_held_out_slice_when_there_is_no_validation_loader() -> None:
    torch.manual_seed(0)
    model = TwoModalityModel(data=plateau_task(600), num_classes=4, batch_size=32)
    callback = PDMPCallback(MODALITIES, probes=ProbeSettings(max_epochs=2, val_fraction=0.25))
    trainer(callbacks=[callback]).fit(model)
    outcome = callback.probe_outcome
    assert outcome is not None and outcome.val_source == "held-out 25% of train"
    assert outcome.epoch_batches == 15 and outcome.val_samples == 150  # 450 train samples in batches of 32


# The plateau task has 38 train batches per epoch.
@pytest.mark.parametrize(
    ("trainer_options", "epoch_batches"),
    [({"max_epochs": 5}, 38), ({"max_epochs": 5, "limit_train_batches": 10}, 10), ({"max_epochs": -1}, 38)],
)
def test_validation_passes_and_the_cap_count_probe_epochs(trainer_options: dict[str, Any], epoch_batches: int) -> None:
    settings = ProbeSettings(max_epochs=1.5, val_check_interval=0.25)
    outcome = probe_only(PDMPCallback(MODALITIES, probes=settings), **trainer_options).probe_outcome
    assert outcome is not None and outcome.epoch_batches == epoch_batches
    step = round(0.25 * epoch_batches) / epoch_batches
    for curve in outcome.curves.values():
        assert curve.epochs == pytest.approx(
            [step * (i + 1) for i in range(len(curve.epochs) - 1)] + [curve.epochs[-1]]
        )
        assert curve.trained_epochs <= 1.5 + 1e-9
        if curve.stopped == "cap":
            assert curve.trained_epochs == pytest.approx(round(1.5 * epoch_batches) / epoch_batches)


class TupleModel(TwoModalityModel):
    """Tuple batches ``(audio, visual, label)``."""

    def train_dataloader(self) -> DataLoader:
        tensors = self.data.tensors
        return DataLoader(list(zip(tensors["audio"], tensors["visual"], tensors["label"], strict=True)), batch_size=8)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        audio, visual, label = batch
        return super().training_step({"audio": audio, "visual": visual, "label": label}, batch_idx)  # type: ignore[return-value]


def test_tuple_batches_by_index() -> None:
    callback = PDMPCallback(MODALITIES, inputs={"audio": 0, "visual": 1}, target=2, probes=QUICK)
    trainer(callbacks=[callback], max_steps=1).fit(TupleModel())
    assert sorted(callback.ranking or []) == ["audio", "visual"]


class RegexModel(TwoModalityModel):
    def probe_encoder(self, modality: str) -> nn.Module:
        return self.audio_encoder if modality == "audio" else self.visual_encoder


def test_regex_modalities_need_a_probe_encoder_hook() -> None:
    spec = {"audio": "re:^audio_", "visual": "re:^visual_"}
    with pytest.raises(PDMPConfigurationError, match=r"modalities\['audio'\].*probe_encoder"):
        trainer(callbacks=[PDMPCallback(spec)], max_steps=1).fit(TwoModalityModel())
    callback = PDMPCallback(spec, probes=QUICK)
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
    callback = PDMPCallback(MODALITIES, probes=QUICK)
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


def outcome_with(
    scores: dict[str, float], num_classes: int = 4, val_samples: int = 400, capped: dict[str, list[float]] | None = None
) -> ProbeOutcome:
    curves = {m: ProbeCurve(m, epochs=[1.0], scores=[score], stopped="plateau") for m, score in scores.items()}
    for modality, curve in (capped or {}).items():
        curves[modality] = ProbeCurve(modality, [i + 1.0 for i in range(len(curve))], curve, stopped="cap")
    return ProbeOutcome(curves, num_classes, ProbeCost(0.0, 0.0, 0.0), 1, "val_dataloader", val_samples, 4.0)


@pytest.mark.parametrize(
    ("scores", "num_classes", "val_samples", "capped", "expected"),
    [
        ({"audio": 0.6, "visual": 0.95}, 4, 400, None, []),
        # one standard error of the difference: sqrt((.8 * .2 + .78 * .22) / 400) = 0.0288
        ({"audio": 0.78, "visual": 0.80}, 4, 400, None, ["within one standard error (0.029) on 400 validation"]),
        ({"audio": 0.78, "visual": 0.80}, 4, 10_000, None, []),  # the same gap is clear on more samples
        ({"audio": 0.26, "visual": 0.31}, 4, 4000, None, ["barely above chance (0.250)"]),  # threshold 0.325
        ({"a": 0.9, "b": 0.89, "c": 0.2}, 10, 400, None, ["a (0.900) leads b (0.890)"]),  # only the top two matter
        # Capped at 4 epochs, climbing 0.1 per epoch, 0.2 behind: it could get there in 2 more epochs.
        (
            {"audio": 0.6},
            4,
            400,
            {"visual": [0.1, 0.2, 0.3, 0.4]},
            ["'visual' reached the cap of 4 probe epochs while"],
        ),
        (
            {"audio": 0.6},
            4,
            400,
            {"visual": [0.1, 0.2, 0.3, 0.3]},
            ["'visual' reached the cap of 4 probe epochs still"],
        ),
        ({"audio": 0.9}, 4, 400, {"visual": [0.40, 0.41, 0.42, 0.43]}, []),  # too slow to reach 0.9 in 4 epochs
        ({"audio": 0.6}, 4, 400, {"visual": [0.9, 0.91, 0.92, 0.93]}, []),  # capped while leading: no doubt
    ],
)
def test_doubts_flag_near_chance_ties_and_probes_capped_while_climbing(
    scores: dict[str, float],
    num_classes: int,
    val_samples: int,
    capped: dict[str, list[float]] | None,
    expected: list[str],
) -> None:
    doubts = outcome_with(scores, num_classes, val_samples, capped).doubts()
    assert len(doubts) == len(expected), doubts
    for doubt, fragment in zip(doubts, expected, strict=True):
        assert fragment in doubt


def test_undertrained_probes_warn_and_the_report_lists_the_doubt(tmp_path: Path) -> None:
    # Probes capped after two batches cannot learn anything.
    callback = PDMPCallback(MODALITIES, probes=ProbeSettings(max_epochs=0.05, val_check_interval=0.05))
    logger = CSVLogger(tmp_path, name="run")
    with pytest.warns(ProbeRankingWarning, match=r"uncertain: .*(barely above|still near) chance.*probes.max_epochs"):
        trainer(callbacks=[callback, StopAfterTrainStart()], logger=logger, max_steps=5, max_epochs=1).fit(
            plateau_model()
        )
    assert callback.probe_outcome is not None and callback.probe_outcome.val_samples == 400
    report = json.loads(Path(callback.report_path or "").read_text())
    assert report["doubts"] == callback.probe_outcome.doubts() and len(report["doubts"]) >= 1


def test_a_cap_that_ends_the_slow_probe_early_warns_naming_it() -> None:
    # One probe epoch: the fast audio leads, the slow visual is still near chance or climbing.
    with pytest.warns(ProbeRankingWarning, match=r"the probe of 'visual' reached the cap of 1 probe epochs"):
        callback = probe_only(PDMPCallback(MODALITIES, probes=QUICK), max_epochs=100)
    assert callback.ranking == ["audio", "visual"]
    assert {c.stopped for c in callback.probe_outcome.curves.values()} == {"cap"}  # type: ignore[union-attr]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_one_epoch_training_gets_the_right_ranking_or_a_warning(seed: int) -> None:
    with pytest.warns() as record:
        callback = probe_only(PDMPCallback(MODALITIES), plateau_model(seed), max_epochs=1)
    doubts = [w for w in record if issubclass(w.category, ProbeRankingWarning)]
    assert callback.ranking == ["visual", "audio"] or doubts


# --- the stopping rule ---------------------------------------------------------------------------


def curve(scores: list[float], every: float = 0.5, name: str = "m") -> ProbeCurve:
    return ProbeCurve(name, [every * (i + 1) for i in range(len(scores))], scores)


@pytest.mark.parametrize(
    ("curves", "expected"),
    [
        # The fast one gains 0.01 over 3 passes, within the noise (one standard error of 0.61 on 400 samples: 0.024):
        # plateau. The slow
        # one is then alone and leads by far more than two standard errors: settled.
        ({"fast": [0.60, 0.61, 0.60, 0.60], "slow": [0.3, 0.5, 0.7, 0.9]}, {"fast": "plateau", "slow": "settled"}),
        # The slow one still trails the stopped leader: it keeps training however far behind.
        ({"fast": [0.60, 0.61, 0.60, 0.60], "slow": [0.26, 0.27, 0.30, 0.40]}, {"fast": "plateau"}),
        # Near chance (0.25, threshold 0.325) nothing counts as a plateau: a slow starter is not cut short.
        ({"fast": [0.60, 0.61, 0.60, 0.60], "slow": [0.26, 0.25, 0.27, 0.26]}, {"fast": "plateau"}),
        # A steady climber, 0.01 per pass: 0.03 over 3 passes is more than the noise (0.024), so it goes on.
        ({"fast": [0.60, 0.61, 0.62, 0.63], "slow": [0.3, 0.5, 0.7, 0.72]}, {}),
        # A lead within two standard errors is not settled; both stop only when flat.
        ({"a": [0.70, 0.71, 0.70, 0.71], "b": [0.68, 0.70, 0.72, 0.73]}, {"a": "plateau"}),
        # Before min_epochs (1.0) nothing stops.
        ({"fast": [0.6, 0.6], "slow": [0.3, 0.9]}, {}),
    ],
)
def test_stop_reasons(curves: dict[str, list[float]], expected: dict[str, str]) -> None:
    from pdmp_lightning.probing.stopping import stop_reasons

    built = {m: curve(s, name=m) for m, s in curves.items()}
    assert stop_reasons(built, list(built), ProbeSettings(), chance=1 / 4, val_samples=400) == expected


def test_the_cap_stops_every_probe() -> None:
    from pdmp_lightning.probing.stopping import stop_reasons

    built = {"a": curve([0.3, 0.5, 0.7, 0.9]), "b": curve([0.3, 0.4, 0.5, 0.6])}
    assert stop_reasons(built, ["a", "b"], ProbeSettings(max_epochs=2), 1 / 4, 400) == {"a": "cap", "b": "cap"}


# --- encoders of real models -------------------------------------------------------------------


class FramesNet(nn.Module):
    """A 2-D network run per frame: ``[B, C, T, H, W]`` -> ``[B * T, C', H', W']``, as OGM-GE's visual ResNet.

    ``frame_major`` folds the rows frame by frame (``t * B + b``) instead of sample by sample.
    """

    def __init__(self, frame_major: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, kernel_size=3, padding=1)
        self.frame_major = frame_major

    def forward(self, frames: Tensor) -> Tensor:
        batch, channels, time, height, width = frames.shape
        order = (2, 0, 1, 3, 4) if self.frame_major else (0, 2, 1, 3, 4)
        folded = frames.permute(*order).reshape(batch * time, channels, height, width)
        return torch.relu(self.conv(folded))


class AVClassifier(pl.LightningModule):
    """The official OGM-GE ``AVClassifier`` pattern: the fusion is called with tensors, frames are folded."""

    def __init__(self, frames: int = 3) -> None:
        super().__init__()
        self.audio_net = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
        self.visual_net = FramesNet()
        self.fusion_module = nn.Linear(8 + 4, 4)
        self.num_classes, self.frames = 4, frames

    def forward(self, audio: Tensor, visual: Tensor) -> Tensor:
        a = self.audio_net(audio)
        v = self.visual_net(visual)
        _, channels, height, width = v.shape
        v = v.view(a.shape[0], -1, channels, height, width).permute(0, 2, 1, 3, 4)
        v = torch.flatten(torch.nn.functional.adaptive_avg_pool3d(v, 1), 1)
        out: Tensor = self.fusion_module(torch.cat([a, v], dim=1))
        return out

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return torch.nn.functional.cross_entropy(self(batch["audio"], batch["visual"]), batch["label"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        data = {
            "audio": torch.randn(64, 6, generator=generator),
            "visual": torch.randn(64, 2, self.frames, 5, 5, generator=generator),
            "label": torch.randint(0, 4, (64,), generator=generator),
        }
        return DataLoader([{k: v[i] for k, v in data.items()} for i in range(64)], batch_size=4)


AV_MODALITIES = {"audio": "audio_net", "visual": "visual_net"}


def test_an_encoder_that_folds_frames_into_the_batch_is_probed_without_a_hook(caplog: pytest.LogCaptureFixture) -> None:
    callback = PDMPCallback(AV_MODALITIES, probes=QUICK)
    with caplog.at_level(logging.INFO):
        trainer(callbacks=[callback], max_steps=2, precision="32-true").fit(AVClassifier())
    outcome = callback.probe_outcome
    assert outcome is not None and outcome.folded == {"visual": 3}
    assert "the 'visual' encoder folds 3 frames per sample into the batch" in caplog.text
    # Pooled over the 3 frames: 4 channels x 5 x 5 features per sample, 4 classes.
    assert outcome.curves["visual"].epochs and sorted(callback.ranking or []) == ["audio", "visual"]


@pytest.mark.parametrize("frame_major", [False, True])
def test_folded_features_are_averaged_per_sample_in_either_row_order(frame_major: bool) -> None:
    from pdmp_lightning.probing.probe import build_probe

    torch.manual_seed(0)
    encoder, frames = FramesNet(frame_major), torch.randn(4, 2, 3, 5, 5)
    probe = build_probe(encoder, frames, num_classes=4, modality="visual")
    assert (probe.fold, probe.frame_major) == (3, frame_major)
    with torch.no_grad():
        expected = torch.stack([encoder(frames[i : i + 1]).mean(dim=0).flatten() for i in range(4)])
        assert torch.allclose(probe.head(expected), probe(frames), atol=1e-6)


class Mixer(FramesNet):
    """Folds frames, then shifts the rows by one: no row order matches the samples."""

    def forward(self, frames: Tensor) -> Tensor:
        return super().forward(frames).roll(1, dims=0)


def test_folded_rows_that_match_no_sample_are_refused() -> None:
    model = AVClassifier()
    model.visual_net = Mixer()
    with pytest.raises(
        PDMPConfigurationError, match=r"3 rows per sample cannot be matched with the samples.*probe_encoder"
    ):
        trainer(callbacks=[PDMPCallback(AV_MODALITIES, probes=QUICK)], max_steps=1, precision="32-true").fit(model)


class TimeFirst(nn.Module):
    """Sequence-first features ``[T, B, d]``, as a ``batch_first=False`` RNN returns them."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(50, 4)

    def forward(self, frames: Tensor) -> Tensor:
        return self.linear(frames.permute(2, 0, 1, 3, 4).flatten(2))


def test_features_that_do_not_follow_the_batch_are_named_before_any_probe_trains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = AVClassifier()
    model.visual_net = TimeFirst()  # type: ignore[assignment]
    trained: list[int] = []
    monkeypatch.setattr(ProbeRunner, "_train", lambda *args, **kwargs: trained.append(1))
    callback = PDMPCallback(AV_MODALITIES, probes=QUICK)
    with pytest.raises(
        PDMPConfigurationError,
        match=r"`modalities\['visual'\]`: got 'an encoder whose output does not follow the batch "
        r"\(\[2, 2, 3, 5, 5\] -> \[3, 2, 4\], \[3, 2, 3, 5, 5\] -> \[3, 3, 4\]\)'.*probe_encoder\(self, modality\)",
    ):
        trainer(callbacks=[callback], max_steps=1, precision="32-true").fit(model)
    assert trained == [] and callback.probe_outcome is None and not callback.is_modulating


class TupleOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 5)

    def forward(self, visual: Tensor) -> tuple[Tensor, Tensor]:
        return self.linear(visual), visual


def test_tuple_outputs_are_probed_on_their_first_element() -> None:
    model = plateau_model()
    model.visual_encoder = TupleOutput()  # type: ignore[assignment]
    model.head = nn.Linear(16 + 5, 4)
    model.forward = lambda batch: model.head(  # type: ignore[method-assign]
        torch.cat([model.audio_encoder(batch["audio"]), model.visual_encoder(batch["visual"])[0]], dim=1)
    )
    callback = probe_only(PDMPCallback(MODALITIES, probes=QUICK), model, max_epochs=1)
    assert callback.probe_outcome is not None and callback.probe_outcome.folded == {}


# --- precision, host reads, settings -----------------------------------------------------------


def test_fp16_mixed_precision_probes_step_through_a_gradient_scaler(monkeypatch: pytest.MonkeyPatch) -> None:
    scaled: list[float] = []
    original = GradScaler.scale
    monkeypatch.setattr(GradScaler, "scale", lambda self, loss: scaled.append(1) or original(self, loss))
    plugin = MixedPrecision("16-mixed", "cpu", scaler=GradScaler("cpu"))
    callback = probe_only(
        PDMPCallback(MODALITIES, probes=ProbeSettings(max_epochs=0.5, val_check_interval=0.5)),
        precision=None,
        plugins=[plugin],
        max_epochs=1,
    )
    # 19 batches (half of 38) for each of the two probes; the Trainer's own scaler is left alone.
    assert callback.probe_outcome is not None and len(scaled) == 38
    assert plugin.scaler is not None and plugin.scaler._scale is None


def test_bf16_mixed_precision_probes_have_no_scaler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GradScaler, "scale", lambda *args: pytest.fail("bf16 needs no gradient scaler"))
    callback = probe_only(PDMPCallback(MODALITIES, probes=QUICK), precision="bf16-mixed", max_epochs=1)
    assert callback.probe_outcome is not None


def test_losses_are_read_back_once_per_validation_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    original_train = ProbeRunner._train

    def reader(name: str) -> Any:
        method = getattr(Tensor, name)

        def read(self: Tensor, *args: Any) -> Any:
            if sys._getframe(1).f_code.co_filename.endswith(str(Path("probing", "runner.py"))):
                reads.append(name)  # a read by the probe loop itself (the optimizers' internals are theirs)
            return method(self, *args)

        return read

    def counting(*args: Any, **kwargs: Any) -> Any:
        with monkeypatch.context() as patch:
            for name in ("item", "__float__", "tolist"):
                patch.setattr(Tensor, name, reader(name))
            return original_train(*args, **kwargs)

    monkeypatch.setattr(ProbeRunner, "_train", counting)
    callback = probe_only(PDMPCallback(MODALITIES, probes=ProbeSettings(max_epochs=1)), max_epochs=1)
    passes = len(callback.probe_outcome.curves["audio"].epochs)  # type: ignore[union-attr]
    assert passes == 2 and reads == ["tolist"] * passes  # 19 batches x 2 probes per pass, one read


def test_probe_settings_from_a_dict_and_a_second_fit_reuses_the_ranking() -> None:
    callback = PDMPCallback(MODALITIES, probes={"max_epochs": 1, "metric": "macro_f1"})
    assert callback.probes == ProbeSettings(max_epochs=1, metric="macro_f1")
    model = plateau_model()
    trainer(callbacks=[callback], max_steps=1).fit(model)
    first = callback.probe_outcome
    trainer(callbacks=[callback], max_steps=2).fit(model)
    assert callback.probe_outcome is first and callback.ranking is not None
