"""The root testbed and the experiment on it: set-up and tear-down (also after SIGKILL), the
self-checks (and that they fail when the knobs do not work), `--quick` end to end, resumption,
and the forced split of the edge runtime."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgesplit import errors
from edgesplit.core import zoo
from edgesplit.core.planning import Objective
from edgesplit.edge.factory import EdgeOptions, build_runtime
from edgesplit.edge.sensors import FixedClock
from edgesplit.errors import InvalidArgument
from edgesplit.evaluation.experiment import ExperimentConfig, _slowdown, plan_units
from edgesplit.evaluation.runs import (
    COMPRESSED,
    EDGES,
    key_of,
    predictors,
    read_runs,
    strategies,
)
from edgesplit.measuring.store import read_profile
from edgesplit.testbed import netns
from edgesplit.testbed.bench import NetnsBench, check_clock, check_rate, share_of
from edgesplit.testbed.emulation import ShareMap
from edgesplit.testbed.processes import CloudProcess

root = pytest.mark.skipif(
    os.geteuid() != 0 or not netns.CGROUP_CPU.is_dir(),
    reason="needs root and the cgroup v1 cpu controller (network namespaces, tc, cgroups)")
STRATEGY_ROWS = len(EDGES) * len(predictors()) * len(strategies())


def _leftovers(tag: str) -> dict[str, list[str]]:
    return netns.status(tag)


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgesplit.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=os.environ | {"COLUMNS": "200"})


@root
def test_testbed_is_set_up_and_torn_down_even_on_an_error() -> None:
    with pytest.raises(RuntimeError, match="boom"), netns.NetnsTestbed("tsta") as bed:
        found = _leftovers("tsta")
        assert found["namespaces"] == ["esf-tsta-e", "esf-tsta-c"] or \
            sorted(found["namespaces"]) == ["esf-tsta-c", "esf-tsta-e"]
        assert "esf-tsta-e: esftstae" in found["links"]
        assert any("tbf" in q and "7200Kbit" in q for q in found["qdiscs"])
        bed.set_rate_kbps(3000)
        bed.set_cpu_share(0.4)
        found = _leftovers("tsta")
        assert any("3Mbit" in q for q in found["qdiscs"]), found["qdiscs"]
        assert any("esf-tsta-e quota 4000 us / period 10000 us" in g
                   for g in found["cgroups"]), found["cgroups"]
        raise RuntimeError("boom")
    assert not any(_leftovers("tsta").values())


@root
def test_cli_up_status_down() -> None:
    up = _cli("testbed", "up", "--tag", "tstc", "--bandwidth-kbps", "5000", "--clock-ghz", "0.9")
    try:
        assert up.returncode == 0, up.stderr
        assert "testbed tstc is up" in up.stdout
        found = json.loads(_cli("testbed", "status", "--tag", "tstc", "--json").stdout)
        assert sorted(found["namespaces"]) == ["esf-tstc-c", "esf-tstc-e"]
        assert any("5Mbit" in q for q in found["qdiscs"])
        assert any("quota 6000 us" in g for g in found["cgroups"])
    finally:
        down = _cli("testbed", "down", "--tag", "tstc")
    assert down.returncode == 0, down.stderr
    assert "netns esf-tstc-e" in down.stdout
    assert not any(_leftovers("tstc").values())
    again = _cli("testbed", "down", "--tag", "tstc")
    assert again.returncode == 0 and "nothing to remove" in again.stdout


class _DeafLink(NetnsBench):
    """A testbed whose knobs do not do what they are told: the self-checks must notice."""

    def set_conditions(self, bandwidth_kbps: float, clock_ghz: float) -> None:
        super().set_conditions(bandwidth_kbps * 0.7, 1.5)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsBench]:
    with NetnsBench(["mnist_cnn"], 20.0, tmp_path_factory.mktemp("bench"), "tstb") as bed:
        yield bed
    assert not any(_leftovers("tstb").values())


@root
def test_self_checks_pass_on_a_working_testbed(bench: NetnsBench) -> None:
    rate = check_rate(bench, 6000, 1.5)
    assert rate["passed"], rate
    assert rate["payload_bytes"] == 6000 * 125
    # As the runner does: the quotas calibrated first (a small quota delivers less than it
    # says, and the MNIST CNN's 0.1 ms forwards more so), then two attempts at the check.
    calibration = bench.calibrate_clock("mnist_cnn", [0.6, 1.5])
    assert calibration["model"] == "mnist_cnn" and len(bench.share_map.points) > 1
    clock = _check_clock_twice(bench, "mnist_cnn", 6000, 0.6)
    assert clock["passed"], clock
    assert clock["expected_slowdown"] == 2.5


def _check_clock_twice(bench: NetnsBench, model: str, bandwidth_kbps: float,
                       clock_ghz: float) -> dict[str, Any]:
    """``check_clock`` as the runner uses it: a neighbour's burst may spoil one attempt."""
    clock = check_clock(bench, model, bandwidth_kbps, clock_ghz)
    return clock if clock["passed"] else check_clock(bench, model, bandwidth_kbps, clock_ghz)


@root
def test_self_checks_fail_when_the_knobs_do_not_work(tmp_path: Path) -> None:
    with _DeafLink(["mnist_cnn"], 20.0, tmp_path, "tstd") as deaf:
        rate = check_rate(deaf, 6000, 1.5)
        clock = check_clock(deaf, "mnist_cnn", 6000, 0.6)
        with pytest.raises(errors.TestbedError, match=r"calibrating mnist_cnn at 0\.6 GHz "
                           r"measured a slowdown of [01]\.\d\d three times where the quota "
                           r"sets 2\.50"):
            _slowdown(deaf, "mnist_cnn", 0.6, 1)  # a clock law is never fitted to that
    assert not rate["passed"] and rate["error"] == pytest.approx(1 / 0.7 - 1, abs=0.08)
    assert not clock["passed"] and clock["measured_slowdown"] < 1.5
    assert not any(_leftovers("tstd").values())


def test_clock_to_share_mapping() -> None:
    assert share_of(1.5) == 1.0 and share_of(0.6) == pytest.approx(0.4)
    assert share_of(1.5, 0.25) == 0.25 and share_of(0.6, 0.25) == pytest.approx(0.1)
    assert share_of(6.0, 0.25) == 1.0  # a full core: the native clock of a quarter-speed edge


@pytest.mark.fast
def test_share_map_inverts_what_a_quota_delivers() -> None:
    assert ShareMap().setting_for(0.3) == pytest.approx(0.3)  # uncalibrated: taken as set
    # A quota that loses 0.04 of a core: 0.14 delivers 0.10, 0.29 delivers 0.25.
    lossy = ShareMap(((1.0, 1.0), (0.14, 0.10), (0.29, 0.25), (0.5, 0.46)))
    assert lossy.setting_for(0.10) == pytest.approx(0.14)
    assert lossy.setting_for(0.175) == pytest.approx(0.215)  # between two points
    assert lossy.setting_for(0.08) == pytest.approx(0.12)  # below the lowest: extrapolated
    assert lossy.setting_for(1.0) == 1.0 and ShareMap().setting_for(0.001) == 0.01  # clipped
    # Noise made 0.3 measure slower than 0.2: the map stays monotonic, never inverted.
    noisy = ShareMap(((1.0, 1.0), (0.2, 0.18), (0.3, 0.17), (0.4, 0.36)))
    assert [d for _, d in noisy.points] == [0.18, 0.18, 0.36, 1.0]
    assert 0.3 <= noisy.setting_for(0.25) <= 0.4
    assert noisy.to_dict() == {"set_vs_delivered": [[0.2, 0.18], [0.3, 0.18], [0.4, 0.36],
                                                    [1.0, 1.0]]}
    with pytest.raises(InvalidArgument):
        ShareMap(((0.5, 0.0),))


@root
def test_a_calibrated_quota_keeps_a_quarter_speed_edge_on_its_clocks(tmp_path: Path) -> None:
    # At a quarter of a core, 0.6 GHz is a 1 ms quota per 10 ms period: throttling loses a share
    # of each period, so the quota is measured and corrected before anything is checked.
    with NetnsBench(["alexnet"], 20.0, tmp_path, "tstq", edge_speed=0.25) as slow:
        calibration = slow.calibrate_clock("alexnet", [0.6, 1.5])
        slow.set_conditions(6000, 0.6)
        quota = int((slow.testbed.names.edge_cgroup / "cpu.cfs_quota_us").read_text())
        clock = _check_clock_twice(slow, "alexnet", 6000, 0.6)
    points = calibration["set_vs_delivered"]
    assert calibration["model"] == "alexnet" and len(points) == 7 and points[-1] == [1.0, 1.0]
    # A quota never delivers more than it sets; what shows above it is the noise of the paired
    # full-speed forward, up to a fifth on a busy machine.
    assert all(d <= s * 1.25 for s, d in points), points
    assert quota >= 1000 and clock["expected_slowdown"] == 2.5
    assert clock["passed"], clock


@root
def test_a_slower_edge_keeps_the_clock_ratios(tmp_path: Path) -> None:
    # AlexNet: forwards long enough to span several CFS periods (the MNIST CNN's 0.1 ms
    # forwards also pay for the caches other processes cool while it is throttled).
    with NetnsBench(["alexnet"], 20.0, tmp_path, "tste", edge_speed=0.5) as half:
        half.set_conditions(6000, 1.5)
        quota = (half.testbed.names.edge_cgroup / "cpu.cfs_quota_us").read_text().strip()
        clock = _check_clock_twice(half, "alexnet", 6000, 0.6)
    assert quota == "5000" and half.native_ghz == 3.0
    assert clock["share"] == 0.2 and clock["expected_slowdown"] == 2.5
    assert clock["passed"], clock


@root
def test_quick_experiment_end_to_end_in_interleaved_rounds_then_report(tmp_path: Path) -> None:
    out = tmp_path / "quick"
    done = _cli("experiment", "--quick", "--settings", "2", "--out", str(out), "--testbed",
                "netns")
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["parameters"]["models"] == ["mnist_cnn"] and config["suite"] == "thesis"
    assert config["parameters"]["repeats"] == 2
    assert len(config["settings"]) == 2 and len(config["pools"]["bandwidths_kbps"]) == 30
    assert config["testbed"]["mode"] == "netns" and config["self_checks"][-1]["passed"]
    assert {c["check"] for c in config["self_checks"][-1]["checks"]} == {"rate", "clock"}
    assert config["oracle_methods"] == {"mnist_cnn": "e2e"} and config["runs"]
    codecs = config["compressed_codecs"]["mnist_cnn"]
    assert "raw+zstd" in codecs  # lossless: always kept
    assert not any(_leftovers(config["testbed"]["tag"]).values())
    rows = read_runs(out / "runs.csv")
    # 2 settings x 2 rounds x (10 split points x 2 edges + one row per edge, predictor and
    # strategy + 2 rows per compressed-input codec)
    assert len(rows) == 2 * 2 * (10 * 2 + STRATEGY_ROWS + 2 * len(codecs))
    assert all(float(r["latency_s"]) > 0 and r["rtt_ms"] == "20.0" for r in rows)
    chosen = [r for r in rows if r["strategy"] not in ("oracle", COMPRESSED)]
    assert {(r["edge"], r["predictor"], r["strategy"]) for r in chosen} == {
        (e, p, s) for e in EDGES for p in predictors() for s in strategies()}
    assert {"OC", "OL", "CL"} <= set(strategies())  # the thesis's three, under its names
    assert all(r["split_point"] == "9" for r in chosen  # owned edge: cheapest is all-edge
               if r["edge"] == "own" and r["strategy"] == "OC")
    squeezed = [r for r in rows if r["strategy"] == COMPRESSED]
    assert {(r["codec"], r["split_point"], r["predictor"]) for r in squeezed} == {
        (c, "0", "none") for c in codecs}
    # The rows came in the seeded, interleaved order: round by round, shuffled within a round.
    profiles = {"mnist_cnn": read_profile(out / "profiles" / "mnist_cnn.json")}
    experiment = ExperimentConfig.quick(settings=2)
    planned = [u.key for u in plan_units(experiment, experiment.draw()[1], profiles,
                                         config["oracle_methods"], {"mnist_cnn": codecs})]
    assert list(dict.fromkeys(key_of(r) for r in rows)) == planned
    first_round = [k for k in planned if k[1:3] == (0, 0)]
    assert first_round != sorted(first_round, key=lambda k: k[3])  # kinds are mixed
    report = _cli("report", str(out))
    assert report.returncode == 0, report.stderr
    for name in ("report.md", "table-7-1.csv", "effectiveness.csv", "pareto.csv",
                 "slopes.png", "weights.png", "clock-choices.png",
                 "predicted-vs-measured-mnist_cnn.png", "pareto-mnist_cnn.png"):
        assert (out / "report" / name).stat().st_size > 0, name


@root
def test_an_own_model_file_runs_the_quick_experiment(tmp_path: Path) -> None:
    """The README's own model: exported by docs/examples/my_net.py, then the experiment and
    its report on the testbed, the cloud and the edge worker loading the .pt2 file."""
    example = Path(__file__).resolve().parent.parent / "docs" / "examples" / "my_net.py"
    made = subprocess.run([sys.executable, str(example)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    out = tmp_path / "own"
    done = _cli("experiment", "--quick", "--settings", "1", "--models",
                str(tmp_path / "my_net.pt2"), "--out", str(out), "--testbed", "netns")
    assert done.returncode == 0, done.stderr
    rows = read_runs(out / "runs.csv")
    assert {r["model"] for r in rows} == {"my_net"}
    n = read_profile(out / "profiles" / "my_net.json").n_layers + 1
    assert {int(r["split_point"]) for r in rows if r["strategy"] == "oracle"} == set(range(n))
    assert {r["predictor"] for r in rows if r["strategy"] == "OL"} == set(predictors())
    report = _cli("report", str(out))
    assert report.returncode == 0, report.stderr
    assert "my_net" in (out / "report" / "report.md").read_text()


@root
def test_a_killed_run_is_cleaned_up_and_resumes_without_duplicates(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "edgesplit.cli", "experiment", "--quick", "--settings", "3",
               "--out", str(out), "--testbed", "netns"]
    runner = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = out / "runs.csv"
    tag = _kill_when(runner, out, lambda config: True)
    left = _leftovers(tag)
    assert left["namespaces"], "SIGKILL leaves the namespaces for `testbed down`"
    for ns in left["namespaces"]:  # the children died with the runner
        deadline = time.monotonic() + 30
        while netns._pids_in_namespace(ns) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not netns._pids_in_namespace(ns)
    down = _cli("testbed", "down", "--tag", tag)
    assert down.returncode == 0, down.stderr
    assert not any(_leftovers(tag).values())
    # Killed again, this time while it sets up its testbed; resuming cleans up what it left.
    runner = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = _kill_when(runner, out, lambda config: config["testbed"]["tag"] != tag and all(
        _leftovers(config["testbed"]["tag"])[kind] for kind in ("namespaces", "cgroups")),
        new_rows=0)
    assert any(_leftovers(second).values())
    before = len(read_runs(runs))
    resumed = _cli("experiment", "--quick", "--settings", "3", "--out", str(out),
                   "--testbed", "netns")
    assert resumed.returncode == 0, resumed.stderr
    assert f"netns esf-{second}-e" in resumed.stderr
    assert not any(_leftovers(second).values())
    rows = read_runs(runs)
    codecs = json.loads((out / "config.json").read_text())["compressed_codecs"]["mnist_cnn"]
    assert len(rows) == 3 * 2 * (10 * 2 + STRATEGY_ROWS + 2 * len(codecs)) > before
    keys = Counter((key_of(r), r["edge"] if r["strategy"] in ("oracle", COMPRESSED) else "")
                   for r in rows)
    assert max(keys.values()) == 1  # no row measured twice
    config = json.loads((out / "config.json").read_text())
    assert len(config["runs"]) == 1  # the killed run never finished; the resumed one did
    different = _cli("experiment", "--quick", "--settings", "2", "--out", str(out))
    assert different.returncode == 2
    assert "holds an experiment with settings=3, not 2" in different.stderr


def _kill_when(runner: subprocess.Popen[bytes], out: Path,
               this_run: Callable[[dict[str, Any]], bool], new_rows: int = 21) -> str:
    """SIGKILL the runner once ``this_run`` holds of its config and it has added ``new_rows``
    rows; returns its testbed's tag."""
    runs = out / "runs.csv"
    start = len(runs.read_text().splitlines()) if runs.exists() else 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and runner.poll() is None:
        config = json.loads((out / "config.json").read_text()) if (
            out / "config.json").exists() else {}
        if ("tag" in config.get("testbed", {}) and this_run(config) and runs.exists()
                and len(runs.read_text().splitlines()) >= start + new_rows):
            break
        time.sleep(0.05)
    assert runner.poll() is None, "the run ended before it could be killed"
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    tag: str = json.loads((out / "config.json").read_text())["testbed"]["tag"]
    return tag


def test_forced_split_skips_planning_and_is_logged(cloud: CloudProcess, mnist_profile_file: Path,
                                                   tmp_path: Path) -> None:
    options = EdgeOptions("mnist_cnn", cloud.url, objective=Objective("latency"),
                          log_dir=tmp_path)
    with build_runtime(options, profile=read_profile(mnist_profile_file),
                       clock=FixedClock(1.5)) as edge:
        x = zoo.sample_input("mnist_cnn")
        for sp in (0, 4, 9):
            result = edge.infer(x, split_point=sp)
            m = result.measurement
            assert (m.split_point, m.finished, m.replan) == (sp, "cloud", "forced")
            assert m.predicted_latency_s > 0 and m.latency_s > 0
        with pytest.raises(InvalidArgument, match="split point 10 is out of range"):
            edge.infer(x, split_point=10)
    done = _cli("edge", "run", "--cloud", cloud.url, "--model", "mnist_cnn", "--sample",
                "--count", "2", "--split-point", "3", "--profile", str(mnist_profile_file),
                "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [m["split_point"] for m in lines] == [3, 3]


def test_unknown_testbed_errors_are_one_line() -> None:
    with pytest.raises(errors.TestbedError, match="tag 'Bad-Tag' must be"):
        netns.Names("Bad-Tag")


def _alive(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is None


@root
def test_a_tag_in_use_is_refused_and_left_alone(tmp_path: Path) -> None:
    up = _cli("testbed", "up", "--tag", "tbua")
    inside = None
    try:
        assert up.returncode == 0, up.stderr
        before = _leftovers("tbua")
        inside = subprocess.Popen(["ip", "netns", "exec", "esf-tbua-e", "sleep", "60"])
        time.sleep(0.3)
        again = _cli("testbed", "up", "--tag", "tbua", "--bandwidth-kbps", "1000")
        assert again.returncode == 2, again.stderr
        assert again.stderr.count("\n") == 1, again.stderr
        assert "testbed tbua is already up (netns esf-tbua-c, netns esf-tbua-e, cgroup " \
            "esf-tbua-c, cgroup esf-tbua-e), left as it is" in again.stderr
        assert "edgesplit testbed down --tag tbua" in again.stderr
        assert _alive(inside), "the refused `up` must not kill what runs inside"
        assert _leftovers("tbua") == before  # the rate (7200 kbit/s) untouched too
        # The Python API refuses the same way, and its error path removes nothing either.
        with pytest.raises(errors.TestbedError, match="testbed tbua is already up"), \
                netns.NetnsTestbed("tbua"):
            pass
        with pytest.raises(errors.TestbedError, match="already up"), \
                NetnsBench(["mnist_cnn"], 20.0, tmp_path, "tbua"):
            pass
        assert _alive(inside) and _leftovers("tbua") == before
    finally:
        if inside is not None:
            inside.kill()
            inside.wait()
        _cli("testbed", "down", "--tag", "tbua")
    assert not any(_leftovers("tbua").values())


@root
@pytest.mark.parametrize("leftover", ["cloud-namespace", "cgroup"])
def test_what_a_killed_testbed_left_is_a_tag_in_use(leftover: str) -> None:
    names = netns.Names("tbub")
    if leftover == "cgroup":
        names.edge_cgroup.mkdir()
    else:
        netns.sh("ip", "netns", "add", names.cloud_ns)
    try:
        refused = _cli("testbed", "up", "--tag", "tbub")
        assert refused.returncode == 2
        assert "testbed tbub is already up" in refused.stderr, refused.stderr
        assert (names.edge_cgroup.is_dir() if leftover == "cgroup"
                else names.cloud_ns in netns._namespaces())  # left as it was
    finally:
        down = _cli("testbed", "down", "--tag", "tbub")
    assert down.returncode == 0 and not any(_leftovers("tbub").values())
    assert _cli("testbed", "up", "--tag", "tbub").returncode == 0  # free again once removed
    assert _cli("testbed", "down", "--tag", "tbub").returncode == 0


@root
def test_of_two_ups_racing_for_one_tag_one_wins_and_stays_up() -> None:
    command = [sys.executable, "-m", "edgesplit.cli", "testbed", "up", "--tag", "tbuc"]
    try:
        racers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) for _ in range(3)]
        said = [racer.communicate(timeout=120) for racer in racers]
        codes = sorted(racer.returncode for racer in racers)
        assert codes == [0, 2, 2], said
        assert all("already up" in err for _, err in said if err), said
        found = _leftovers("tbuc")
        assert sorted(found["namespaces"]) == ["esf-tbuc-c", "esf-tbuc-e"]
        assert len(found["cgroups"]) == 2 and any("tbf" in q for q in found["qdiscs"])
    finally:
        _cli("testbed", "down", "--tag", "tbuc")
    assert not any(_leftovers("tbuc").values())
