"""``edgesplit traces`` and ``edgesplit experiment --suite dynamic``, registered by ``cli.py``.

Heavy imports (torch, matplotlib, the testbed) stay inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import click
from rich.console import Console

from edgesplit.cli_options import Writable, options

out = Console()


@dataclass(frozen=True)
class Dynamic:
    """The dynamic suite's own options of ``edgesplit experiment``."""

    traces: str | None
    objectives: str
    edges: str

    def names(self, value: str | None) -> tuple[str, ...] | None:
        return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


DYNAMIC_OPTIONS = options(
    Dynamic, "dynamic",
    click.option("--traces", help="dynamic: comma list of trace names or files (default: every "
                 "shipped trace; --quick: step-down,outage)."),
    click.option("--objectives", default="OL", show_default=True,
                 help="dynamic: comma list of OL (latency), OC (cost), CL (rank)."),
    click.option("--edges", default="rent", show_default=True,
                 help="dynamic: comma list of rent and own."))


@click.command()
@click.option("--draw", "draw_dir", type=Writable(folder=True),
              help="Draw every listed trace to DIR/trace_<name>.png.")
@click.argument("names", nargs=-1)
def traces(draw_dir: Path | None, names: tuple[str, ...]) -> None:
    """List the shipped condition traces (or the NAMES or files given), and draw them."""
    from edgesplit.evaluation.traces import library_names, load_traces

    found = load_traces(names or library_names())
    for trace in found:
        out.print(f"{trace.name:<11} {trace.duration_s:>5g} s, {len(trace.points):>2} points: "
                  f"{trace.description}", highlight=False, soft_wrap=True)
    if draw_dir is not None:
        from edgesplit.extras import require_extra

        require_extra("edgesplit traces --draw", "all")
        from edgesplit.evaluation.dynamic_report import draw_trace

        for trace in found:
            out.print(f"drew {draw_trace(trace, draw_dir)}", highlight=False, soft_wrap=True)


def run_dynamic(out_dir: Path, models: str, repeats: int, seed: int, testbed_mode: str,
                edge_speed: float, quick: bool, dynamic: Dynamic, err: Console) -> None:
    """The dynamic suite (``edgesplit experiment --suite dynamic``)."""
    from edgesplit.core import zoo
    from edgesplit.extras import require_extra

    require_extra("edgesplit experiment", "all")
    from edgesplit.evaluation.dynamic import DynamicConfig, DynamicExperiment

    ctx = click.get_current_context()
    given = {k for k in ("models", "repeats")
             if ctx.get_parameter_source(k) is click.core.ParameterSource.COMMANDLINE}
    base = DynamicConfig.quick() if quick else DynamicConfig()
    names = tuple(m.strip() for m in models.split(",") if m.strip())
    for name in names:
        zoo.get_spec(name)
    config = replace(base, seed=seed, testbed=testbed_mode, edge_speed=edge_speed,
                     traces=dynamic.names(dynamic.traces) or base.traces,
                     objectives=dynamic.names(dynamic.objectives) or base.objectives,
                     edges=dynamic.names(dynamic.edges) or base.edges,
                     models=names if "models" in given else base.models,
                     repeats=repeats if "repeats" in given else base.repeats)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: tear the testbed down
    run = DynamicExperiment(config, out_dir)
    run.progress = lambda done, total, what: err.print(f"{done}/{total} {what}",
                                                       highlight=False)
    run.run()
    out.print(f"experiment done: {out_dir / 'runs.csv'}; report with `edgesplit report "
              f"{out_dir}`", highlight=False, soft_wrap=True)
