"""One source of configuration: serve's options are ServerSettings' fields; the option groups
plan and edge run share (objective, prices, link, profile) behave the same in both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgesplit.cli import app, main, server_settings
from edgesplit.cloud.settings import ServerSettings


def test_every_setting_is_an_option_of_serve_with_its_default_and_help() -> None:
    shown = CliRunner().invoke(app, ["cloud", "serve", "--help"], terminal_width=200).output
    for name, field in ServerSettings.model_fields.items():
        assert f"--{name.replace('_', '-')}" in shown, name
        assert field.description and field.description.split()[0] in shown, name
    assert "[default: 32]" in shown and "alexnet,vgg16,mnist_cnn,resnet18" in shown


def test_each_tail_uses_its_share_of_the_cpus_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """One worker with torch on every core the server may use by default (batched tails are
    bound by reading weights); N workers share the cores; a Ray replica reserves one."""
    monkeypatch.delenv("EDGESPLIT_TORCH_THREADS", raising=False)
    monkeypatch.delenv("EDGESPLIT_WORKERS", raising=False)
    cpus = len(os.sched_getaffinity(0))
    assert ServerSettings().workers == 1 and ServerSettings().tail_threads == cpus
    assert ServerSettings(workers=2).tail_threads == max(1, cpus // 2)
    assert ServerSettings(workers=4 * cpus).tail_threads == 1
    assert ServerSettings(workers=2, torch_threads=3).tail_threads == 3
    assert ServerSettings(backend="ray").tail_threads == 1
    assert ServerSettings(backend="ray", torch_threads=2).tail_threads == 2


def test_a_flag_beats_a_variable_which_beats_the_default(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setenv("EDGESPLIT_MAX_PENDING", "7")
    monkeypatch.setenv("EDGESPLIT_MODELS", "mnist_cnn, alexnet")
    settings = server_settings({"max_pending": None, "workers": 3, "models": None})
    assert (settings.max_pending, settings.workers, settings.models) == (7, 3,
                                                                        ["mnist_cnn", "alexnet"])
    assert settings.max_batch == ServerSettings.model_fields["max_batch"].default
    (tmp_path / "token").write_text("from-a-file\n")
    monkeypatch.setenv("EDGESPLIT_TOKEN", "from-a-variable")
    with_file = server_settings({"token_file": tmp_path / "token"})
    assert with_file.token is not None and with_file.token.get_secret_value() == "from-a-file"


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--max-pending", "0"], {}, "--max-pending (or EDGESPLIT_MAX_PENDING): Input should be "
                                 "greater than or equal to 1"),
    ([], {"EDGESPLIT_WORKERS": "many"}, "--workers (or EDGESPLIT_WORKERS): Input should be a "
                                        "valid integer"),
    (["--models", "alexnet,lenet"], {}, "unknown model 'lenet': expected one of"),
    ([], {"EDGESPLIT_MODELS": "lenet"}, "unknown model 'lenet'"),
    (["--log-level", "loud"], {}, "Invalid value for '--log-level'"),
])
def test_a_bad_setting_is_one_line_before_anything_loads(
        args: list[str], env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["cloud", "serve", *args]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1, error


def edge_run(*args: str, profile: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "edgesplit.cli", "edge", "run", "--model", "mnist_cnn",
         "--sample", "--count", "2", "--json", "--profile", str(profile), *args],
        capture_output=True, text=True, timeout=300, env=os.environ | {"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_edge_run_prices_its_inferences_with_the_prices_given(mnist_profile_file: Path) -> None:
    """Everything runs on a rented edge (no cloud): each inference costs its edge time at the
    edge's price, here one dollar a second."""
    rows = edge_run("--edge", "rent", "--edge-usd-per-hour", "3600", profile=mnist_profile_file)
    for row in rows:
        assert row["finished"] == "edge"
        assert row["cost_usd"] == pytest.approx(row["edge_s"], rel=1e-9)


def test_plan_and_edge_run_share_their_option_groups() -> None:
    def options(*command: str) -> set[str]:
        shown = CliRunner().invoke(app, [*command, "--help"], terminal_width=200).output
        return {word.rstrip(",") for word in shown.split() if word.startswith("--")}

    shared = {"--weight", "--edge", "--strategy", "--predictor", "--deadline-ms",
              "--max-cost-usd", "--edge-usd-per-hour", "--cloud-usd-per-hour",
              "--transfer-usd-per-gb", "--edge-power-w", "--energy-usd-per-kwh",
              "--bandwidth-kbps", "--rtt-ms", "--profile", "--cloud-profile", "--threads"}
    assert shared <= options("plan") and shared <= options("edge", "run")
