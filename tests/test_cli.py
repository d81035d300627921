"""Command-line mistakes get a clear message naming the fix and a usage exit status, before any broker is touched."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hoptrace.cli import app
from hoptrace.view.sqlite_store import SqliteTraceStore

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
    SqliteTraceStore(tmp_path / "t.sqlite")
    result = CliRunner().invoke(app, ["trace", "0" * 31 + "1", "--db", str(tmp_path / "t.sqlite")], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert f"no trace {'0' * 31}1 in the store; list what there is with: hoptrace traces" in result.output


@pytest.mark.parametrize("args", [["trace", "0" * 31 + "1"], ["traces"], ["stages"]])
def test_reading_a_store_that_is_not_there_says_so_and_makes_none(tmp_path, args: list[str]) -> None:
    missing = tmp_path / "none" / "t.sqlite"
    result = CliRunner().invoke(app, [*args, "--db", str(missing)], env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    assert f"no trace store at {missing} yet: hoptrace watch or hoptrace demo makes it as telemetry arrives" in " ".join(result.output.split())
    assert not missing.parent.exists()


@pytest.mark.parametrize("args", [["traces"], ["stages"], ["watch", "--grpc-port", "0", "--http-port", "0"]])
def test_a_file_that_is_not_a_store_is_a_clear_error(tmp_path, args: list[str]) -> None:
    damaged = tmp_path / "t.sqlite"
    damaged.write_bytes(b"not a database " * 300)
    result = CliRunner().invoke(app, [*args, "--db", str(damaged)], env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert f"cannot open the trace store at {damaged} (file is not a database); if it is damaged or not hoptrace's, move it aside" in said
    assert "Traceback" not in result.output


def test_a_new_store_is_readable_by_its_owner_only(tmp_path) -> None:
    path = tmp_path / "state" / "t.sqlite"
    SqliteTraceStore(path).add_spans([])
    assert [oct(each.stat().st_mode & 0o777) for each in (path.parent, path)] == ["0o700", "0o600"]
    assert all(oct(each.stat().st_mode & 0o077) == "0o0" for each in tmp_path.glob("state/t.sqlite*")), list(tmp_path.glob("state/*"))


def test_traces_slowest_lists_the_slowest_first_with_their_slowest_part(tmp_path) -> None:
    from tests.test_trace_store import _orders_traces

    with SqliteTraceStore(tmp_path / "t.sqlite") as store:  # end-to-end 900, 500, 700 and 100 ns
        store.add_spans([span for trace in _orders_traces() for span in trace])
    ids = [f"{n:032x}" for n in range(1, 5)]

    def listed(*args: str) -> list[str]:
        result = CliRunner().invoke(app, ["traces", *args, "--db", str(tmp_path / "t.sqlite")], env={"COLUMNS": "300"})
        assert result.exit_code == 0, result.output
        rows = [line.split() for line in result.output.splitlines() if line[:32] in ids]
        return [" ".join([row[0], *row[4:7]]) for row in rows]  # trace, (job, start, e2e,) slowest part

    assert listed("--slowest", "2") == [f"{ids[0]} charge handler 56%", f"{ids[2]} charge handler 71%"]
    assert listed("--slowest", "5", "--stage", "validate") == [f"{ids[0]} charge handler 56%", f"{ids[1]} validate publish 20%"]
    assert listed("--slowest", "5", "--errors") == [f"{ids[2]} charge handler 71%", f"{ids[1]} validate publish 20%"]
    assert [line.split()[0] for line in listed()] == [ids[3], ids[2], ids[1], ids[0]]  # without --slowest: newest first

    result = CliRunner().invoke(app, ["traces", "--slowest", "2", "--last", "5", "--db", str(tmp_path / "t.sqlite")], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "--last and --slowest do not go together: --last N lists the N newest traces, --slowest N the N slowest" in result.output
