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


def test_plan_json_is_one_line_when_piped_and_indented_on_request(
        mnist_profile_file: Path) -> None:
    base = ["plan", "mnist_cnn", "--profile", str(mnist_profile_file), "--json"]
    piped = edgesplit(*base)
    indented = edgesplit(*base, "--indent", "2")
    assert piped.stdout.count("\n") == 1  # a pipe gets the one line it always got
    assert indented.stdout.startswith('{\n  "model": "mnist_cnn"')
    assert json.loads(indented.stdout) == json.loads(piped.stdout)


def test_plan_table_marks_the_choice(mnist_profile_file: Path) -> None:
    result = edgesplit("plan", "mnist_cnn", "--profile", str(mnist_profile_file),
                       "--strategy", "slo", "--deadline-ms", "0.001")
    assert result.returncode == 0, result.stderr
    assert "◀" in result.stdout and "softmax" in result.stdout
    assert "no split meets the deadline" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["plan", "lenet"], "unknown model 'lenet': expected one of"),
    (["plan", "mnist_cnn", "--bandwidth-kbps", "-5"], "-5.0 is not in the range x>0"),
    (["plan", "mnist_cnn", "--bandwidth-kbps", "fast"], "'fast' is not a valid float"),
    (["plan", "mnist_cnn", "--weight", "1.5"], "weight must be between 0 and 1"),
    (["plan", "mnist_cnn", "--strategy", "slo"], "needs a deadline: give --deadline-ms"),
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
    assert result.stderr.strip() == ("edgesplit: error: Invalid value for '--rtt-ms': -1.0 is not "
                                     "in the range x>=0. (see `edgesplit plan --help`)")


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


def test_edge_run_refuses_a_misconfigured_cloud_but_waits_for_a_missing_one(
        tmp_path: Path, mnist_profile_file: Path) -> None:
    from edgesplit.testbed.processes import CloudProcess, free_port

    base = ["edge", "run", "--model", "mnist_cnn", "--sample", "--count", "2",
            "--profile", str(mnist_profile_file)]
    with CloudProcess("--token", "right", models="alexnet") as cloud:
        wrong_token = edgesplit(*base, "--cloud", cloud.url, "--token", "wrong")
        assert wrong_token.returncode == 2
        assert "refused this edge's credentials" in wrong_token.stderr
        unserved = edgesplit(*base, "--cloud", cloud.url, "--token", "right")
        assert unserved.returncode == 2 and "does not serve 'mnist_cnn'" in unserved.stderr
    for url in ("127.0.0.1:8000", "ftp://x"):  # one line, and nothing before it
        malformed = edgesplit(*base, "--cloud", url)
        assert malformed.returncode == 2
        assert malformed.stderr.startswith(f"edgesplit: error: the cloud URL {url!r} is not an "
                                           "http:// or https:// address")
        assert malformed.stderr.count("\n") == 1
    missing = edgesplit(*base[:5], "--count", "3", "--profile", str(mnist_profile_file),
                        "--cloud", f"http://127.0.0.1:{free_port()}", "--rtt-ms", "25")
    assert missing.returncode == 0
    # What it assumes, then the error once; the runtime's own warning does not repeat it.
    assert missing.stderr.splitlines()[0] == (
        "edgesplit: assuming 7200 kbit/s (--bandwidth-kbps) until measured")
    assert missing.stderr.count("cannot reach the cloud") == 1, missing.stderr
    assert "warning: cannot reach the cloud" in missing.stderr
    assert "finishing on the edge" not in missing.stderr
    lines = missing.stdout.splitlines()
    assert "3 inferences, 0 finished in the cloud" in lines[-1]
    assert "-> edge (see the warning)" in lines[0]
    assert all("-> edge (cloud offline)" in line for line in lines[1:-1])
    assert "cannot reach" not in missing.stdout
    for result in (wrong_token, unserved, malformed, missing):
        assert "Traceback" not in result.stderr


def test_edge_run_goes_through_a_folder_once_and_names_each_answer(
        tmp_path: Path, mnist_profile_file: Path) -> None:
    from PIL import Image

    for name in ("a.png", "b.png", "c.png"):
        Image.new("L", (28, 28), 0).save(tmp_path / name)
    result = edgesplit("edge", "run", "--model", "mnist_cnn", "--input", str(tmp_path),
                       "--profile", str(mnist_profile_file))
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()[:3]] == [
        "#1 a.png", "#2 b.png", "#3 c.png"]
    assert "class " in result.stdout and "3 inferences" in result.stdout


def test_report_and_key_file_mistakes_are_one_line(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "no measurement log in" in capsys.readouterr().err
    (tmp_path / "keys").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    assert main(["cloud", "serve", "--hmac-keys", str(tmp_path / "keys")]) == 2
    assert "is not text" in capsys.readouterr().err


def test_a_busy_port_is_one_line_before_any_model_loads(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["cloud", "serve", "--port", str(port), "--models", "vgg16"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_version() -> None:
    result = edgesplit("--version")
    assert result.returncode == 0 and "version" in result.stdout
