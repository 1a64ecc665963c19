"""An experiment's folder under misuse: two runs on one ``--out`` (the second is refused while
the first goes on), and resuming over damaged or foreign files (refused in one line before
anything starts, and nothing of what was measured is deleted)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgesplit.core import zoo
from edgesplit.errors import InvalidArgument
from edgesplit.evaluation.experiment import Experiment, ExperimentConfig, lock_folder
from edgesplit.evaluation.runs import COLUMNS, RunsFile, Unit, read_runs
from edgesplit.testbed import netns

root = pytest.mark.skipif(
    os.geteuid() != 0 or not netns.CGROUP_CPU.is_dir(),
    reason="needs root and the cgroup v1 cpu controller (network namespaces, tc, cgroups)")
QUICK = ["experiment", "--quick", "--settings", "2"]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgesplit.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=os.environ | {"COLUMNS": "200"})


def _config(**changes: Any) -> ExperimentConfig:
    return ExperimentConfig.quick(settings=2, **changes)


def _folder(out: Path, config: ExperimentConfig | None = None, rows: int = 20) -> Path:
    """A folder as a killed ``experiment --quick --settings 2`` leaves it: its config.json,
    written by the experiment's own code, and ``rows`` rows of setting 0's oracle."""
    config = config or _config()
    out.mkdir(parents=True, exist_ok=True)
    pools, settings = config.draw()
    experiment = Experiment(config, out)
    experiment.record = experiment._config_record(pools, settings)
    experiment.record["testbed"] = {"mode": "netns", "tag": "tbf0"}
    experiment._save()
    model, s = config.models[0], settings[0]
    store = RunsFile(out / "runs.csv")
    store.load([])
    for sp in range(rows // 2):
        store.append([{"model": model, "edge": edge, "predictor": "", "strategy": "oracle",
                       "setting": 0, "repeat": 0, "bandwidth_kbps": s.bandwidth_kbps,
                       "clock_ghz": s.clock_ghz, "rtt_ms": s.rtt_ms, "split_point": sp,
                       "codec": "raw", "predicted_latency_s": "", "latency_s": 0.01 + sp / 1e3,
                       "cost_usd": 1e-7, "edge_s": 0.004, "comm_s": 0.004, "cloud_s": 0.002,
                       "sent_bytes": 3000, "method": "e2e"} for edge in ("own", "rent")])
    return out


def _damage_row(out: Path, column: str, value: str, line: int = 5) -> None:
    lines = (out / "runs.csv").read_text().splitlines(keepends=True)
    cells = lines[line - 1].rstrip("\n").split(",")
    cells[COLUMNS.index(column)] = value
    lines[line - 1] = ",".join(cells) + "\n"
    (out / "runs.csv").write_text("".join(lines))


def _set_config(out: Path, text: str) -> None:
    (out / "config.json").write_text(text)


DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "config truncated": (lambda out: _set_config(out, (out / "config.json").read_text()[:300]),
                         r"config.json cannot be read \(not JSON: "),
    "config a list": (lambda out: _set_config(out, "[1, 2]"),
                      r"config.json is not a whole edgesplit-experiment/2 record"),
    "config empty": (lambda out: _set_config(out, ""), r"config.json cannot be read"),
    "config testbed a string": (
        lambda out: _set_config(out, json.dumps(json.loads((out / "config.json").read_text())
                                                | {"testbed": "x"})),
        r"is not a whole edgesplit-experiment/2 record"),
    "config settings edited": (
        lambda out: _set_config(out, (out / "config.json").read_text().replace(
            '"index": 1', '"index": 7')), r"holds settings other than its seed draws"),
    "config missing": (lambda out: (out / "config.json").unlink(),
                       r"holds a runs.csv but no config.json"),
    "setting=x": (lambda out: _damage_row(out, "setting", "x"),
                  r"runs.csv line 5: setting='x', not a whole number below 2"),
    "empty split_point": (lambda out: _damage_row(out, "split_point", ""),
                          r"runs.csv line 5: split_point='', not a whole number below 10"),
    "split point past the model": (lambda out: _damage_row(out, "split_point", "10", 21),
                                   r"runs.csv line 21: split_point='10'"),
    "repeat of no run": (lambda out: _damage_row(out, "repeat", "2"),
                         r"line 5: repeat='2', not a whole number below 2"),
    "NaN latency": (lambda out: _damage_row(out, "latency_s", "nan"),
                    r"line 5: impossible times \(latency_s=nan"),
    "negative latency": (lambda out: _damage_row(out, "cloud_s", "-0.5"),
                         r"line 5: impossible times .*cloud_s=-0.5"),
    "unknown strategy": (lambda out: _damage_row(out, "strategy", "XX"),
                         r"line 5: strategy='XX', not one of"),
    "short row": (lambda out: _damage_row(out, "method", "e2e,extra,fields"),
                  r"line 5: 19 fields expected"),
    "foreign header": (lambda out: (out / "runs.csv").write_text(
        "a,b,c\n" + "".join((out / "runs.csv").read_text().splitlines(keepends=True)[1:])),
        r"runs.csv is not an edgesplit experiment's runs.csv"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_folder_is_refused_before_anything_starts(tmp_path: Path,
                                                            damage: str) -> None:
    out = _folder(tmp_path / "out")
    spoil, said = DAMAGE[damage]
    spoil(out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    began = time.monotonic()
    done = _cli(*QUICK, "--out", str(out), "--testbed", "userspace")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("edgesplit: error: "), done.stderr
    assert re.search(said, done.stderr), done.stderr
    # Nothing started (no bench's logs, no profiling) and nothing changed or deleted.
    assert not (out / "logs").exists() and not (out / "profiles").exists()
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()
             if p.name != "experiment.lock"}
    assert after == before
    assert time.monotonic() - began < 60  # refused at once, not after a calibration


@pytest.mark.parametrize("other", ["models=alexnet", "seed=1"])
def test_rows_of_another_experiment_are_refused_not_emptied(tmp_path: Path, other: str) -> None:
    name, value = other.split("=")
    foreign = _folder(tmp_path / "foreign", _config(**{name: (value,) if name == "models"
                                                       else int(value)}))
    out = _folder(tmp_path / "out", rows=0)
    (out / "runs.csv").write_bytes((foreign / "runs.csv").read_bytes())
    done = _cli(*QUICK, "--out", str(out), "--testbed", "userspace")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert ("model 'alexnet' is not one of this experiment's (mnist_cnn)" if name == "models"
            else "another experiment's rows") in done.stderr
    assert len(read_runs(out / "runs.csv")) == 20  # not emptied


def test_a_well_formed_folder_passes_the_checks(tmp_path: Path) -> None:
    out = _folder(tmp_path / "out")
    config = _config()
    _, settings = config.draw()
    RunsFile(out / "runs.csv").check(config, settings)  # raises nothing
    with open(out / "runs.csv", "a") as sink:
        sink.write("mnist_cnn,own,,oracle,1,0,70")  # what a SIGKILL mid-write leaves
    RunsFile(out / "runs.csv").check(config, settings)
    assert zoo.get_spec("mnist_cnn").split_points == 10


def test_loading_refuses_rows_no_unit_expects_and_drops_only_a_torn_last_unit(
        tmp_path: Path) -> None:
    out = _folder(tmp_path / "out")
    store = RunsFile(out / "runs.csv")
    units = [Unit("mnist_cnn", 0, 0, "oracle", split_point=sp) for sp in range(10)]
    assert len(store.load(units)) == 10
    with pytest.raises(InvalidArgument, match=r"rows this experiment does not measure"):
        store.load(units[:9])  # split point 9's rows belong to no unit of this run
    text = (out / "runs.csv").read_text()
    lines = text.splitlines(keepends=True)
    (out / "runs.csv").write_text("".join(lines[:-1]))  # the last unit torn: a crash's
    assert len(store.load(units)) == 9 and len(read_runs(out / "runs.csv")) == 18
    (out / "runs.csv").write_text("".join(lines[:3] + lines[4:]))  # torn in the middle
    with pytest.raises(InvalidArgument, match="unfinished units before its last one"):
        store.load(units)
    assert (out / "runs.csv").read_text() == "".join(lines[:3] + lines[4:])  # kept as it was


def test_the_folder_lock_is_held_for_a_run_and_freed_with_its_process(tmp_path: Path) -> None:
    with lock_folder(tmp_path), pytest.raises(
            InvalidArgument, match=rf"{tmp_path} is in use by another experiment \(pid "
            rf"{os.getpid()}\): wait for it"), lock_folder(tmp_path):
        pass
    with lock_folder(tmp_path):  # released on leaving
        pass
    # A holder killed with SIGKILL frees it: flock dies with the process.
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import "
                               "Path; from edgesplit.evaluation.experiment import lock_folder\n"
                               f"with lock_folder(Path({str(tmp_path)!r})):\n"
                               "    print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    refused = _cli(*QUICK, "--out", str(tmp_path), "--testbed", "userspace")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert f"is in use by another experiment (pid {holder.pid})" in refused.stderr
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with lock_folder(tmp_path):
        pass


@root
def test_a_second_experiment_on_one_folder_is_refused_while_the_first_goes_on(
        tmp_path: Path) -> None:
    out = tmp_path / "shared"
    command = [sys.executable, "-m", "edgesplit.cli", *QUICK, "--out", str(out),
               "--testbed", "netns"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tag = ""
    try:
        tag = _wait_for_testbed(first, out)
        for testbed in ("netns", "userspace", "auto"):
            second = _cli(*QUICK, "--out", str(out), "--testbed", testbed)
            assert second.returncode == 2, second.stderr
            assert second.stderr.count("\n") == 1, second.stderr
            assert f"{out} is in use by another experiment (pid {first.pid})" in second.stderr
        # The first goes on: its testbed is whole and it is still measuring.
        found = netns.status(tag)
        assert sorted(found["namespaces"]) == [f"esf-{tag}-c", f"esf-{tag}-e"]
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        if tag:
            netns.teardown(tag)
    # Its lock died with it: a resume gets past the lock (to the options check, here).
    after = _cli("experiment", "--quick", "--settings", "3", "--out", str(out))
    assert after.returncode == 2 and "holds an experiment with settings=2, not 3" in after.stderr


def _wait_for_testbed(runner: subprocess.Popen[bytes], out: Path) -> str:
    """The tag of ``runner``'s testbed once its namespaces exist."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and runner.poll() is None:
        try:
            tag = str(json.loads((out / "config.json").read_text())["testbed"]["tag"])
        except (OSError, ValueError, KeyError):
            tag = ""
        if tag and len(netns.status(tag)["namespaces"]) == 2:
            return tag
        time.sleep(0.1)
    raise AssertionError("the first experiment never brought its testbed up")


@pytest.mark.parametrize(("suite", "flag", "named"), [
    ("thesis", ["--traces", "step-down"], "--traces"),
    ("wide", ["--edges", "own"], "--edges"),
    ("dynamic", ["--settings", "4", "--oracle", "e2e"], "--settings, --oracle"),
])
def test_a_suite_refuses_the_options_it_has_no_use_for(tmp_path: Path, suite: str,
                                                        flag: list[str], named: str) -> None:
    done = _cli(*QUICK, "--suite", suite, *flag, "--out", str(tmp_path / "s"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"the {suite} suite does not use {named}: leave" in done.stderr
    assert not (tmp_path / "s").exists()


def test_the_wide_suite_refuses_the_thesis_knobs_and_records_its_draws(tmp_path: Path) -> None:
    for flag in (["--rtt-ms", "50"], ["--edge-speed", "0.5"]):
        done = _cli(*QUICK, "--suite", "wide", *flag, "--out", str(tmp_path / "w"))
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "the wide suite draws each setting's round trip and edge speed" in done.stderr
    assert not (tmp_path / "w" / "config.json").exists()
    config = ExperimentConfig.of_suite("wide")
    assert config.models == ("alexnet", "vgg16", "mnist_cnn", "resnet18")
    assert (config.settings, config.repeats) == (20, 10)
    out = _folder(tmp_path / "out", _config(suite="wide"), rows=0)
    record = json.loads((out / "config.json").read_text())
    assert record["suite"] == "wide" and "ranges" in record and "pools" not in record
    assert {"rtt_ms", "jitter_ms", "edge_speed"} <= set(record["settings"][0])
