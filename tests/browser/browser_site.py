"""What the browser tests share: ``payhub serve`` over a quickstart run (:func:`serving`, :class:`Site`), finding
Chromium, signing in, screenshots, and a second local web server for forged form posts (:class:`Attacker`).

The server runs over a copy of the README's quickstart, run once as the README runs it (the gift-card simulator
serving the ``gift`` rail), plus two programs: ``deal_bonus``, 1,000 USD per won deal above both approval
thresholds, so its four rewards wait for two approvers each (one of them is held by an operator), and ``coop_fund``,
which accrues 2 % of each deal to the partner's co-op fund. Tokens of each role are made with ``payhub tokens
create``.

Test modules import from here (``from browser_site import ...``), never from ``conftest``: when other directories'
tests run in the same session, ``conftest`` may name another directory's module.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SCREENSHOTS = Path(os.environ.get("PAYHUB_TEST_SCREENSHOTS") or REPO / "build" / "screenshots")
_SCRIPT = Path(sys.executable).with_name("payhub")
PAYHUB = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", "from payhub.cli import main; main()"]
_SIMULATOR = Path(sys.executable).with_name("payhub-simulator")
SIMULATOR = [str(_SIMULATOR)] if _SIMULATOR.exists() else [sys.executable, "-m", "payhub_simulators"]
SERVING = re.compile(r"serving HTTP on (http://127\.0\.0\.1:\d+)")

MORE_PROGRAMS = """

# Added by the browser tests: a bonus above both approval thresholds, so each of its rewards waits for two
# different approvers in the console's approval queue; and a co-op fund, so the funds page has balances.
[programs.deal_bonus]
calculator = "flat"
event_types = ["deal_won"]
amount = "1000"
currency = "USD"
approval = {currency = "USD", threshold = "100", dual_threshold = "500"}

[programs.coop_fund]
calculator = "coop"
event_types = ["deal_won"]
percent = "2"
expiry_days = 365
"""
TOKENS = {"auditor": "auditor", "operator-a": "operator", "operator-b": "operator", "admin": "admin"}
HELD_REASON = "Deal under review by finance"
OTHER_SITE = "other-site.test"
"""A host name the browser resolves to 127.0.0.1: a page served there is on another site than the console."""


def chromium_path() -> str | None:
    """The Chromium to drive: ``PAYHUB_TEST_CHROMIUM``, else ``/usr/bin/chromium``, else ``chromium`` on PATH."""
    named = os.environ.get("PAYHUB_TEST_CHROMIUM")
    if named:
        return named if os.access(named, os.X_OK) else None
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def payhub(config: Path, *args: str, gift_cards: bool = False, timeout: float = 180) -> str:
    """``payhub -c config *args`` in a subprocess (inside the gift-card simulator with ``gift_cards``, as the
    README runs the quickstart); its standard output. Fails the test with both outputs when it fails."""
    around = [*SIMULATOR, "giftcard", "--state", str(config.parent / "quickstart" / "giftcard-sim.db"),
              "--rail", "gift", "--"] if gift_cards else []
    done = subprocess.run([*around, *PAYHUB, "-c", str(config), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=config.parent)
    assert done.returncode == 0, f"payhub {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass
class Site:
    """The running server: its URL, settings file, the tokens by name, and what the quickstart run left."""

    url: str
    config: Path
    tokens: dict[str, str]
    awaiting: list[int]
    """Rewards of ``deal_bonus`` awaiting approval (each needs two approvers), oldest first."""
    held: int
    """The ``deal_bonus`` reward held with :data:`HELD_REASON`."""
    lines: list[str] = field(default_factory=list)

    def api(self, path: str) -> list[dict[str, Any]]:
        """Every item of the API v1 listing ``path`` (one page of up to 1,000), read with the auditor's token: what
        the server holds, not what a console page shows."""
        answer = httpx.get(f"{self.url}/api/v1/{path}", params={"limit": 1000}, timeout=30,
                           headers={"authorization": f"Bearer {self.tokens['auditor']}"})
        answer.raise_for_status()
        found = answer.json()
        assert found["next"] is None, found["next"]
        items: list[dict[str, Any]] = found["items"]
        return items

    def rewards(self) -> dict[int, dict[str, Any]]:
        """Every reward by id, as ``GET /api/v1/rewards`` shows it now (``approvals`` is ``given/needed``)."""
        return {int(r["id"]): r for r in self.api("rewards")}

    def payouts(self) -> list[dict[str, Any]]:
        """Every payout, as ``GET /api/v1/payouts`` shows it now."""
        return self.api("payouts")


def _hold_one_bonus(config: Path) -> list[int]:
    """The rewards of ``deal_bonus`` awaiting approval, the last of them now held with :data:`HELD_REASON`."""
    bonus = sorted(int(r["id"]) for r in json.loads(payhub(config, "rewards", "list", "--format", "json"))
                   if r["program"] == "deal_bonus" and r["status"] == "awaiting_approval")
    assert len(bonus) == 4, bonus
    payhub(config, "rewards", "hold", str(bonus[-1]), "--reason", HELD_REASON)
    return bonus


def _copy_quickstart(target: Path) -> Path:
    shutil.copy(EXAMPLES / "quickstart.toml", target / "quickstart.toml")
    (target / "quickstart" / "bank-outbox").mkdir(parents=True)
    for csv in (EXAMPLES / "quickstart").glob("*.csv"):
        shutil.copy(csv, target / "quickstart" / csv.name)
    config = target / "quickstart.toml"
    with config.open("a", encoding="utf-8") as settings:
        settings.write(MORE_PROGRAMS)
    return config


@contextmanager
def serving(directory: Path) -> Iterator[Site]:
    """``payhub serve`` on a free port of 127.0.0.1 over a quickstart run in ``directory``, with the tokens of
    :data:`TOKENS`; stopped (SIGTERM) on leaving."""
    config = _copy_quickstart(directory)
    payhub(config, "db", "upgrade")
    payhub(config, "run", "--once", gift_cards=True)
    env = {**os.environ, "PAYHUB_LOG__LEVEL": "INFO"}
    process = subprocess.Popen([*PAYHUB, "-c", str(config), "serve", "--listen", "127.0.0.1:0"], env=env,
                               cwd=config.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # While the server starts: the tokens, and one bonus reward held (each command is a process of its own).
        with ThreadPoolExecutor(len(TOKENS) + 1) as pool:
            made = {name: pool.submit(payhub, config, "tokens", "create", "--name", name, "--role", role)
                    for name, role in TOKENS.items()}
            holding = pool.submit(_hold_one_bonus, config)
            tokens = {name: future.result().strip().splitlines()[-1] for name, future in made.items()}
            bonus = holding.result()
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            url = next((m.group(1) for line in list(lines) if (m := SERVING.search(line))), None)
            assert process.poll() is None, "payhub serve ended:\n" + "".join(lines)
            assert time.monotonic() < deadline, "payhub serve printed no 'serving HTTP' line:\n" + "".join(lines)
            time.sleep(0.05)
        yield Site(url, config, tokens, bonus[:-1], bonus[-1], lines)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        reader.join(5)


def sign_in(page: Any, site: Site, name: str, then: str = "/console/") -> None:
    """Sign in on the login page by pasting the token ``name``, asking for the console path ``then``."""
    page.goto(f"{site.url}/console/login?next={then}")
    page.get_by_label("API token").fill(site.tokens[name])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(site.url + then.split("?")[0])))
    assert name in page.locator("form.who").inner_text()


def screenshot(page: Any, name: str) -> Path:
    """Save the whole page as ``<name>.png`` in the screenshot directory; its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path


class Attacker:
    """A second local web server, on another port of 127.0.0.1: ``/`` serves :attr:`html` (a page that posts a form
    to the console as soon as it loads). :attr:`url` is on the console's site (same host, another port: the
    session cookie goes along), :attr:`other_site_url` on another site (the browser keeps the cookie back)."""

    def __init__(self) -> None:
        self.html = ""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                body = outer.html.encode()
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard library's name
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.other_site_url = f"http://{OTHER_SITE}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def forged_form(action: str, fields: dict[str, str]) -> str:
    """An HTML page that posts ``fields`` to ``action`` as soon as it loads."""
    inputs = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                     for k, v in fields.items())
    return (f'<!doctype html><title>You won a prize</title><form id="f" method="post" action="{html.escape(action)}">'
            f'{inputs}</form><script>document.getElementById("f").submit()</script>')
