"""hoptrace.pipeline.pathways: a message's pathway from the one it came with, cut, capped, memoised; and its setting.

The end-to-end cases (the orders pipeline over its real brokers, a drop-in Celery chain) are
next to the metrics they extend: tests/test_orders_metrics.py and tests/test_dropin_celery.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from hoptrace.pipeline import pathways
from hoptrace.pipeline.pathways import CUT, MAX_CHARS, MAX_MEMO, MAX_PATHWAYS, Pathway, Pathways, component, parse
from hoptrace.pipeline.semconv import OVERFLOW
from hoptrace.pipeline.settings import Settings

ORDERS = ("validate", "charge", "ship", "notify")


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    """No pathway admitted and no header judged before each case, none left after it."""
    pathways.reset()
    yield
    pathways.reset()


def test_a_pathway_is_the_incoming_one_and_the_stage() -> None:
    orders = Pathways("orders", 8, ORDERS)
    assert orders.follow(None, "validate") == Pathway("validate", "validate", False)
    assert orders.follow("validate", "charge") == Pathway("validate>charge", "validate>charge", False)
    assert orders.follow("validate>charge>ship", "notify") == Pathway("validate>charge>ship>notify", "validate>charge>ship>notify", False)
    assert orders.follow("validate>ship", "notify").value == "validate>ship>notify"  # another route: another pathway


def test_a_pathway_keeps_its_last_stages_after_a_cut_mark() -> None:
    three = Pathways("p", 3)
    assert three.follow("a>b", "c") == Pathway("a>b>c", "a>b>c", False)
    assert three.follow("a>b>c", "d") == Pathway("~>b>c>d", f"{CUT}>b>c>d", False)
    assert three.follow("~>b>c>d", "e") == Pathway("~>c>d>e", f"{CUT}>c>d>e", False)
    assert three.follow("~>d", "e") == Pathway("~>d>e", f"{CUT}>d>e", False)  # cut once, marked for good
    one = Pathways("q", 1)
    assert (one.follow(None, "a"), one.follow("a", "b")) == (Pathway("a", "a", False), Pathway("~>b", f"{CUT}>b", False))


def test_a_pathway_longer_than_the_header_bound_loses_its_first_stages() -> None:
    names = [f"{n}" * 128 for n in range(8)]
    found = Pathways("long", 8).follow(">".join(names[:7]), names[7])
    assert found.value == "~>" + ">".join(names[1:])  # 7 names of 128, their separators and the mark: 904 characters
    assert len(found.value) <= MAX_CHARS and parse(found.value) == found.value


def test_a_retry_of_the_same_stage_adds_no_stage_a_loop_does() -> None:
    plain = Pathways("plain", 8)
    assert plain.follow("plain.flaky", "plain.flaky", again=True).value == "plain.flaky"
    assert plain.follow("plain.add", "plain.flaky", again=True).value == "plain.add>plain.flaky"
    assert plain.follow("plain.flaky", "plain.flaky").value == "plain.flaky>plain.flaky"


def test_a_declared_pipeline_refuses_a_pathway_through_stages_it_does_not_declare(caplog: pytest.LogCaptureFixture) -> None:
    orders = Pathways("orders", 8, ORDERS)
    assert orders.follow("validate>refund", "ship") == Pathway("ship", "ship", True)
    assert orders.follow("~>charge", "ship") == Pathway("~>charge>ship", f"{CUT}>charge>ship", False)  # the cut mark is no stage
    assert [record.getMessage() for record in caplog.records] == [
        "pipeline orders: ignored a hoptrace-pathway header naming stages it does not declare; the pathway starts at ship"
    ]
    assert Pathways("kafka", 8).follow("validate>refund", "ship").value == "validate>refund>ship"  # drop-in: any name is a stage


def test_beyond_max_pathways_a_pipeline_reports_overflow_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    capped = Pathways("capped", 8)
    labels = [capped.follow(f"s{n}", "end").label for n in range(MAX_PATHWAYS + 5)]
    assert labels == [f"s{n}>end" for n in range(MAX_PATHWAYS)] + [OVERFLOW] * 5
    assert capped.follow("s0", "end").label == "s0>end"  # admitted stays admitted
    assert capped.follow("s200", "end") == Pathway("s200>end", OVERFLOW, False)  # the header still carries the real route
    assert Pathways("capped", 8).follow("s0", "other").label == OVERFLOW  # the bound is the pipeline's, whatever reads it
    assert Pathways("other", 8).follow("s200", "end").label == "s200>end"
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        f"pipeline capped: more than {MAX_PATHWAYS} pathways in this process; s{MAX_PATHWAYS}>end and any later one"
        f" are reported as {OVERFLOW}, so that metric series stay bounded"
    ]


def test_the_memos_stay_bounded_under_unique_headers() -> None:
    hostile = Pathways("hostile", 8)
    for n in range(3 * MAX_MEMO):
        header = f"h{n}>x"
        assert parse(header) == header
        assert hostile.follow(header, "stage").value == f"h{n}>x>stage"
        assert len(hostile._memo) <= MAX_MEMO and len(pathways._judged) <= MAX_MEMO  # noqa: SLF001 - the bound itself
    assert parse("y" * (MAX_CHARS + 1)) is None and len(pathways._judged) <= MAX_MEMO  # noqa: SLF001 - too long is not even remembered


@pytest.mark.parametrize(
    "header",
    ["validate", "validate>charge", "~>charge>ship", "plain.add>plain.mul", "orders:ship@eu-1_x.y", "x" * 128, ">".join(["ab"] * 341)],
)
def test_a_well_formed_header_parses_as_itself(header: str) -> None:
    assert parse(header) == header


@pytest.mark.parametrize(
    "header",
    ["", ">", "a>", ">a", "a>>b", "~", "~>", "a>~", "a>~>b", "…>a", "é", "a b", "a\nb", "a\r\nforged", "x" * 129, "a,b", ">".join(["ab"] * 342)],
)
def test_a_malformed_header_does_not_parse(header: str) -> None:
    assert parse(header) is None


@pytest.mark.parametrize(
    ("name", "expected"), [("validate", "validate"), ("plain.add", "plain.add"), ("my task[1]", "my_task_1_"), ("é" * 200, "_" * 128), ("", "_")]
)
def test_a_stage_name_becomes_a_component_that_parses(name: str, expected: str) -> None:
    assert component(name) == expected and parse(component(name)) == expected


def test_the_depth_is_a_setting_of_at_least_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().pathway_depth == 8
    monkeypatch.setenv("HOPTRACE_PATHWAY_DEPTH", "3")
    assert Settings().pathway_depth == 3
    monkeypatch.setenv("HOPTRACE_PATHWAY_DEPTH", "0")
    with pytest.raises(ValidationError, match="pathway_depth"):
        Settings()
    with pytest.raises(ValueError, match="at least one stage"):
        Pathways("p", 0)
