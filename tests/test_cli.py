"""Command-line mistakes get a clear message naming the fix and a usage exit status, before any broker is touched."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hoptrace.cli import app

ORDERS = "hoptrace.examples.orders:pipeline"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["worker", "nosuch:pipeline"], "cannot import 'nosuch' (No module named 'nosuch'); run from the folder that holds it"),
        (["worker", "hoptrace.examples.orders"], "'hoptrace.examples.orders' is not MODULE:ATTR (for example hoptrace.examples.orders:pipeline)"),
        (
            ["worker", "hoptrace.examples.orders:nothing"],
            "module 'hoptrace.examples.orders' has no 'nothing'; name the Pipeline object, e.g. hoptrace.examples.orders:pipeline",
        ),
        (["worker", "hoptrace.examples.orders:outbox_key"], "hoptrace.examples.orders.outbox_key is function, not a hoptrace Pipeline"),
        (["worker", ORDERS, "--stage", "pack"], "pipeline 'orders' has no stage 'pack'; its stages are: validate, charge, ship, notify"),
        (["monitor", ORDERS, "--stage", "pack"], "pipeline 'orders' has no stage 'pack'; its stages are: validate, charge, ship, notify"),
        (["publish", ORDERS, "pack"], "pipeline 'orders' has no stage 'pack'; its stages are: validate, charge, ship, notify"),
        (
            ["publish", ORDERS, "validate", "--baggage", "tenant"],
            "baggage member 'tenant' is not key=value (example: --baggage tenant=acme,region=eu)",
        ),
        (["publish", ORDERS, "validate", "--payload", "[1]"], "the payload must be a JSON object, not list"),
        (["publish", ORDERS, "validate", "--payload", "{"], "the payload is not JSON"),
        (["trace", "[/nope]"], "'[/nope]' is not a trace id: 32 hex digits, as printed by publish, traces or demo"),
        (["trace", "0" * 33], f"'{'0' * 33}' is not a trace id: 32 hex digits"),
    ],
)
def test_a_mistake_is_named_with_its_fix(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_markup_in_what_a_command_prints_is_printed_as_it_is(tmp_path) -> None:
    """An argument with Rich markup in it (``[/nope]`` raised MarkupError) or an emoji code is text, not a style."""
    result = CliRunner().invoke(app, ["worker", "[/nope]:x[red]y :smile:"], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert "cannot import '[/nope]' (No module named '[/nope]'); run from the folder that holds it" in result.output


def test_an_unknown_trace_says_how_to_find_one(tmp_path) -> None:
    result = CliRunner().invoke(app, ["trace", "0" * 31 + "1", "--db", str(tmp_path / "t.sqlite")], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert f"no trace {'0' * 31}1 in the store; list what there is with: hoptrace traces" in result.output
