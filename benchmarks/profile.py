"""Where a hop's CPU goes, in process: a deterministic profile of the ``cpu`` cases, grouped by component.

``python -m benchmarks.profile [--calls N]`` runs each hop case of ``benchmarks.cpu`` (publish and
consume, sampled and not, the same telemetry and prepared messages) under ``cProfile`` and adds up
each function's own time by the component its module belongs to (``COMPONENTS``, first match wins).
A built-in function (``len``, ``isinstance``, a lock) is charged to the components of its callers,
in proportion to the calls each made. The profiler's overhead inflates small functions, so the
shares matter here, not the µs: the ``cpu`` section of ``python -m benchmarks`` gives the µs.
"""

from __future__ import annotations

import collections
import cProfile
import pstats
import sys
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from benchmarks import cpu

METRICS = "metrics"
SPANS = "SDK spans"
PROPAGATION = "propagation"
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("opentelemetry.sdk.metrics", "metrics SDK"),
    ("hoptrace.pipeline.telemetry.histograms", METRICS),
    ("hoptrace.pipeline.instruments", METRICS),
    ("hoptrace.pipeline.metrics", METRICS),
    ("opentelemetry.sdk.trace", SPANS),
    ("opentelemetry.attributes", SPANS),
    ("opentelemetry.trace", SPANS),
    ("hoptrace.pipeline.tracing", "tracing middleware"),
    ("hoptrace.pipeline.propagation", PROPAGATION),
    ("hoptrace.pipeline.w3c", PROPAGATION),
    ("hoptrace.pipeline.carriers", PROPAGATION),
    ("hoptrace.pipeline.jobs", PROPAGATION),
    ("opentelemetry.baggage", PROPAGATION),
    ("opentelemetry.context", PROPAGATION),
    ("urllib.parse", PROPAGATION),
    ("hoptrace", "hoptrace core"),
    ("benchmarks", "benchmark"),
)
"""(module name prefix, component), first match wins. ``SDK spans``: sampler, ids, the span, its attributes,
the span processor; ``metrics``: hoptrace's metrics middleware, instruments and histograms (and
``metrics SDK`` the SDK's under them); ``propagation``: headers in and out, job baggage, contexts;
``hoptrace core``: messages, the middleware chain, processor and publisher; ``benchmark``: its sender and handler."""
OTHER = "stdlib"
CASES = ("publish-unsampled", "consume-unsampled", "publish-sampled", "consume-sampled")


def _component(filename: str, modules: dict[str, str]) -> str:
    """The component of a function defined in FILENAME; MODULES maps a loaded module's file to its name."""
    module = modules.get(filename, "")
    for prefix, component in COMPONENTS:
        if module == prefix or module.startswith(prefix + "."):
            return component
    return OTHER


def _loaded_modules() -> dict[str, str]:
    """The file of every loaded module, to its module name."""
    return {getattr(module, "__file__", None) or "": name for name, module in list(sys.modules.items())}


def by_component(stats: pstats.Stats) -> dict[str, float]:
    """Own time (s) per component; a built-in's own time split among its callers' components by their call counts."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # pstats keeps its table here
    modules = _loaded_modules()
    totals: collections.Counter[str] = collections.Counter()
    for (filename, _line, _name), (_primitive, _calls, own, _cumulative, callers) in raw.items():
        if filename != "~":
            totals[_component(filename, modules)] += own
            continue
        calls_by_caller = {caller: counts[1] for caller, counts in callers.items()}
        all_calls = sum(calls_by_caller.values()) or 1
        for caller, calls in calls_by_caller.items():
            totals[_component(caller[0], modules)] += own * calls / all_calls
    return dict(totals)


def profile_case(case: str, calls: int) -> dict[str, float]:
    """Own time per component of CALLS calls of cpu CASE, after a warm-up."""
    setup = cpu.prepare("always_on" if case.endswith("-sampled") else "always_off")
    call = setup.calls[case]
    for _ in range(cpu.WARM_UP_CALLS):
        call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    setup.telemetry.shutdown(5.0)
    return by_component(pstats.Stats(profiler))


def main(calls: int = typer.Option(20_000, "--calls", min=1, help="Profiled calls per case.")) -> None:
    """Profile every hop case and print each component's share of it."""
    found = {case: profile_case(case, calls) for case in CASES}
    components = sorted({component for shares in found.values() for component in shares}, key=lambda c: -sum(f.get(c, 0) for f in found.values()))
    table = Table(title=f"share of each case's CPU under cProfile ({calls:,} calls per case)")
    table.add_column("component")
    for case in CASES:
        table.add_column(case.replace("-", " "), justify="right")
    for component in components:
        table.add_row(component, *(f"{found[case].get(component, 0.0) / sum(found[case].values()):.0%}" for case in CASES))
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)
