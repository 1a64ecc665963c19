"""The CLI as a user runs it: a real process, real exit codes, real output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from edgesplit.cli import app, main
from edgesplit.cli_options import Number

PLAN_KEYS = {"model", "strategy", "weight", "edge", "conditions", "split_point", "predicted",
             "candidates", "pareto"}
ROW_KEYS = {"split_point", "layer", "edge_s", "comm_s", "cloud_s", "latency_s", "cost_usd",
            "offload_bytes"}


def edgesplit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgesplit.cli", *args], capture_output=True,
                          text=True, timeout=300,
                          env=os.environ | {"COLUMNS": "200"} | (env or {}))


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
    (["plan", "mnist_cnn", "--weight", "1.5"], "'--weight': 1.5 is not in the range 0<=x<=1"),
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


def test_profile_names_where_it_saved_on_one_line_however_long(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / ("a-long-folder-name-" * 4) / "mnist_cnn-profile.json"
    assert main(["profile", "mnist_cnn", "--repeats", "1", "--warmup", "0", "--clocks", "",
                 "--out", str(out)]) == 0
    assert f"saved {out}\n" in capsys.readouterr().out  # copied from a pipe or an 80-column log


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
    assert "Invalid value for '--log': cannot write" in capsys.readouterr().err


def test_edge_run_refuses_a_misconfigured_cloud_but_waits_for_a_missing_one(
        tmp_path: Path, mnist_profile_file: Path) -> None:
    from edgesplit.testbed.processes import CloudProcess, free_port

    base = ["edge", "run", "--model", "mnist_cnn", "--sample", "--count", "2",
            "--profile", str(mnist_profile_file)]
    with CloudProcess("--token", "right", models="alexnet") as cloud:
        wrong_token = edgesplit(*base, "--cloud", cloud.url, "--token", "wrong")
        assert wrong_token.returncode == 2
        assert "refused this edge's credentials" in wrong_token.stderr
        # Asked before profiling: no profile given, none cached, and none measured.
        unserved = edgesplit(*base[:5], "--cloud", cloud.url, "--token", "right",
                             env={"EDGESPLIT_CACHE_DIR": str(tmp_path / "cache")})
        assert unserved.returncode == 2 and "does not serve 'mnist_cnn'" in unserved.stderr
        assert "profiling" not in unserved.stderr and not (tmp_path / "cache").exists()
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


def test_plan_reproduces_a_codec_choice(mnist_profile_file: Path) -> None:
    """``plan --codec`` takes what ``edge run --codec`` takes; each row says its codec."""
    base = ["plan", "mnist_cnn", "--profile", str(mnist_profile_file), "--bandwidth-kbps", "500"]
    plans = {codec: json.loads(edgesplit(*base, "--codec", codec, "--json").stdout)
             for codec in ("raw", "int8", "auto")}
    assert {row["codec"] for row in plans["raw"]["candidates"]} == {"raw"}
    assert {row["codec"] for row in plans["int8"]["candidates"]} == {"int8"}
    assert plans["int8"]["candidates"][0]["offload_bytes"] < (
        plans["raw"]["candidates"][0]["offload_bytes"])
    auto = plans["auto"]["candidates"]
    assert all(row["latency_s"] <= min(plans[c]["candidates"][i]["latency_s"] for c in ("raw",
               "int8")) for i, row in enumerate(auto))  # each split point's fastest codec
    assert plans["auto"]["codec"] == auto[plans["auto"]["split_point"]]["codec"]
    table = edgesplit(*base, "--codec", "int8")
    assert table.returncode == 0, table.stderr
    assert "codec" in table.stdout and "int8" in table.stdout
    assert ", int8: " in table.stdout.splitlines()[-1]


@pytest.mark.parametrize(("args", "message"), [
    (["--codec", "int9"], "unknown codec 'int9'"),
    (["--codec", "int8", "--predictor", "thesis"], "raw float32 tensors only"),
])
def test_plan_codec_mistakes_are_one_line(args: list[str], message: str, mnist_profile_file: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "mnist_cnn", "--profile", str(mnist_profile_file), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def number_options(*command: str) -> list[click.Option]:
    found: click.Command = app
    for name in command:
        assert isinstance(found, click.Group)
        found = found.commands[name]
    return [p for p in found.params if isinstance(p, click.Option)
            and isinstance(p.type, click.types._NumberParamTypeBase)]


def out_of_range(kind: click.IntRange | click.FloatRange) -> list[str]:
    """Values the option must refuse: past each end of its range, and for floats nan and inf."""
    values = [] if isinstance(kind, click.IntRange) else ["nan", "inf"]
    if kind.min is not None:
        values.append(str(kind.min if kind.min_open else kind.min - 1))
    if kind.max is not None:
        values.append(str(kind.max if kind.max_open else kind.max + 1))
    return values


NUMBERS = [(command, option) for command in (("plan",), ("edge", "run"))
           for option in number_options(*command)]
REQUIRED = {("plan",): ["mnist_cnn"], ("edge", "run"): ["--model", "mnist_cnn", "--sample"]}


@pytest.mark.parametrize(("command", "option"), NUMBERS,
                         ids=[f"{' '.join(c)} {o.opts[0]}" for c, o in NUMBERS])
def test_every_number_out_of_range_names_its_flag(
        command: tuple[str, ...], option: click.Option,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Each number of plan and edge run has a range (shown in --help) and a finite value, so a
    mistake is refused where it is parsed, naming the flag (not the core's field name)."""
    flag = option.opts[0]
    assert isinstance(option.type, click.IntRange | Number), f"{flag} has no range"
    for value in out_of_range(option.type):
        assert main([*command, *REQUIRED[command], flag, value]) == 2, (flag, value)
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"edgesplit: error: Invalid value for '{flag}': "), lines
    assert "_" not in flag


def test_plan_help_shows_the_clock_range() -> None:
    result = edgesplit("plan", "--help")
    assert "--clock-ghz FLOAT RANGE" in result.stdout and "x>0" in result.stdout


def test_a_refused_command_leaves_no_folder_its_path_check_made(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The check makes the folders an --out lacks and removes them again: a command that stops
    after it (here at an unknown model) leaves nothing behind."""
    assert main(["profile", "lenet", "--out", str(tmp_path / "a" / "b" / "p.json")]) == 2
    assert "unknown model 'lenet'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
