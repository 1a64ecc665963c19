"""The CLI as a user runs it: a real process, real exit codes, real output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgesplit.cli import main

PLAN_KEYS = {"model", "strategy", "weight", "edge", "conditions", "split_point", "predicted",
             "candidates", "pareto"}
ROW_KEYS = {"split_point", "layer", "edge_s", "comm_s", "cloud_s", "latency_s", "cost_usd",
            "offload_bytes"}


def edgesplit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgesplit.cli", *args], capture_output=True,
                          text=True, timeout=300, env=os.environ | {"COLUMNS": "200"})


def test_plan_json_has_the_documented_shape(mnist_profile_file: Path) -> None:
    result = edgesplit("plan", "mnist_cnn", "--profile", str(mnist_profile_file), "--json",
                       "--bandwidth-kbps", "7200", "--rtt-ms", "40", "--clock-ghz", "1.5",
                       "--edge", "rent", "--weight", "0.5", "--strategy", "rank")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan.keys() >= PLAN_KEYS
    assert plan["conditions"] == {"bandwidth_kbps": 7200, "rtt_ms": 40, "clock_ghz": 1.5}
    assert (plan["model"], plan["strategy"], plan["edge"]) == ("mnist_cnn", "rank", "rent")
    assert [row["split_point"] for row in plan["candidates"]] == list(range(10))
    assert all(row.keys() >= ROW_KEYS for row in plan["candidates"])
    chosen = plan["candidates"][plan["split_point"]]
    assert plan["predicted"] == {k: v for k, v in chosen.items()
                                 if k not in ("split_point", "layer", "codec")}
    assert set(plan["pareto"]) <= set(range(10)) and plan["pareto"]


@pytest.mark.parametrize("strategy", ["latency", "cost", "weighted"])
def test_plan_with_the_thesis_predictor(mnist_profile_file: Path, strategy: str) -> None:
    result = edgesplit("plan", "mnist_cnn", "--profile", str(mnist_profile_file), "--json",
                       "--predictor", "thesis", "--strategy", strategy)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    latencies = [row["latency_s"] for row in plan["candidates"]]
    if strategy == "latency":
        assert latencies[plan["split_point"]] == min(latencies)


def test_plan_table_marks_the_choice(mnist_profile_file: Path) -> None:
    result = edgesplit("plan", "mnist_cnn", "--profile", str(mnist_profile_file),
                       "--strategy", "slo", "--deadline-ms", "0.001")
    assert result.returncode == 0, result.stderr
    assert "◀" in result.stdout and "softmax" in result.stdout
    assert "no split meets the deadline" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["plan", "lenet"], "unknown model 'lenet': expected one of"),
    (["plan", "mnist_cnn", "--bandwidth-kbps", "-5"], "bandwidth_kbps must be more than 0"),
    (["plan", "mnist_cnn", "--bandwidth-kbps", "fast"], "'fast' is not a valid float"),
    (["plan", "mnist_cnn", "--weight", "1.5"], "weight must be between 0 and 1"),
    (["plan", "mnist_cnn", "--strategy", "slo"], "needs a deadline"),
    (["plan", "mnist_cnn", "--edge", "lease"], "'lease' is not one of 'own', 'rent'"),
    (["plan", "mnist_cnn", "--frobnicate"], "No such option"),
    (["plan", "mnist_cnn", "--profile", "/nonexistent.json"], "cannot read profile"),
    (["profile", "mnist_cnn", "--clocks", "a,b"], "--clocks takes numbers"),
    (["launch"], "No such command 'launch'"),
])
def test_user_errors_are_one_line_and_exit_code_2(args: list[str], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    lines = printed.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgesplit: error:")
    assert message in lines[0]


def test_a_user_error_from_a_real_process_has_no_traceback() -> None:
    result = edgesplit("plan", "mnist_cnn", "--rtt-ms", "-1")
    assert result.returncode == 2
    assert result.stderr.strip() == "edgesplit: error: rtt_ms must be 0 or more, got -1"


def test_profile_command_writes_a_profile(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    result = edgesplit("profile", "mnist_cnn", "--repeats", "2", "--warmup", "0", "--clocks", "",
                       "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["model"] == "mnist_cnn" and len(printed["layers"]) == 9
    assert json.loads(out.read_text()) == printed


def test_models_lists_the_zoo() -> None:
    result = edgesplit("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["model"]: row for row in json.loads(result.stdout)}
    assert {name: row["split_points"] for name, row in rows.items()} == {
        "alexnet": 20, "vgg16": 38, "mnist_cnn": 10, "resnet18": 69}
    assert rows["mnist_cnn"]["parameters"] == 21_840


def test_a_trust_file_that_is_not_a_certificate_is_one_clear_error(
        tmp_path: Path, mnist_profile_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate")
    assert main(["edge", "run", "--cloud", "https://127.0.0.1:9", "--model", "mnist_cnn",
                 "--sample", "--cacert", str(junk), "--profile", str(mnist_profile_file)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("edgesplit: error: cannot use") and "PEM" in error
    assert main(["edge", "run", "--model", "mnist_cnn", "--sample", "--log",
                 str(junk / "below-a-file"), "--profile", str(mnist_profile_file)]) == 2
    assert "cannot write the measurement log" in capsys.readouterr().err
