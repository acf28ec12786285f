"""The adaptive boost: its rule against a float64 reference, its effect, resume, logging, and the constant mode."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from pdmp_lightning import PDMPCallback, PDMPConfigurationError
from pdmp_lightning.modulation import adaptation
from pdmp_lightning.modulation.adaptation import HypergradientBoost, LossBackoff
from pdmp_lightning.probing.outcome import ProbeCost, ProbeCurve, ProbeOutcome
from tests.helpers import MODALITIES, MultiplierHistory, TwoModalityModel, WithValidation, moves, plateau_task, trainer

RANKED = {"ranking": ["visual", "audio"], "start_epoch": 0}


def learnable_model(optimizer: str, lr: float) -> TwoModalityModel:
    torch.manual_seed(0)
    return TwoModalityModel(
        optimizer=optimizer, lr=lr, data=plateau_task(480), batch_size=16, shuffle=True, num_classes=4
    )


# --- the rules, step by step --------------------------------------------------------------------


def test_hypergradient_moves_the_log_boost_by_rate_times_the_cosine_of_gradient_and_previous_update() -> None:
    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (4,)]
    boost = HypergradientBoost(ceiling=10.0, floor=1.0, rate=0.7, interval=3)
    boost.value = 3.0  # room to move both ways
    parameters = [torch.nn.Parameter(torch.randn(s, generator=generator, dtype=torch.float64)) for s in shapes]
    expected, previous, cosines = 3.0, None, []
    for _step in range(7):
        for p in parameters:
            p.grad = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        current = [p.detach().clone() for p in parameters]
        if previous is not None:
            moved = torch.cat([(c - b).flatten() for c, b in zip(current, previous, strict=True)])
            gradient = torch.cat([p.grad.flatten() for p in parameters])  # type: ignore[union-attr]
            cosines.append(float(-(gradient @ moved) / (gradient.norm() * moved.norm())))
        updated = boost.step(parameters, reduce=None)
        assert updated == (len(cosines) == 3)
        if updated:
            expected = min(10.0, max(1.0, expected * math.exp(0.7 * sum(cosines))))
            assert boost.value == pytest.approx(expected, rel=1e-12)
            assert boost.signal == pytest.approx(sum(cosines) / 3, rel=1e-12)
            cosines = []
        previous = current
        with torch.no_grad():  # an arbitrary move, some steps along the gradient, some against it
            for p in parameters:
                p.add_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
    assert boost.value != 3.0  # the draws moved it


def test_hypergradient_stays_within_floor_and_ceiling_and_ignores_a_step_that_did_not_move() -> None:
    parameter = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    falling = HypergradientBoost(ceiling=8.0, floor=2.0, rate=5.0, interval=1)
    for _step in range(6):  # each update moved up the new gradient: the previous step overshot
        parameter.grad = torch.ones(3, dtype=torch.float64)
        falling.step([parameter], reduce=None)
        with torch.no_grad():
            parameter.add_(1.0)
    assert falling.value == 2.0 and falling.signal == pytest.approx(-1.0)
    rising = HypergradientBoost(ceiling=8.0, floor=2.0, rate=5.0, interval=1)
    rising.value = 2.0
    for _step in range(6):  # each update went down the new gradient too: longer steps would have helped
        parameter.grad = -torch.ones(3, dtype=torch.float64)
        rising.step([parameter], reduce=None)
        with torch.no_grad():
            parameter.add_(1.0)
    assert rising.value == 8.0
    still = HypergradientBoost(ceiling=8.0, floor=2.0, rate=5.0, interval=1)
    for _step in range(3):  # a skipped step (AMP overflow, a frozen tensor): no information, no change
        parameter.grad = torch.ones(3, dtype=torch.float64)
        still.step([parameter], reduce=None)
    assert still.value == 8.0 and still.signal == 0.0


def test_backoff_halves_after_a_rising_window_and_grows_back_after_a_falling_one() -> None:
    boost = LossBackoff(ceiling=10.0, floor=1.0, interval=2)
    values = []
    for window_mean in (5.0, 4.0, 4.5, 4.4, 4.3, 6.0, 1.0):
        for _ in range(2):
            boost.observe_loss(torch.tensor(window_mean))
            boost.step([], reduce=None)
        values.append(boost.value)
    # first window: nothing to compare; then falls (x1.25, capped), rises (/2), falls, falls, rises, falls.
    assert values == [10.0, 10.0, 5.0, 6.25, 7.8125, 3.90625, 4.8828125]
    assert boost.signal == 1.0


# --- in training --------------------------------------------------------------------------------


@pytest.mark.parametrize(("optimizer", "lr", "backs_off"), [("sgd", 1e-3, False), ("sgd", 1.0, True)])
def test_the_boost_backs_off_when_the_dominant_encoder_overshoots(optimizer: str, lr: float, backs_off: bool) -> None:
    callback = PDMPCallback(MODALITIES, **RANKED)
    history = MultiplierHistory(callback)
    trainer(callbacks=[history, callback], max_steps=60, max_epochs=-1).fit(learnable_model(optimizer, lr))
    assert callback.boost is not None and callback.boost.signal is not None
    boosts = [step["visual"] for step in history.history]
    assert boosts[:10] == [10.0] * 10  # the paper's value until the first interval's end
    if backs_off:
        assert callback.boost.signal < 0 and boosts[-1] == 1.0
    else:
        assert callback.boost.signal > 0 and boosts[-1] == 10.0
    assert all(step["audio"] == 1.0 for step in history.history)  # the other modalities never move


def test_the_adapted_boost_is_what_the_next_step_applies() -> None:
    callback = PDMPCallback(MODALITIES, **RANKED)
    callback.load_state_dict(
        {"ranking": ["visual", "audio"], "boost": {"name": "hypergradient", "value": 2.5, "dominant": "visual"}}
    )
    model = TwoModalityModel(lr=0.1)
    plain = moves(copy.deepcopy(model))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer(callbacks=[callback], max_steps=1).fit(model)
    for name, delta in plain.items():
        k = 2.5 if name.startswith("visual_encoder") else 1.0
        torch.testing.assert_close(model.get_parameter(name).detach() - before[name], delta * k, rtol=1e-5, atol=1e-9)


def test_the_constant_mode_keeps_the_papers_coefficients_at_every_step() -> None:
    callback = PDMPCallback(MODALITIES, adaptation="none", **RANKED)
    history = MultiplierHistory(callback)
    trainer(callbacks=[history, callback], max_steps=60, max_epochs=-1).fit(learnable_model("sgd", 0.3))
    assert callback.boost is None and callback.state_dict()["boost"] is None
    assert history.history == [{"visual": 10.0, "audio": 1.0}] * 60


def test_the_boost_and_its_signal_are_logged(tmp_path: Path) -> None:
    callback = PDMPCallback(MODALITIES, log_every_n_steps=1, **RANKED)
    history = MultiplierHistory(callback)
    logger = CSVLogger(tmp_path, name="run")
    run = trainer(callbacks=[history, callback], logger=logger, max_steps=40, max_epochs=-1, log_every_n_steps=1)
    run.fit(learnable_model("sgd", 1.0))
    with open(Path(logger.log_dir) / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("pdmp/coefficient/visual")]
    logged = [float(row["pdmp/coefficient/visual"]) for row in rows]
    # Logged after the step's update: the value the next step applies.
    assert logged[:-1] == pytest.approx([step["visual"] for step in history.history[1:]], rel=1e-6)
    assert len(set(logged)) > 1
    signals = [float(row["pdmp/hypergradient_signal"]) for row in rows if row.get("pdmp/hypergradient_signal")]
    assert signals and signals[-1] == pytest.approx(callback.boost.signal)  # type: ignore[union-attr]


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_resume_restores_the_adapted_boost(tmp_path: Path) -> None:
    first = PDMPCallback(MODALITIES, **RANKED)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    model = learnable_model("sgd", 0.3)
    trainer(callbacks=[first, checkpoint], max_steps=-1, max_epochs=2, enable_checkpointing=True).fit(model)
    assert first.boost is not None and first.boost.value != 10.0
    saved = first.boost.value
    original = tmp_path / "first.ckpt"
    original.write_bytes((tmp_path / "last.ckpt").read_bytes())  # the resumed runs overwrite last.ckpt

    resumed = PDMPCallback(MODALITIES, **RANKED)
    history = MultiplierHistory(resumed)
    again = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    run = trainer(callbacks=[history, resumed, again], max_steps=-1, max_epochs=3, enable_checkpointing=True)
    run.fit(learnable_model("sgd", 0.3), ckpt_path=original)
    assert history.history[0]["visual"] == saved and run.global_step == 3 * 30

    # A checkpoint of the constant mode, or of another rule, leaves the boost at its start.
    other = PDMPCallback(MODALITIES, adaptation="backoff", **RANKED)
    history = MultiplierHistory(other)
    again = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    run = trainer(callbacks=[history, other, again], max_steps=-1, max_epochs=3, enable_checkpointing=True)
    run.fit(learnable_model("sgd", 0.3), ckpt_path=original)
    assert history.history[0]["visual"] == 10.0


def test_a_second_fit_starts_the_boost_again_from_gamma_p() -> None:
    callback = PDMPCallback(MODALITIES, **RANKED)
    model = learnable_model("sgd", 1.0)
    trainer(callbacks=[callback], max_steps=30, max_epochs=-1).fit(model)
    assert callback.boost is not None and callback.boost.value < 10.0
    history = MultiplierHistory(callback)
    trainer(callbacks=[history, callback], max_steps=1, max_epochs=-1).fit(model)
    assert history.history == [{"visual": 10.0, "audio": 1.0}]


# --- no boost where the probes show the dominant modality already leads -------------------------


def outcome(curves: dict[str, list[float]], val_samples: int = 400) -> ProbeOutcome:
    return ProbeOutcome(
        {m: ProbeCurve(m, epochs=[0.5 * (i + 1) for i in range(len(s))], scores=s) for m, s in curves.items()},
        num_classes=4,
        cost=ProbeCost(seconds=0.0, setup_seconds=0.0, validation_seconds=0.0),
        epoch_batches=10,
        val_source="val_dataloader",
        val_samples=val_samples,
    )


def test_a_slow_starter_is_one_whose_probe_covered_clearly_less_of_its_way_at_the_first_pass() -> None:
    # chance is 0.25: visual has gone (0.4 - 0.25) / (0.9 - 0.25) = 0.23 of its way, audio all of it.
    slow_leader = outcome({"visual": [0.4, 0.7, 0.9], "audio": [0.55, 0.55]})
    assert slow_leader.first_pass_progress() == pytest.approx({"visual": 0.15 / 0.65, "audio": 1.0})
    assert slow_leader.slow_starter("visual") and not slow_leader.slow_starter("audio")
    # Leading from the start (the UCI pixel view beside the morphological one): not a slow starter.
    assert not outcome({"pix": [0.84, 0.95, 0.98], "mor": [0.50, 0.66, 0.70]}).slow_starter("pix")
    # Behind by less than the margin (0.2) of progress: as fast, within what the benchmarks call noise.
    close = outcome({"a": [0.75, 0.9], "b": [0.80, 0.85]})  # a: 0.77, b: 0.92
    assert not close.slow_starter("a")
    # A probe never above chance counts as learned at once.
    assert outcome({"a": [0.25, 0.2], "b": [0.5, 0.9]}).first_pass_progress()["a"] == 1.0


def test_no_boost_when_the_dominant_modality_is_learned_as_fast_as_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # visual made linear and strong: it leads audio at every probe pass.
    data = plateau_task(480)
    data.tensors["visual"][:, 4:] = 0.0
    data.tensors["visual"][torch.arange(480), 4 + data.tensors["label"]] = 3.0  # one-hot: learned in a few steps
    callback = PDMPCallback(MODALITIES, start_epoch=0, probes={"max_epochs": 2})
    history = MultiplierHistory(callback)
    model = WithValidation(data=data, val_data=data, batch_size=16, num_classes=4)
    with caplog.at_level("INFO"):
        trainer(callbacks=[history, callback], max_steps=5, max_epochs=-1).fit(model)
    assert callback.dominant == "visual" and callback.probe_outcome is not None
    assert not callback.probe_outcome.slow_starter("visual")
    assert callback.boost is not None and not callback.boost.adapts
    assert history.history == [{"visual": 1.0, "audio": 1.0}] * 5
    assert callback.skip_probes_arguments == {"ranking": ["visual", "audio"], "gamma_p": 1.0}
    assert "no boost: its probe learned as fast as the others (share of the way to its best" in caplog.text
    assert "skip them next time with ranking=['visual', 'audio'], gamma_p=1.0" in caplog.text

    constant = PDMPCallback(MODALITIES, start_epoch=0, probes={"max_epochs": 2}, adaptation="none")
    trainer(callbacks=[constant], max_steps=1, max_epochs=-1).fit(
        WithValidation(data=data, val_data=data, batch_size=16, num_classes=4)
    )
    assert constant.coefficients == {"visual": 10.0, "audio": 1.0}


def test_an_unknown_adaptation_is_refused_naming_the_choices() -> None:
    with pytest.raises(
        PDMPConfigurationError, match=r"`adaptation`: got 'adaptive'; expected one of \['hypergradient'"
    ):
        PDMPCallback(MODALITIES, adaptation="adaptive")  # type: ignore[arg-type]


@pytest.mark.parametrize(("adaptation", "lr"), [("hypergradient", 0.3), ("backoff", 1.0)])
def test_the_boost_counts_optimizer_steps_under_accumulation_and_bf16(adaptation: str, lr: float) -> None:
    callback = PDMPCallback(MODALITIES, adaptation=adaptation, **RANKED)  # type: ignore[arg-type]
    # Resumed mid-range, so that every update moves the multiplier whichever way the rule points.
    callback.load_state_dict({"boost": {"name": adaptation, "value": 3.0, "dominant": "visual"}})
    history = MultiplierHistory(callback)
    run = trainer(
        callbacks=[history, callback],
        max_steps=25,
        max_epochs=-1,
        accumulate_grad_batches=2,
        precision="bf16-mixed",
    )
    run.fit(learnable_model("sgd", lr))  # rates at which the boosted encoder overshoots
    # 25 optimizer steps of 2 micro-batches: the rule saw 25 steps (2 updates), not 50 backward passes.
    assert len(history.history) == 25 and run.global_step == 25 and history.history[0]["visual"] == 3.0
    assert callback.boost is not None and callback.boost.signal is not None
    assert all(math.isfinite(step["visual"]) and 1.0 <= step["visual"] <= 10.0 for step in history.history)
    changes = [i for i in range(1, 25) if history.history[i]["visual"] != history.history[i - 1]["visual"]]
    assert changes and all(i % 10 == (0 if adaptation == "backoff" else 1) for i in changes)


def test_a_large_encoder_is_watched_on_a_strided_sample_close_to_the_full_cosine() -> None:
    generator = torch.Generator().manual_seed(1)
    weight = torch.nn.Parameter(torch.randn(600, 500, generator=generator, dtype=torch.float64))  # 300,000 elements
    boost = HypergradientBoost(ceiling=10.0, floor=1.0, rate=1.0, interval=1)
    boost.value = 3.0
    weight.grad = torch.zeros_like(weight)
    boost.step([weight], reduce=None)  # the snapshot
    # Runs of SAMPLE_RUN consecutive elements, evenly spaced: about MAX_WATCHED_ELEMENTS in all.
    spacing = math.ceil(300_000 / adaptation.MAX_WATCHED_ELEMENTS) * adaptation.SAMPLE_RUN
    starts = torch.arange(0, 300_000 - adaptation.SAMPLE_RUN + 1, spacing)
    positions = (starts[:, None] + torch.arange(adaptation.SAMPLE_RUN)).flatten()
    assert boost._buffer is not None  # three rows: parameters, gradient, previous parameters
    assert boost._buffer.shape == (3, len(positions))
    assert adaptation.MAX_WATCHED_ELEMENTS // 2 < len(positions) <= adaptation.MAX_WATCHED_ELEMENTS
    move = torch.randn(600, 500, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        weight.add_(move)
    # A gradient that agrees with the move by a cosine of about -0.1 (the previous step overshot a little).
    noise = torch.randn(600, 500, generator=generator, dtype=torch.float64)
    weight.grad = 0.1 * noise.norm() * move / move.norm() + noise
    boost.step([weight], reduce=None)
    full = float(-(weight.grad.flatten() @ move.flatten()) / (weight.grad.norm() * move.norm()))
    sampled_grad, sampled_move = weight.grad.flatten()[positions], move.flatten()[positions]
    sampled = float(-(sampled_grad @ sampled_move) / (sampled_grad.norm() * sampled_move.norm()))
    assert boost.signal == pytest.approx(sampled, rel=1e-9) and abs(sampled - full) < 0.02
    assert boost.value == pytest.approx(3.0 * math.exp(sampled), rel=1e-9)
