"""``kill -9`` a real ``payhub run`` paying through the bank rail, again and again: every payout is in exactly one
line of one bank file, with its amount, and payhub records each one as sent once.

The rail answers late (it sleeps after the files are written), so kills land between "the file is in the outbox" and
"payhub recorded it": the next run must find those payouts by lookup instead of writing them again. More CRM events
arrive before each run, so every run has payouts to send. ``PAYHUB_TEST_BANK_CRASH_KILLS`` (default 10, at most
about 60: a day has 36 NACHA file id modifiers) and ``PAYHUB_TEST_BANK_CRASH_SEED`` make bigger or other runs.
What payhub recorded is read with ``payhub payouts list`` between runs.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from schwifty import IBAN

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("PAYHUB_TEST_BANK_CRASH_KILLS", "10"))
SEED = int(os.environ.get("PAYHUB_TEST_BANK_CRASH_SEED", "11"))
PAYHUB = shutil.which("payhub", path=str(Path(sys.executable).parent)) or "payhub"
ROUTING = ["091000019", "021000021", "011000015", "026009593", "122105278", "322271627"]

SLOW_RAIL = '''
import time

from payhub_bank import BankSettings, BankTransferRail


class SlowAnswerSettings(BankSettings):
    answer_latency_seconds: float = 0.0


class SlowAnswerBank(BankTransferRail):
    """Writes its files, then takes a while to answer: a kill in that gap leaves payouts payhub never recorded."""

    settings_model = SlowAnswerSettings

    def send(self, instructions):
        try:
            return super().send(instructions)
        finally:
            time.sleep(self.settings.answer_latency_seconds)
'''

CONFIG = """\
[database]
url = "sqlite:///{db}"
lease_seconds = 30

[daemon]
idle_seconds = 0.05
plugin_timeout_seconds = 5

[payees]
file = "payees.csv"

[sources.crm]
plugin = "file"
path = "events.csv"
poll_interval_seconds = 0.1
settle_seconds = 0

[programs.deals]
calculator = "percentage"
percent = "10"

[rails.bank]
plugin = "slow_bank"
outbox = "outbox"
inbox = "inbox"
max_batch = 4
answer_latency_seconds = 0.25
max_attempts = 100
retry_initial_seconds = 0.01
retry_max_seconds = 0.05
timeout_seconds = 5
lookup_settle_seconds = 0  # a killed process's file write cannot arrive later: "not found" is trusted at once

[rails.bank.sepa]
debtor_name = "Acme Vertriebs GmbH"
debtor_iban = "DE89370400440532013000"
debtor_bic = "COBADEFFXXX"

[rails.bank.ach]
immediate_destination = "091000019"
immediate_origin = "1234567890"
immediate_origin_name = "Acme Inc"
company_id = "1234567890"
company_name = "Acme Inc"
originating_dfi = "091000019"

[routing]
default_rail = "bank"
"""


def write_plugin(root: Path) -> Path:
    dist = root / "payhub_bank_crash-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: payhub-bank-crash\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[payhub.rails]\nslow_bank = payhub_bank_crash_rail:SlowAnswerBank\n")
    (root / "payhub_bank_crash_rail.py").write_text(SLOW_RAIL)
    return root


def payees_csv(count: int) -> str:
    rows = ["id,name,country,iban,bic,routing_number,account_number"]
    for n in range(count):
        if n % 3 == 2:
            rows.append(f"u{n:02d},Partner {n} Inc,US,,,{ROUTING[n % len(ROUTING)]},{100000 + n}")
        else:
            iban = IBAN.generate("DE", bank_code="37040044", account_code=f"{n + 1:010d}")
            rows.append(f"e{n:02d},Partner {n} GmbH,DE,{iban},COBADEFFXXX,,")
    return "\n".join(rows) + "\n"


def events(rng: random.Random, start: int, count: int, payees: int, usd: bool) -> str:
    lines = []
    for i in range(start, start + count):
        n = rng.randrange(payees)
        while not usd and n % 3 == 2:
            n = rng.randrange(payees)
        payee, currency = (f"u{n:02d}", "USD") if n % 3 == 2 else (f"e{n:02d}", "EUR")
        lines.append(f"o{i:05d},deal_won,2026-10-01T12:00:00Z,{payee},{rng.randrange(100, 900000) / 100:.2f},"
                     f"{currency}\n")
    return "".join(lines)


def file_lines(outbox: Path) -> tuple[Counter[str], dict[str, Decimal]]:
    """Per payout key, how many file lines hold it, and the amount of that line; read from the payment files."""
    seen: Counter[str] = Counter()
    amounts: dict[str, Decimal] = {}
    for path in sorted(outbox.iterdir()):
        if path.suffix == ".xml":
            for key, amount in re.findall(r"<EndToEndId>([^<]+)</EndToEndId>.*?<InstdAmt Ccy=\"EUR\">([^<]+)<",
                                          path.read_text(), flags=re.S):
                seen[key] += 1
                amounts[key] = Decimal(amount)
        elif path.suffix == ".ach":
            lines = path.read_text().splitlines()
            for entry, addenda in zip(lines, lines[1:], strict=False):
                if entry.startswith("6") and addenda.startswith("705"):
                    key = addenda[3:38].strip().lower()
                    seen[key] += 1
                    amounts[key] = Decimal(int(entry[29:39])) / 100
    return seen, amounts


def test_sigkill_never_writes_a_payout_twice(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    payees = 24
    for name in ("outbox", "inbox"):
        (tmp_path / name).mkdir()
    (tmp_path / "payees.csv").write_text(payees_csv(payees))
    (tmp_path / "payhub.toml").write_text(CONFIG.format(db=tmp_path / "payhub.db"))
    csv = tmp_path / "events.csv"
    csv.write_text("id,type,occurred_at,payee_id,amount,currency\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(write_plugin(tmp_path / "site")), env.get("PYTHONPATH")]))
    env["PAYHUB_CONFIG"] = str(tmp_path / "payhub.toml")

    def payhub(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PAYHUB, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    def listed(*options: str) -> list[dict[str, Any]]:
        """``payhub payouts list`` (JSON) while no daemon runs."""
        done = payhub("payouts", "list", "--format", "json", *options)
        assert done.returncode == 0, done.stderr
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows

    assert payhub("db", "upgrade").returncode == 0
    outbox = tmp_path / "outbox"
    written = 0
    in_the_gap = 0  # kills that left payouts in a file but not recorded by payhub
    for kill in range(KILLS):
        with csv.open("a") as fh:  # the CRM export grows: every run has payouts to send
            # USD every other run: NACHA allows 36 files a day (file id modifiers A-Z, 0-9) per origin.
            fh.write(events(rng, written, 12, payees, usd=kill % 2 == 0))
        written += 12
        log = tmp_path / f"run-{kill:02d}.log"
        with log.open("w") as err:
            proc = subprocess.Popen([PAYHUB, "run", "--no-progress"], env=env, cwd=tmp_path,
                                    stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 30
            while "payhub started" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.1, 1.2))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        seen, _ = file_lines(outbox)
        assert max(seen.values(), default=1) == 1, f"after kill {kill + 1}: a key is in two file lines"
        sending = {row["key"] for row in listed("--status", "sending")}
        in_the_gap += bool(sending & set(seen))

    left = "?"
    for _ in range(5):  # payouts backing off between attempts are due a moment later
        final = payhub("run", "--once", "--no-progress")
        assert final.returncode == 0, final.stderr
        rows = listed()
        left = sorted({r["status"] for r in rows} - {"sent"})
        if not left:
            break
        time.sleep(0.2)
    assert not left, f"payouts still {left}"

    tracebacks = [p.name for p in tmp_path.glob("run-*.log") if "Traceback" in p.read_text()]
    assert not tracebacks, f"the daemon raised: see {tracebacks}"
    seen, amounts = file_lines(outbox)
    manifests = Counter(e["key"] for p in outbox.glob("*.manifest.json") for e in json.loads(p.read_text())["entries"])
    assert rows and {r["key"] for r in rows} == set(seen) == set(manifests)
    assert set(seen.values()) == {1} and set(manifests.values()) == {1}, "a payout is in two file lines"
    for row in rows:
        assert amounts[row["key"]] == Decimal(row["amount"])
        name, line = row["provider_ref"].rsplit(":", 1)
        assert (outbox / name).exists() and int(line) > 0
    assert not list(outbox.glob(".payhub-partial-*"))
    print(f"\nbank crash test (seed {SEED}): {KILLS} kills, {in_the_gap} between a file write and its recording, "
          f"{len(rows)} payouts in {len(list(outbox.glob('*.manifest.json')))} files")
    assert in_the_gap >= 1 or KILLS < 10, "no kill landed between writing a file and recording it"
