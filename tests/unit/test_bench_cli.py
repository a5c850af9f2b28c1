"""python -m bench: a bad argument is one error line and exit 2, before any run starts."""

from __future__ import annotations

import socket
from typing import Any

import pytest

import bench.__main__ as cli
from bench.figures import CompareOptions


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def _dead_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_an_unreachable_pg_server_is_one_line_with_its_host_and_port() -> None:
    port = _dead_port()
    why = cli.pg_unreachable(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", timeout=2)
    assert why is not None
    assert why.startswith(f"PostgreSQL at 127.0.0.1:{port} is not reachable: ")
    assert "\n" not in why
    assert cli.pg_unreachable("not a url") is not None


def test_a_single_run_on_an_unreachable_pg_server_exits_2_before_running(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "run_measured", lambda *a, **k: pytest.fail("the run started"))
    args = cli.parse_args(["--pg", f"postgresql+psycopg://postgres@127.0.0.1:{_dead_port()}/postgres", "-n", "10"])
    assert cli.run_one(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m bench: error: PostgreSQL at 127.0.0.1:")


def test_compare_reports_the_pg_figures_failed_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str | None] = []

    def fake_run(size: int, url: str | None, opts: CompareOptions) -> dict[str, Any]:
        ran.append(url)
        raise RuntimeError("not run in unit tests")

    monkeypatch.setattr(cli, "_pipeline_run", fake_run)
    port = _dead_port()
    opts = CompareOptions(sizes=(100, 200), pg_url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres")
    figures, runs = cli.pipeline_figures(opts)
    assert ran == [None, None]  # SQLite tried; no PostgreSQL run started
    pg = [f for f in figures if "postgresql" in f.name]
    assert len(pg) == 2 and all(f.value is None for f in pg)
    assert all(f"PostgreSQL at 127.0.0.1:{port} is not reachable: " in f.note for f in pg)
    assert [r["events"] for r in runs if r["backend"] == "postgresql"] == [100, 200]


@pytest.mark.parametrize("argv", [["--batch-size", "0"], ["--batch-size", "100001"], ["--source-batch", "0"],
                                  ["--source-batch", "100001"], ["--rail-batch", "0"], ["--payees", "0"],
                                  ["-n", "0"], ["-n", "-5"], ["--partners", "0"], ["--batch-size", "2.5"]])
def test_knobs_out_of_range_are_refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    line = _refused(capsys, argv)
    assert line.startswith(f"python -m bench: error: argument {argv[0]}")


def test_batch_sizes_take_the_settings_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    assert "1 to 100000" in _refused(capsys, ["--batch-size", "0"])
    args = cli.parse_args(["--batch-size", "100000", "--source-batch", "1", "--rail-batch", "1", "-n", "1"])
    assert (args.batch_size, args.source_batch, args.rail_batch, args.events) == (100_000, 1, 1, 1)


@pytest.mark.parametrize("option", ["--sizes", "--pg-sizes"])
def test_a_size_list_names_the_bad_item_and_refuses_empty(capsys: pytest.CaptureFixture[str], option: str) -> None:
    extra = ["--compare"] if option == "--pg-sizes" else []
    assert _refused(capsys, [*extra, option, "1000,x"]).endswith(f"argument {option}: 'x' is not a whole number")
    assert "empty list" in _refused(capsys, [*extra, option, ""])
    assert "empty list" in _refused(capsys, [*extra, option, " , "])
    assert "not positive" in _refused(capsys, [*extra, option, "1000,0"])
    assert getattr(cli.parse_args([*extra, option, "1000, 2000"]), option[2:].replace("-", "_")) == [1000, 2000]


def test_modules_empty_is_none_and_an_unknown_name_lists_the_known(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.parse_args(["--compare", "--modules", ""]).modules == []
    assert cli.parse_args(["--compare", "--modules", "history,pg"]).modules == ["history", "pg"]
    line = _refused(capsys, ["--compare", "--modules", "history,nosuch"])
    assert "'nosuch'" in line and "history" not in line.split("'nosuch'")[0]
    assert all(name in line for name in cli.FIGURE_MODULES)


def test_currencies_must_be_iso_4217(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.parse_args(["--currencies", "usd, EUR,jpy"]).currencies == ["USD", "EUR", "JPY"]
    assert "'XXQ'" in _refused(capsys, ["--currencies", "USD,XXQ"])
    assert "'XXX'" in _refused(capsys, ["--currencies", "USD,XXX"])  # ISO 4217 but no minor unit: not payable
    assert "empty list" in _refused(capsys, ["--currencies", ""])
