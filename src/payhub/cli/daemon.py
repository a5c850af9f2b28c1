"""``payhub run``: the daemon, or one pass with ``--once``.

The daemon works in a thread of its own while the main thread waits for it and handles SIGTERM and SIGINT, so a
signal is acted on at once even while the worker is blocked in the database driver (a SQLite busy wait, a
PostgreSQL connection attempt).

``--once`` does everything due, prints its summary, then exits non-zero when something needs an admin although the
rest was done: :data:`EXIT_PLUGIN_FAILED` when a configured plugin failed to load, start or register,
:data:`EXIT_SOURCE_FAILED` when a source failed permanently, :data:`EXIT_CALL_RUNNING` when a rail call it
abandoned was still running when it gave up waiting for it (the first that applies wins). The daemon logs the same
problems and keeps running.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import AbstractContextManager, nullcontext
from types import FrameType
from typing import TYPE_CHECKING

import click

from payhub.cli import Context, fail_cleanly, main, pass_ctx
from payhub.cli.output import err_console, plain, render
from payhub.collector import paused
from payhub.db.faults import describe, is_transient
from payhub.errors import PayhubError
from payhub.logs import setup_logging
from payhub.plugins import PluginStatus
from payhub.runtime import Runtime
from payhub.worker import Worker

if TYPE_CHECKING:
    from payhub.http.server import HttpServer

log = logging.getLogger("payhub.daemon")

OUTAGE_GRACE_SECONDS = 1.0  # after a signal during a database outage: the most time given to a clean stop
EXIT_PLUGIN_FAILED = 4  # run --once: a configured plugin failed to load, start or register
EXIT_SOURCE_FAILED = 5  # run --once: a source failed permanently (refused credentials, missing permission)
EXIT_CALL_RUNNING = 6  # run --once: an abandoned rail call had not returned within lookup_settle_seconds


class DatabaseUnavailable(PayhubError):
    """``run --once`` met a database outage (locked, unreachable, connection lost)."""


@main.command()
@click.option("--once", is_flag=True, help="Do everything due now, then exit.")
@click.option("--progress/--no-progress", default=None, help="Progress display (default: when on a terminal).")
@pass_ctx
@fail_cleanly
def run(ctx: Context, once: bool, progress: bool | None) -> None:
    """Poll sources and work the pipeline until SIGTERM or SIGINT (or, with --once, until nothing is due)."""
    with paused():  # the settings' models and the engine's dialect, imported here: long-lived objects
        settings = ctx.settings
        setup_logging(settings.log)
        rt = Runtime(settings, actor="payhub", role="daemon")
        worker = Worker(rt)
    _install_signals(rt, worker, settings.daemon.shutdown_grace_seconds)
    _load_plugins(rt)
    failed_plugins = [status for status in rt.plugins.statuses if status.state == "failed"]
    for status in failed_plugins:
        log.error("%s %s is disabled: %s", status.kind, status.section, status.reason)
    show = err_console.is_terminal if progress is None else progress
    display = _progress(worker) if show else nullcontext()
    if not once:
        server = _http(rt, worker)
        try:
            with display:
                _serve(worker)
        finally:
            if server is not None:
                server.stop()
            rt.close()
        return
    try:
        worker.start()
        log.info("payhub started (worker %s)", rt.worker_id)
        with display:
            summary = worker.run_once()
        log.info("payhub stopped")
    except Exception as exc:
        if is_transient(exc):  # no waiting with --once: say so plainly and exit 1
            raise DatabaseUnavailable(f"database unavailable: {describe(exc)}") from None
        raise
    finally:
        worker.stop()
        rt.close()
    render([{"stage": k, "count": v} for k, v in summary.counts.items()], "table", title="payhub run --once")
    code = _report_failures(failed_plugins, summary.failed_sources, summary.running_calls)
    if code:
        sys.exit(code)


def _load_plugins(rt: Runtime) -> None:
    """``rt.load_plugins()`` with the collector paused, as the command's module is imported
    (:func:`payhub.collector.paused`): importing the plugins and building their settings models makes many
    long-lived objects and next to no garbage; what a failed plugin left, its traceback's frames, stays
    collectable."""
    with paused():
        rt.load_plugins()


def _progress(worker: Worker) -> AbstractContextManager[object]:
    """A live display of the work done per stage, fed by ``worker``'s observer (Rich's, imported when shown)."""
    from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

    display = Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:>10,.0f}"),
                       TimeElapsedColumn(), console=err_console)
    tasks: dict[str, TaskID] = {}

    def observe(stage: str, n: int) -> None:
        if stage not in tasks:
            tasks[stage] = display.add_task(stage, total=None)
        display.advance(tasks[stage], n)

    worker.observer = observe
    return display


def _http(rt: Runtime, worker: Worker) -> HttpServer | None:
    """The HTTP face, started when ``http.listen`` is set (the daemon only: ``--once`` serves nothing)."""
    if rt.settings.http.listen is None:
        return None
    from payhub.http.server import HttpServer

    server = HttpServer(rt, worker)
    server.start()
    return server


def _report_failures(failed_plugins: list[PluginStatus], failed_sources: dict[str, str],
                     running_calls: dict[str, str]) -> int:
    """Name each failed plugin, source and still running rail call on standard error; return ``run --once``'s exit
    code (0 if none)."""
    lines = [f"error: plugin {status.key} ({status.plugin}) {status.reason}" for status in failed_plugins]
    lines += [f"error: source {name} failed permanently: {reason}" for name, reason in failed_sources.items()]
    lines += [f"error: rail {name}: an abandoned call ({call}) is still running; its payouts stay unknown and are "
              "looked up by their key on the next run" for name, call in running_calls.items()]
    for line in lines:
        err_console.print(plain(line), style="bold red", markup=False, highlight=False, soft_wrap=True)
    if failed_plugins:
        return EXIT_PLUGIN_FAILED
    if failed_sources:
        return EXIT_SOURCE_FAILED
    return EXIT_CALL_RUNNING if running_calls else 0


def _serve(worker: Worker) -> None:
    """Start the worker and run it until stopped, in a thread; re-raise here whatever error ended it."""
    failure: list[BaseException] = []

    def work() -> None:
        try:
            if worker.start_waiting():
                log.info("payhub started (worker %s)", worker.rt.worker_id)
                worker.run_forever()
            log.info("payhub stopped")
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failure.append(exc)
        finally:
            worker.stop()

    thread = threading.Thread(target=work, name="payhub-worker")
    thread.start()
    while thread.is_alive():
        thread.join(0.2)  # short waits: signal handlers run between them
    if failure:
        raise failure[0]


def _install_signals(rt: Runtime, worker: Worker, grace: float) -> None:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if rt.stop_event.is_set():
            return
        name = signal.Signals(signum).name
        wait = grace
        if worker.waiting:  # nothing can finish while the database is away: stop now
            wait = min(grace, OUTAGE_GRACE_SECONDS)
            log.info("received %s while waiting for the database: stopping", name)
        else:
            log.info("received %s: finishing in-flight work (at most %gs)", name, grace)
        rt.stop_event.set()

        def abandon() -> None:
            # Every state is resumable, so leaving now is safe: unknown outcomes are looked up on restart.
            log.warning("in-flight work did not finish within %gs; abandoning it safely", wait)
            logging.shutdown()
            os._exit(0)

        timer = threading.Timer(wait, abandon)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
