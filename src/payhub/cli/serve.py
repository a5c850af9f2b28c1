"""``payhub serve``: the HTTP face alone, next to worker replicas (``payhub run``) on the same database."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import click

from payhub.cli import Context, fail_cleanly, main, pass_ctx
from payhub.logs import setup_logging
from payhub.runtime import Runtime
from payhub.settings import split_listen

log = logging.getLogger("payhub.serve")

DEFAULT_LISTEN = "127.0.0.1:8700"


def _listen(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    try:
        return split_listen(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.option("--listen", callback=_listen, metavar="HOST:PORT",
              help=f"Address to serve on (default: http.listen, else {DEFAULT_LISTEN}).")
@pass_ctx
@fail_cleanly
def serve(ctx: Context, listen: tuple[str, int] | None) -> None:
    """Serve the HTTP face (health, metrics, webhooks, API v1) without working the pipeline, until SIGTERM or
    SIGINT."""
    from payhub.http.server import HttpServer

    settings = ctx.settings
    setup_logging(settings.log)
    rt = Runtime(settings, actor="payhub", role="serve")
    try:
        rt.load_plugins()
        for status in rt.plugins.statuses:
            if status.state == "failed":
                log.error("%s %s is disabled: %s", status.kind, status.section, status.reason)
        server = HttpServer(rt, None, listen or settings.http.address or split_listen(DEFAULT_LISTEN))
        stopping = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        server.start()
        while not stopping.wait(0.2):
            if server.wait(0):
                break
        server.stop()
    finally:
        rt.close()
