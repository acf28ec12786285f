"""``python -m pdmp_lightning``: help, print_config round trip, parse-time errors, callbacks, outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonargparse import Namespace

from pdmp_lightning import ModalityGradientMonitor, PDMPCallback, ProbeSettings
from pdmp_lightning.cli import _relocate_under_default_root_dir, main

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"
QUICKSTART = str(CONFIGS / "quickstart.yaml")
# Small and fast: a few batches of a small generated set, logs in the test's working directory.
FAST = [
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=4",
    "--trainer.limit_val_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.init_args.num_samples=400",
]


@pytest.fixture(autouse=True)
def _no_pytest_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightningCLI warns when sys.argv holds arguments besides `args` (here: pytest's own)."""
    monkeypatch.setattr(sys, "argv", ["pdmp-lightning"])


def csv_logger_override(tmp_path: Path) -> str:
    """A config that replaces the logger list with one CSVLogger under ``tmp_path``."""
    path = tmp_path / "logger.yaml"
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path)}}
    path.write_text(yaml.safe_dump({"trainer": {"logger": [logger]}}))
    return str(path)


def test_help_shows_the_docstrings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model.help", "pdmp_lightning.models.MultimodalClassifier"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # help text is wrapped to the terminal width
    assert "Encoders per modality, a fusion, class logits" in out and "--model.fusion {concat,sum,film,gated}" in out
    with pytest.raises(SystemExit):
        main(["fit", "--trainer.callbacks.help", "PDMPCallback"])
    assert "Gamma of the performance-dominant modality" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "fit" in capsys.readouterr().out


def test_print_config_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    probes = [
        "--trainer.callbacks.init_args.probes.max_epochs=3",
        "--trainer.callbacks.init_args.probes.metric=macro_f1",
    ]
    with pytest.raises(SystemExit):
        main(["fit", "--config", QUICKSTART, *FAST, *probes, "--print_config"])
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(printed), "--print_config"])
    assert capsys.readouterr().out == printed.read_text()
    config = yaml.safe_load(printed.read_text())
    assert config["trainer"]["callbacks"][-1]["init_args"]["probes"] == {
        **vars(ProbeSettings()),
        "max_epochs": 3.0,
        "metric": "macro_f1",
    }
    # Linked on instantiation from the data, so not part of the printed config.
    assert "num_classes" not in config["model"]["init_args"] and "modalities" not in config["model"]["init_args"]
    cli = main(["fit", "--config", str(printed), "--config", csv_logger_override(tmp_path)])
    assert cli.model.num_classes == 4 and cli.model.modalities == ["audio", "visual"]
    pdmp = next(c for c in cli.trainer.callbacks if isinstance(c, PDMPCallback))
    assert pdmp.ranking is not None and cli.trainer.current_epoch == 2
    assert pdmp.probes == ProbeSettings(max_epochs=3, metric="macro_f1")


# Evaluating a checkpoint logs into a new version directory; ModelCheckpoint says its dirpath moved.
@pytest.mark.filterwarnings("ignore:The dirpath has changed from")
def test_a_run_writes_config_report_results_and_plot(tmp_path: Path) -> None:
    cli = main(["fit", "--config", QUICKSTART, "--config", csv_logger_override(tmp_path), *FAST])
    run_dir = Path(cli.trainer.log_dir)
    assert {"config.yaml", "pdmp_probe_report.json", "results.json", "training_curves.png", "metrics.csv"} <= {
        p.name for p in run_dir.iterdir()
    }
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["test"]) == {"test_accuracy", "test_macro_f1"}
    assert {"val_accuracy", "val_macro_f1"} <= set(results["validation"])
    assert results["pdmp"]["ranking"] == json.loads((run_dir / "pdmp_probe_report.json").read_text())["ranking"]
    assert results["seed"] == 0 and results["tested_checkpoint"].endswith(".ckpt")
    assert (run_dir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"

    # The other subcommands on the same config and the best checkpoint.
    checkpoint = results["tested_checkpoint"]
    for subcommand in ("validate", "test", "predict"):
        other = main([subcommand, "--config", str(run_dir / "config.yaml"), "--ckpt_path", checkpoint])
        assert other.trainer.state.fn == subcommand


# The rerun of the saved config evaluates a checkpoint: ModelCheckpoint says its dirpath moved.
@pytest.mark.filterwarnings("ignore:The dirpath has changed from")
@pytest.mark.parametrize("root", [None, "absolute", "relative"])
def test_default_root_dir_holds_every_file_of_a_run(
    root: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quickstart config as shipped: its loggers' ``save_dir: runs`` follows ``default_root_dir``."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    given = {None: [], "absolute": [f"--trainer.default_root_dir={tmp_path / 'out'}"]}
    given["relative"] = ["--trainer.default_root_dir=out"]
    base = {None: cwd, "absolute": tmp_path / "out", "relative": cwd / "out"}[root]
    tiny = [*FAST, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
    cli = main(["fit", "--config", QUICKSTART, *tiny, *given[root]])

    run_dir = base / "runs" / "quickstart" / "version_0"
    assert Path(cli.trainer.log_dir).resolve() == run_dir
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "metrics.csv", "results.json", "training_curves.png", "pdmp_probe_report.json"} <= names
    checkpoints = list((run_dir / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 1
    assert list((base / "runs" / "quickstart" / "tensorboard" / "version_0").glob("events.out.tfevents.*"))
    # Nothing anywhere else: not in the working directory, not beside the root.
    assert sorted(p.name for p in cwd.iterdir()) == {None: ["runs"], "absolute": [], "relative": ["out"]}[root]
    assert all(p.resolve().is_relative_to(base) for p in tmp_path.rglob("*") if p.is_file())

    # The saved config keeps the paths as written, so its rerun resolves them the same way (no out/out/runs).
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert [logger["init_args"]["save_dir"] for logger in saved["trainer"]["logger"]] == ["runs", "runs/quickstart"]
    other = main(["validate", "--config", str(run_dir / "config.yaml"), "--ckpt_path", str(checkpoints[0])])
    assert Path(other.trainer.log_dir).resolve() == run_dir.with_name("version_1")


def test_only_relative_output_paths_move_under_default_root_dir() -> None:
    def entry(class_path: str, **init_args: object) -> Namespace:
        return Namespace(class_path=class_path, init_args=Namespace(**init_args))

    loggers = [
        entry("lightning.pytorch.loggers.CSVLogger", save_dir="runs"),
        entry("lightning.pytorch.loggers.TensorBoardLogger", save_dir="/elsewhere/tb"),
        entry("lightning.pytorch.loggers.CSVLogger", save_dir="s3://bucket/runs"),
    ]
    checkpoint = entry("lightning.pytorch.callbacks.ModelCheckpoint", dirpath="checkpoints")
    config = Namespace(trainer=Namespace(default_root_dir="/root", logger=loggers, callbacks=checkpoint))
    changed = _relocate_under_default_root_dir(config)
    assert [logger.init_args.save_dir for logger in loggers] == [
        os.path.join("/root", "runs"),
        "/elsewhere/tb",
        "s3://bucket/runs",
    ]
    assert checkpoint.init_args.dirpath == os.path.join("/root", "checkpoints")
    assert [(key, value) for _, key, value in changed] == [("save_dir", "runs"), ("dirpath", "checkpoints")]

    # Only ModelCheckpoint's dirpath; unset paths and a missing default_root_dir change nothing.
    other = entry("pdmp_lightning.PDMPCallback", dirpath="kept")
    unset = entry("lightning.pytorch.callbacks.ModelCheckpoint", dirpath=None)
    config = Namespace(trainer=Namespace(default_root_dir="/root", logger=True, callbacks=[other, unset]))
    assert _relocate_under_default_root_dir(config) == [] and other.init_args.dirpath == "kept"
    config = Namespace(trainer=Namespace(default_root_dir=None, logger=loggers[:1]))
    assert _relocate_under_default_root_dir(config) == [] and loggers[0].init_args.save_dir == os.path.join(
        "/root", "runs"
    )
    config = Namespace(trainer=Namespace(default_root_dir=None, logger=[entry("x.Logger", save_dir="runs")]))
    assert _relocate_under_default_root_dir(config) == []
    assert config.trainer.logger[0].init_args.save_dir == "runs"


@pytest.mark.parametrize(
    ("arguments", "named", "detail"),
    [
        (["--model.init_args.fusoin=concat"], "fusoin", ""),
        (["--model.init_args.fusion=average"], "fusion", "average"),
        (["--trainer.callbacks.init_args.gamma_p=-1"], "gamma_p", "does not conform to restriction v>0"),
        (["--trainer.callbacks.init_args.mechanism=lr"], "mechanism", "lr"),
        (["--trainer.callbacks.init_args.probes.val_fraction=1.5"], "probes.val_fraction", "v<1"),
        (["--trainer.callbacks.init_args.probes.max_epochs=0"], "probes.max_epochs", "v>0"),
        (["--data.init_args.num_samples=many"], "num_samples", "many"),
    ],
)
def test_bad_keys_and_values_fail_at_parse_time_naming_them(
    arguments: list[str], named: str, detail: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", QUICKSTART, *arguments])
    assert exit_info.value.code != 0
    error = capsys.readouterr().err
    assert named in error and detail in error


def test_bad_key_in_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = yaml.safe_load(Path(QUICKSTART).read_text())
    config["trainer"]["callbacks"][0]["init_args"]["gama_p"] = 3.0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(path)])
    assert "gama_p" in capsys.readouterr().err


def test_callbacks_from_the_command_line(tmp_path: Path) -> None:
    joint = str(CONFIGS / "quickstart_joint.yaml")
    modalities = '{"audio": "encoders.audio", "visual": "encoders.visual"}'
    cli = main(
        [
            "fit",
            "--config",
            joint,
            "--config",
            csv_logger_override(tmp_path),
            *FAST,
            "--trainer.callbacks+=PDMPCallback",
            f"--trainer.callbacks.modalities={modalities}",
            "--trainer.callbacks.ranking=[visual, audio]",
            "--trainer.callbacks.start_epoch=1",
        ]
    )
    kinds = [type(c) for c in cli.trainer.callbacks]
    assert ModalityGradientMonitor in kinds and PDMPCallback in kinds
    pdmp = next(c for c in cli.trainer.callbacks if isinstance(c, PDMPCallback))
    assert pdmp.ranking == ["visual", "audio"] and pdmp.start_epoch == 1


def test_encoders_must_match_the_data_modalities(capsys: pytest.CaptureFixture[str]) -> None:
    encoder = '{"class_path": "pdmp_lightning.models.MLPEncoder", "init_args": {"in_features": 16}}'
    with pytest.raises(Exception, match=r"`encoders`: got \['audio', 'depth'\].*\['audio', 'visual'\]"):
        main(
            [
                "fit",
                "--config",
                QUICKSTART,
                *FAST,
                "--model.init_args.encoders",
                f'{{"audio": {encoder}, "depth": {encoder}}}',
            ]
        )


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pdmp_lightning", "fit", "--print_config", "--config", QUICKSTART],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "pdmp_lightning.PDMPCallback" in result.stdout


def test_console_script() -> None:
    script = Path(sys.executable).with_name("pdmp-lightning")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "fit" in result.stdout


@pytest.mark.parametrize(("config", "logged"), [
    ("ogm_ge", "ogm_ge/score/audio"),
    ("opm", "opm/drop_probability"),
    ("agm", "agm/ratio/visual"),
    ("mmpareto", "mmpareto/cosine/audio"),
])  # fmt: skip
def test_each_baseline_config_trains(config: str, logged: str, tmp_path: Path) -> None:
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / f"{config}.yaml"),
            "--config",
            csv_logger_override(tmp_path),
            *FAST,
            "--trainer.callbacks.init_args.start_epoch=0",
            "--trainer.log_every_n_steps=1",
        ]
    )
    run_dir = Path(cli.trainer.log_dir)
    assert json.loads((run_dir / "results.json").read_text())["test"]["test_accuracy"] > 0
    with open(run_dir / "metrics.csv") as handle:
        header = handle.readline().strip().split(",")
    assert logged in header and f"{config}/coefficient/visual" in header


@pytest.mark.parametrize(
    "name", ["cremad", "cremad_joint", "ave", "ave_joint", "kinetics_sounds", "kinetics_sounds_joint"]
)
def test_paper_recipe_configs_parse(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["trainer"]["max_epochs"] == 100 and config["trainer"]["gradient_clip_val"] == 40.0
    optimizer = config["model"]["init_args"]["optimizer"]["init_args"]
    assert (optimizer["lr"], optimizer["momentum"], optimizer["weight_decay"]) == (0.001, 0.9, 0.0001)
    assert config["data"]["init_args"]["batch_size"] == 64
    encoders = config["model"]["init_args"]["encoders"]
    assert {e["class_path"] for e in encoders.values()} == {"pdmp_lightning.models.ResNet18Encoder"}
    methods = [c["class_path"] for c in config["trainer"]["callbacks"]]
    expected = "pdmp_lightning.ModalityGradientMonitor" if name.endswith("joint") else "pdmp_lightning.PDMPCallback"
    assert expected in methods


@pytest.mark.parametrize("name", ["cremad_transformer", "cremad_transformer_joint"])
def test_the_transformer_recipe_parses_and_fits_a_step(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_data_audiovisual import make_cremad

    config_path = CONFIGS / f"{name}.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config_path), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    encoders = printed["model"]["init_args"]["encoders"]
    assert encoders["visual"]["class_path"] == "pdmp_lightning.models.VisionTransformerEncoder"
    assert encoders["audio"]["class_path"] == "pdmp_lightning.models.SpectrogramTransformerEncoder"
    assert encoders["visual"]["init_args"]["image_size"] == printed["data"]["init_args"]["image_size"] == 112

    # One step on a generated CREMA-D layout: the spectrogram shape is the recipe's (257 x 188); the frames
    # and the depth are made small for the CPU, in a copy of the config.
    (tmp_path / "data").mkdir()
    make_cremad(tmp_path / "data", num_train=8, num_test=2)
    config = yaml.safe_load(config_path.read_text())
    for encoder in config["model"]["init_args"]["encoders"].values():
        encoder["init_args"].update(depth=1, width=24, heads=2)
    config["model"]["init_args"]["encoders"]["visual"]["init_args"]["image_size"] = 32
    # One batch of 8 holds the whole train split (8 clips less the carved validation ones): one step.
    config["data"]["init_args"].update(root=str(tmp_path / "data"), image_size=32, batch_size=8, num_workers=0)
    config["trainer"]["max_epochs"] = 1
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"] == "pdmp_lightning.PDMPCallback":
            callback["init_args"]["start_epoch"] = 0  # modulate the one step
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(config))
    cli = main(
        [
            "fit",
            "--config",
            str(small),
            "--config",
            csv_logger_override(tmp_path),
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ]
    )
    assert cli.trainer.global_step == 1
    assert json.loads((Path(cli.trainer.log_dir) / "results.json").read_text())["test"]["test_accuracy"] >= 0
