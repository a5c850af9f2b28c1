"""``payhub run``: the daemon, or one pass with ``--once``."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

import click
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from payhub.cli import Context, fail_cleanly, main, pass_ctx
from payhub.cli.output import err_console, render
from payhub.logs import setup_logging
from payhub.runtime import Runtime
from payhub.worker import Worker

log = logging.getLogger("payhub.daemon")


@main.command()
@click.option("--once", is_flag=True, help="Do everything due now, then exit.")
@click.option("--progress/--no-progress", default=None, help="Progress display (default: when on a terminal).")
@pass_ctx
@fail_cleanly
def run(ctx: Context, once: bool, progress: bool | None) -> None:
    """Poll sources and work the pipeline until SIGTERM or SIGINT (or, with --once, until nothing is due)."""
    settings = ctx.settings
    setup_logging(settings.log)
    rt = Runtime(settings, actor="payhub", role="daemon")
    _install_signals(rt, settings.daemon.shutdown_grace_seconds)
    rt.load_plugins()
    for status in rt.plugins.statuses:
        if status.state == "failed":
            log.error("%s %s is disabled: %s", status.kind, status.section, status.reason)
    show = err_console.is_terminal if progress is None else progress
    display = Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:>10,.0f}"),
                       TimeElapsedColumn(), console=err_console, disable=not show)
    tasks: dict[str, TaskID] = {}

    def observe(stage: str, n: int) -> None:
        if stage not in tasks:
            tasks[stage] = display.add_task(stage, total=None)
        display.advance(tasks[stage], n)

    worker = Worker(rt, observer=observe)
    try:
        worker.start()
        log.info("payhub started (worker %s)", rt.worker_id)
        with display:
            if once:
                summary = worker.run_once()
            else:
                worker.run_forever()
                summary = worker.summary
        log.info("payhub stopped")
    finally:
        worker.stop()
        rt.close()
    if once:
        render([{"stage": k, "count": v} for k, v in summary.counts.items()], "table", title="payhub run --once")


def _install_signals(rt: Runtime, grace: float) -> None:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if rt.stop_event.is_set():
            return
        log.info("received %s: finishing in-flight work (at most %gs)", signal.Signals(signum).name, grace)
        rt.stop_event.set()

        def abandon() -> None:
            # Every state is resumable, so leaving now is safe: unknown outcomes are looked up on restart.
            log.warning("in-flight work did not finish within %gs; abandoning it safely", grace)
            logging.shutdown()
            os._exit(0)

        timer = threading.Timer(grace, abandon)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
