"""``payhub-simulator`` (also ``python -m payhub_simulators``): serve one simulator on 127.0.0.1.

``payhub-simulator giftcard|hubspot|salesforce [options]`` prints where it listens and serves until interrupted
(Ctrl-C or SIGTERM). With a command after ``--``, it serves only while that command runs, and exits with its status::

    payhub-simulator giftcard --state sim.db --rail gift -- payhub -c payhub.toml run --once

The command's environment has ``SIMULATOR_URL``, and, for ``--rail NAME`` (gift cards) or ``--source NAME``
(the CRMs), the ``PAYHUB_RAILS__NAME__…`` / ``PAYHUB_SOURCES__NAME__…`` variables that point that section of the
payhub settings at the simulator (its URL and credentials), overriding what the settings file says.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

from payhub_simulators import giftcard, hubspot, salesforce


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in args:
        at = args.index("--")
        args, command = args[:at], args[at + 1:]
    parser = _parser()
    options = parser.parse_args(args)
    if options.which == "giftcard" and options.orders:
        return _print_orders(parser, options.state)
    name, url, env, stop = _start(options)
    try:
        env["SIMULATOR_URL"] = url
        if command:
            print(f"{name} SIMULATOR listening on {url} while `{' '.join(command)}` runs", file=sys.stderr,
                  flush=True)
            try:
                return subprocess.run(command, env={**os.environ, **env}, check=False).returncode
            except OSError as exc:
                print(f"cannot run {command[0]}: {exc}", file=sys.stderr)
                return 127
        real = "a real provider" if options.which == "giftcard" else name
        print(f"{name} SIMULATOR (not {real}) listening on {url}", flush=True)
        for key, value in env.items():
            print(f"  {key}={value}", flush=True)
        _wait()
        return 0
    finally:
        stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payhub-simulator",
                                     description="Serve a simulator of a vendor's API on 127.0.0.1.",
                                     epilog="A command after -- runs while the simulator serves.")
    kinds = parser.add_subparsers(dest="which", required=True)

    gift = kinds.add_parser("giftcard", help="a gift-card provider's REST API (not a real provider: no money moves)")
    _common(gift)
    gift.add_argument("--api-key", default="sim-key", help="the bearer key clients must send (default sim-key)")
    gift.add_argument("--state", help="SQLite file that keeps the orders across restarts (default: in memory)")
    gift.add_argument("--catalog", help="JSON file with a list of products (default: a built-in catalog)")
    gift.add_argument("--prefix", default="/api/v2", help="path prefix of the API (default /api/v2)")
    gift.add_argument("--initial-status", default="EXECUTED", help="status of new orders (EXECUTED, PENDING)")
    gift.add_argument("--execute-after", type=float, help="PENDING orders turn EXECUTED after this many seconds")
    gift.add_argument("--latency", type=float, default=0.0, help="seconds added to every order request")
    gift.add_argument("--fault", action="append", default=[], help="queue a fault, e.g. error_after or latency=2")
    gift.add_argument("--every", action="append", default=[], metavar="KIND=N",
                      help="inject fault KIND on every Nth order request, e.g. error_after=5")
    gift.add_argument("--duplicate-style", choices=("existing", "conflict"), default="existing",
                      help="a repeated external_id: 201 with the existing order (default), or 409")
    gift.add_argument("--no-dedup", action="store_true", help="do not deduplicate on external_id")
    gift.add_argument("--orders", action="store_true",
                      help="print the orders kept in the --state file as JSON and exit (starts no server)")
    gift.add_argument("--rail", metavar="NAME",
                      help="give the command PAYHUB_RAILS__NAME__BASE_URL and __API_KEY for this simulator")

    hub = kinds.add_parser("hubspot", help="the HubSpot CRM API (not HubSpot)")
    _common(hub)
    hub.add_argument("--deals", type=int, default=20, help="deals to create (every other one closed won)")
    hub.add_argument("--source", metavar="NAME",
                     help="give the command PAYHUB_SOURCES__NAME__BASE_URL and __ACCESS_TOKEN for this simulator")

    sf = kinds.add_parser("salesforce", help="a Salesforce org's REST API (not Salesforce)")
    _common(sf)
    sf.add_argument("--opportunities", type=int, default=20, help="closed-won partner deals to create")
    sf.add_argument("--source", metavar="NAME", help="give the command PAYHUB_SOURCES__NAME__LOGIN_URL, __CLIENT_ID "
                                                     "and __CLIENT_SECRET for this simulator")
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free port, printed)")


def _start(options: argparse.Namespace) -> tuple[str, str, dict[str, str], Callable[[], None]]:
    """Start the chosen simulator: (its name, its URL, the variables for the command, a function that stops it)."""
    env: dict[str, str] = {}
    if options.which == "giftcard":
        products = json.loads(Path(options.catalog).read_text(), parse_float=Decimal) if options.catalog else None
        every = {kind: int(n or 1) for kind, _, n in (spec.partition("=") for spec in options.every)}
        gift = giftcard.GiftCardSimulator(
            api_key=options.api_key, host=options.host, port=options.port, state_path=options.state,
            products=products, initial_status=options.initial_status, execute_after_seconds=options.execute_after,
            dedup=not options.no_dedup, duplicate_style=options.duplicate_style, latency=options.latency,
            every=every, prefix=options.prefix)
        gift.plan(*options.fault)
        gift.start()
        if options.rail:
            env.update(_section("RAILS", options.rail, BASE_URL=gift.url, API_KEY=gift.api_key))
        return "gift-card provider", gift.url, env, gift.stop
    if options.which == "hubspot":
        hub = hubspot.HubSpotSimulator(host=options.host, port=options.port).start()
        hubspot.add_sample_deals(hub, options.deals)
        if options.source:
            env.update(_section("SOURCES", options.source, BASE_URL=hub.url, ACCESS_TOKEN=hub.private_token))
        return "HubSpot", hub.url, env, hub.stop
    sf = salesforce.SalesforceSimulator(host=options.host, port=options.port)
    salesforce.add_sample_opportunities(sf, options.opportunities)
    sf.start()
    if options.source:
        env.update(_section("SOURCES", options.source, LOGIN_URL=sf.url, CLIENT_ID=sf.client_id,
                            CLIENT_SECRET=sf.client_secret))
    return "Salesforce", sf.url, env, sf.stop


def _section(kind: str, name: str, **values: str) -> dict[str, str]:
    return {f"PAYHUB_{kind}__{name.upper()}__{key}": value for key, value in values.items()}


def _wait() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()


def _print_orders(parser: argparse.ArgumentParser, state: str | None) -> int:
    if not state:
        parser.error("--orders needs --state (the simulator's state file)")
    try:
        orders = giftcard.stored_orders(state)
    except (OSError, sqlite3.Error) as exc:
        print(f"cannot read {state}: {exc}", file=sys.stderr)
        return 1
    print(giftcard.pretty(orders))
    return 0
