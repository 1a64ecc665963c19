"""The README's own-model walkthrough as a user runs it: export a network of one's own, profile
and plan it, serve it and run an edge against it, all real processes; then a cloud that serves
another version under the same name (409: the edge finishes each inference itself)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from edgesplit.core.splitting import top1
from edgesplit.models.sources import load_model
from edgesplit.testbed.processes import CloudProcess

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "my_net.py"


def edgesplit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "edgesplit.cli", *args], capture_output=True,
                            text=True, timeout=300, env=os.environ | env)
    assert result.returncode == 0, result.stderr
    return result


def export(folder: Path, seed: int) -> Path:
    """Run the README's script in ``folder`` (with another seed: other weights, same name)."""
    folder.mkdir()
    script = EXAMPLE.read_text().replace("manual_seed(0)", f"manual_seed({seed})")
    (folder / "my_net.py").write_text(script)
    subprocess.run([sys.executable, "my_net.py"], cwd=folder, check=True, timeout=300)
    return folder / "my_net.pt2"


def edge_run(program: Path, url: str, env: dict[str, str]) -> tuple[list[dict[str, object]], str]:
    result = edgesplit("edge", "run", "--model", str(program), "--cloud", url, "--sample",
                       "--count", "3", "--split-point", "3", "--json", env=env)
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def test_the_own_model_walkthrough_and_a_cloud_of_another_version(tmp_path: Path) -> None:
    env = {"EDGESPLIT_CACHE_DIR": str(tmp_path / "cache")}
    mine, theirs = export(tmp_path / "v1", seed=0), export(tmp_path / "v2", seed=1)
    profile = json.loads(edgesplit("profile", str(mine), "--repeats", "2", "--json",
                                   env=env).stdout)
    assert profile["model"] == "my_net" and profile["layers"][3]["name"] == "features.3"
    plan = json.loads(edgesplit("plan", str(mine), "--json", env=env).stdout)
    assert plan["model"] == "my_net" and len(plan["candidates"]) == len(profile["layers"]) + 1

    own = load_model(str(mine))
    right = int(top1(own.split(own.sample))[0])
    with CloudProcess(models=str(mine)) as cloud:
        rows, _ = edge_run(mine, cloud.url, env)
    assert [(r["finished"], r["top1_class"]) for r in rows] == [("cloud", right)] * 3

    other = load_model(str(theirs))
    assert other.digest != own.digest
    assert not torch.equal(other.split(own.sample), own.split(own.sample))  # it answers otherwise
    with CloudProcess(models=str(theirs)) as cloud:
        rows, said = edge_run(mine, cloud.url, env)
    assert [(r["finished"], r["top1_class"]) for r in rows] == [("edge", right)] * 3
    assert all("409" in str(r["fallback"]) for r in rows)  # each offload tried: not marked down
    assert said.count("another version of my_net") == 1
