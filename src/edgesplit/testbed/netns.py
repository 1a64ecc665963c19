"""The root testbed's plumbing: two network namespaces, a shaped veth pair and CPU cgroups.

``NetnsTestbed`` creates, under one short tag, the namespaces ``esf-<tag>-e`` (the edge) and
``esf-<tag>-c`` (the cloud), a veth pair between them (``10.200.0.1`` on the edge side,
``10.200.0.2`` on the cloud side, nothing else is reachable), a ``tbf`` qdisc capping the edge's
egress (the uplink) and two cgroup v1 ``cpu`` groups, ``esf-<tag>-e`` whose CFS quota slows the
edge process and ``esf-<tag>-c`` for the cloud, both with the highest weight so that the rest of
the machine does not slow them further. Every
name starts with ``esf``, so ``teardown()`` (``edgesplit testbed down``) finds and removes
whatever a killed run left behind: processes in the namespaces or the cgroup first, then the
cgroup and the namespaces (deleting a namespace deletes its veth end, which deletes the pair and
its qdisc). Needs root, ``ip`` and ``tc``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from edgesplit.errors import TestbedError

PREFIX = "esf"
CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
EDGE_ADDRESS = "10.200.0.1"
CLOUD_ADDRESS = "10.200.0.2"
PERIOD_US = 10_000
"""CFS period: 10 ms (docs/design.md section 5: whole forwards scale close to linearly with it)."""
MIN_QUOTA_US = 1_000  # the kernel's minimum
MAX_SHARES = 262_144
TBF_BURST_KBIT = 32  # the thesis's Wondershaper-like cap...
TBF_LATENCY = ("latency", "400ms")
TBF_BURST_S = 0.001
"""...whose 32 kbit burst is less than one timer tick's worth above 32 Mbit/s, where tbf then
falls short of its rate: the burst grows to 1 ms of the rate there (unchanged below)."""


@dataclass(frozen=True)
class Names:
    """Every name one testbed uses, from its tag."""

    tag: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9]{1,8}", self.tag):
            raise TestbedError(f"testbed tag {self.tag!r} must be 1 to 8 lower-case letters or "
                               "digits")

    @property
    def edge_ns(self) -> str:
        return f"{PREFIX}-{self.tag}-e"

    @property
    def cloud_ns(self) -> str:
        return f"{PREFIX}-{self.tag}-c"

    @property
    def edge_link(self) -> str:
        return f"{PREFIX}{self.tag}e"

    @property
    def cloud_link(self) -> str:
        return f"{PREFIX}{self.tag}c"

    @property
    def edge_cgroup(self) -> Path:
        return CGROUP_CPU / f"{PREFIX}-{self.tag}-e"

    @property
    def cloud_cgroup(self) -> Path:
        return CGROUP_CPU / f"{PREFIX}-{self.tag}-c"


def require_root() -> None:
    if os.geteuid() != 0:
        raise TestbedError("the netns testbed needs root (namespaces, tc, cgroups): run as root "
                           "or use --testbed userspace")


def sh(*args: str) -> str:
    """Run a command; a failure is one line naming the command and what it said."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TestbedError(f"`{' '.join(args)}` could not run: {exc}") from exc
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise TestbedError(f"`{' '.join(args)}` failed: {said[0] if said else done.returncode}")
    return done.stdout


class NetnsTestbed:
    """Namespaces, shaped veth pair and CPU cgroup of one tag; torn down on exit, always."""

    def __init__(self, tag: str | None = None, *, rate_kbps: float = 7200) -> None:
        self.names = Names(tag or secrets.token_hex(3))
        self.rate_kbps = rate_kbps
        self.cpu_share = 1.0
        self.owned = False  # only a testbed this object created is ever torn down by it

    def __enter__(self) -> NetnsTestbed:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        require_root()
        if not CGROUP_CPU.is_dir():
            raise TestbedError(f"no cgroup v1 cpu controller at {CGROUP_CPU}: use --testbed "
                               "userspace")
        n = self.names
        self._claim()
        try:
            sh("ip", "netns", "add", n.cloud_ns)
            sh("ip", "link", "add", n.edge_link, "netns", n.edge_ns, "type", "veth", "peer",
               "name", n.cloud_link, "netns", n.cloud_ns)
            for ns, link, address in ((n.edge_ns, n.edge_link, EDGE_ADDRESS),
                                      (n.cloud_ns, n.cloud_link, CLOUD_ADDRESS)):
                sh("ip", "-n", ns, "addr", "add", f"{address}/30", "dev", link)
                sh("ip", "-n", ns, "link", "set", link, "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
            self.set_rate_kbps(self.rate_kbps)
            for group in (n.edge_cgroup, n.cloud_cgroup):
                group.mkdir()
                (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                # The most weight there is: other processes on the machine do not take the
                # edge's (or the cloud's) core, so a quota of x% really is x% of a core.
                (group / "cpu.shares").write_text(str(MAX_SHARES))
            self.set_cpu_share(1.0)
        except (TestbedError, OSError) as exc:
            self.down()
            raise TestbedError(f"setting up testbed {n.tag} failed: {exc}") from exc

    def _claim(self) -> None:
        """Refuse a tag in use, touching nothing of it; else take it by creating its edge
        namespace (``ip netns add`` creates the name exclusively, so of two ``up`` racing for
        one tag exactly one wins, and the other's error path never tears down the winner's)."""
        n = self.names
        in_use = _in_use(n.tag)
        if not in_use:
            try:
                sh("ip", "netns", "add", n.edge_ns)
                self.owned = True
                return
            except TestbedError as exc:
                if n.edge_ns not in _namespaces():
                    raise TestbedError(f"setting up testbed {n.tag} failed: {exc}") from exc
                in_use = [f"netns {n.edge_ns}"]
        raise TestbedError(f"testbed {n.tag} is already up ({', '.join(in_use)}), left as it "
                           f"is: choose another --tag, or remove it first with `edgesplit "
                           f"testbed down --tag {n.tag}`")

    def down(self) -> list[str]:
        if not self.owned:
            return []
        removed = teardown(self.names.tag)
        self.owned = False
        return removed

    def set_rate_kbps(self, rate_kbps: float) -> None:
        """Cap the edge's uplink (tbf on the edge end of the veth pair)."""
        if rate_kbps <= 0:
            raise TestbedError(f"uplink rate must be positive, got {rate_kbps}")
        n = self.names
        burst = max(TBF_BURST_KBIT, round(rate_kbps * TBF_BURST_S))
        sh("tc", "-n", n.edge_ns, "qdisc", "replace", "dev", n.edge_link, "root", "tbf", "rate",
           f"{round(rate_kbps)}kbit", "burst", f"{burst}kbit", *TBF_LATENCY)
        self.rate_kbps = rate_kbps

    def set_cpu_share(self, share: float) -> None:
        """Let the cgroup's processes use ``share`` of one core (1.0: a full core)."""
        if not 0 < share <= 1:
            raise TestbedError(f"CPU share must be in (0, 1], got {share}")
        quota = max(MIN_QUOTA_US, round(share * PERIOD_US))
        (self.names.edge_cgroup / "cpu.cfs_quota_us").write_text(str(quota))
        self.cpu_share = share

    def attach(self, pid: int, side: str = "edge") -> None:
        """Move process ``pid`` (all its threads) into the edge's (or the cloud's) cgroup."""
        group = self.names.edge_cgroup if side == "edge" else self.names.cloud_cgroup
        (group / "cgroup.procs").write_text(str(pid))

    def in_edge(self) -> list[str]:
        return ["ip", "netns", "exec", self.names.edge_ns]

    def in_cloud(self) -> list[str]:
        return ["ip", "netns", "exec", self.names.cloud_ns]


def _namespaces() -> list[str]:
    names = [line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()]
    return [name for name in names if name.startswith(PREFIX + "-")]


def _cgroups() -> list[Path]:
    if not CGROUP_CPU.is_dir():
        return []
    return sorted(p for p in CGROUP_CPU.glob(f"{PREFIX}-*") if p.is_dir())


def _tag_of(name: str) -> str:
    return name.split("-")[1] if name.count("-") >= 1 else ""


def _in_use(tag: str) -> list[str]:
    """What of testbed ``tag`` exists now (a live testbed, or what a killed run left)."""
    return ([f"netns {ns}" for ns in _namespaces() if _tag_of(ns) == tag]
            + [f"cgroup {g.name}" for g in _cgroups() if _tag_of(g.name) == tag])


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _pids_in_namespace(ns: str) -> set[int]:
    try:
        return {int(p) for p in sh("ip", "netns", "pids", ns).split()}
    except TestbedError:
        return set()


def _pids_in_cgroup(group: Path) -> set[int]:
    try:
        return {int(p) for p in (group / "cgroup.procs").read_text().split()}
    except OSError:
        return set()


def teardown(tag: str | None = None) -> list[str]:
    """Remove the testbed ``tag`` (every ``esf`` testbed when None); returns what it removed.

    Processes still inside go first (SIGKILL), then cgroups, then namespaces."""
    require_root()
    namespaces = [ns for ns in _namespaces() if tag is None or _tag_of(ns) == tag]
    groups = [g for g in _cgroups() if tag is None or _tag_of(g.name) == tag]
    removed: list[str] = []
    for _ in range(50):  # processes can take a moment to die and leave
        pids = set().union(*(_pids_in_namespace(ns) for ns in namespaces),
                           *(_pids_in_cgroup(g) for g in groups))
        if not pids:
            break
        _kill(pids)
        time.sleep(0.1)
    for group in groups:
        with contextlib.suppress(FileNotFoundError):
            group.rmdir()
        removed.append(str(group))
    for ns in namespaces:
        sh("ip", "netns", "delete", ns)
        removed.append(f"netns {ns}")
    return removed


def status(tag: str | None = None) -> dict[str, list[str]]:
    """What exists now: namespaces, their links and qdiscs, and cgroups with their quota."""
    require_root()
    found: dict[str, list[str]] = {"namespaces": [], "links": [], "qdiscs": [], "cgroups": []}
    for ns in _namespaces():
        if tag is not None and _tag_of(ns) != tag:
            continue
        found["namespaces"].append(ns)
        for line in sh("ip", "-n", ns, "-o", "link", "show").splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(PREFIX):
                found["links"].append(f"{ns}: {name}")
        for line in sh("tc", "-n", ns, "qdisc", "show").splitlines():
            if " tbf " in f" {line} " or "htb" in line:
                found["qdiscs"].append(f"{ns}: {line.strip()}")
    for group in _cgroups():
        if tag is not None and _tag_of(group.name) != tag:
            continue
        quota = (group / "cpu.cfs_quota_us").read_text().strip()
        period = (group / "cpu.cfs_period_us").read_text().strip()
        found["cgroups"].append(f"{group} quota {quota} us / period {period} us")
    return found
