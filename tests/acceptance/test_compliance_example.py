"""The README's "Compliance in five commands", end to end: each ``$`` command of that section runs, as written, in a
shell on a fresh copy of ``examples/compliance*``; the outcomes it describes are checked (a payout held for screening,
backup withholding, a flag cap's cut, a two-operator release paid once, the tax report, an erasure after which the
audit log verifies and the database file holds none of the payee's values), and every output line the README shows
in full is one the command really printed (dates, years and generated names aside)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SECTION = "## Compliance in five commands"
ERASED = {  # rep-ana's values, as payees.csv and deals.csv give them
    "name": "Ana Souza", "email": "ana@acme-reseller.example", "account": "000123456789",
    "tin": "521-44-7830", "tin digits": "521447830", "phone": "+1 206 555 0101",
}


def readme_commands() -> list[tuple[str, list[str]]]:
    """The section's ``$`` commands in order, each with the output lines the README shows after it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end >= 0 else len(text)]
    commands: list[tuple[str, list[str]]] = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", section, flags=re.M | re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            elif commands:
                commands[-1][1].append(line)
    return commands


def copy_example(target: Path) -> None:
    """What a fresh clone has: the settings and the committed inputs, nothing a local run left in examples/."""
    (target / "examples").mkdir()
    shutil.copy(EXAMPLES / "compliance.toml", target / "examples" / "compliance.toml")
    source, copy = EXAMPLES / "compliance", target / "examples" / "compliance"
    copy.mkdir()
    for name in ("payees.csv", "deals.csv", "fetch-lists.sh", ".gitignore"):
        shutil.copy(source / name, copy / name)
    shutil.copytree(source / "published", copy / "published")


def normalised(line: str) -> str:
    """A line without what changes from run to run or day to day."""
    line = re.sub(r"\d{4}-\d{2}-\d{2}", "<date>", line.rstrip())
    line = re.sub(r"\b20\d\d\b", "<year>", line)
    line = re.sub(r"erased-[0-9a-f]{8}", "erased-<hex>", line)
    return re.sub(r"in \d+\.\d s$", "in <seconds> s", line)


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "COLUMNS": "80"}
    env.pop("PAYHUB_CONFIG", None)
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def payhub_json(cwd: Path, *args: str) -> Any:
    done = run(" ".join(["payhub", "-c", "examples/compliance.toml", *args, "--format", "json"]), cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def stage_counts(output: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"│ (\w+)\s+│ (\d+)\s+│", output)}


@pytest.mark.slow
def test_the_readme_compliance_section_runs_as_written(tmp_path: Path) -> None:
    commands = readme_commands()
    assert [c.split(" --")[0] for c, _ in commands if c.startswith("payhub")] == [
        "payhub -c examples/compliance.toml db upgrade",
        "payhub -c examples/compliance.toml screening refresh",
        "payhub -c examples/compliance.toml screening check \"Zakhar Vorontsev\"",
        "payhub -c examples/compliance.toml run",
        "payhub -c examples/compliance.toml payouts list",
        "payhub -c examples/compliance.toml explain reward:4 | head -4",
        "payhub -c examples/compliance.toml",  # --actor alice payouts release 5
        "payhub -c examples/compliance.toml",  # --actor bob payouts release 5
        "payhub -c examples/compliance.toml run",
        "payhub -c examples/compliance.toml tax report",
        "payhub -c examples/compliance.toml payees erase rep-ana",
        "payhub -c examples/compliance.toml audit verify",
    ]
    copy_example(tmp_path)
    today = datetime.now(UTC).date()
    out: dict[str, str] = {}
    for command, shown in commands:
        done = run(command, tmp_path)
        expected = 1 if " screening check " in command else 0  # a hit exits 1, as the README says
        assert done.returncode == expected, f"{command}\n{done.stdout}\n{done.stderr}"
        printed = {normalised(line) for line in done.stdout.splitlines()}
        for line in shown:
            if "…" not in line:
                assert normalised(line) in printed, f"README shows {line!r} after {command!r}; printed:\n{done.stdout}"
        if "payouts list" in command:  # the state after the first pass, before the release
            out["payouts after the first pass"] = done.stdout
        out[command.split(" --reason")[0]] = done.stdout
        if command.endswith("run --once"):
            out.setdefault("first run", done.stdout)
            out["last run"] = done.stdout

    # 1. the lists, dated today by the stand-in download job; the alias matches through the Cyrillic spelling
    refresh = out["payhub -c examples/compliance.toml screening refresh"]
    assert f"loaded ofac_sdn (ofac_csv): published {today}, 3 entries" in refresh
    assert f"loaded eu (eu_xml): published {today}, 2 entries" in refresh
    assert "entry EU.9901.01 'Sachar Iljitsch Woronzew' (as 'Захар Ильич Воронцев'), score 100.0" in out[
        'payhub -c examples/compliance.toml screening check "Zakhar Vorontsev"']

    # 2. the first pass: one payout held for screening, one with withholding, one cut by the flag cap
    assert stage_counts(out["first run"]) == {"ingested": 5, "calculated": 5, "scheduled": 7, "disbursed": 5,
                                              "settled": 0}
    first = {row["payee"]: row for row in csv.DictReader(io.StringIO(out["payouts after the first pass"]))}
    assert (first["rep-zak"]["id"], first["rep-zak"]["status"], first["rep-zak"]["hold_code"],
            first["rep-zak"]["attempts"]) == ("5", "held", "screening", "0")
    assert "sanctions: possible match on 1 listed entry: eu of " in first["rep-zak"]["reason"]
    assert (first["rep-ben"]["amount"], first["rep-ben"]["items"], first["rep-ben"]["status"]) == ("1292.00", "2",
                                                                                                   "sent")
    assert (first["gov-grace"]["amount"], first["gov-grace"]["status"]) == ("250.00", "sent")
    assert (first["rep-ana"]["amount"], first["rep-ana"]["status"]) == ("200.00", "sent")
    chloe_current = today <= date(2029, 12, 31)  # her W-8BEN, signed 2026-03-02, expires at the end of 2029
    assert ("rep-chloe" in first and first["rep-chloe"]["status"] == "sent") is chloe_current
    rewards = payhub_json(tmp_path, "rewards", "list")
    assert sorted((r["payee"], r["amount"]) for r in rewards if r["payee"] == "rep-ben") == [
        ("rep-ben", "-408.00"), ("rep-ben", "1700.00")]
    explained = out["payhub -c examples/compliance.toml explain reward:4 | head -4"]
    assert "Reward 4: 250.00 USD to gov-grace" in explained and '"earned": "400.00"' in explained
    assert "cap flag government_official per payee gov-grace 2026: limit 250.00, used 0.00, cut 150.00" in explained

    # 3. two operators release it; the next pass sends it, once
    releases = [text for command, text in out.items() if "payouts release 5" in command]
    assert "release recorded for alice" in releases[0]
    assert "released (screening hold) by alice and bob" in releases[1]
    assert stage_counts(out["last run"])["disbursed"] == 1
    payouts = {p["payee"]: p for p in payhub_json(tmp_path, "payouts", "list")}
    assert (payouts["rep-zak"]["status"], payouts["rep-zak"]["attempts"]) == ("sent", 1)
    files = b"".join(p.read_bytes() for p in (tmp_path / "examples" / "compliance" / "payments").glob("*.csv"))
    assert files.count(payouts["rep-zak"]["key"].encode()) == 1

    # 4. the tax report of this year: Ben reportable on 1099-MISC, 408.00 withheld, warned at 85 %
    table = out["payhub -c examples/compliance.toml tax report --year $(date -u +%Y) --all"]
    assert f"tax report {today.year} in USD" in table
    assert re.search(r"│ rep-ben\s+│\s+│ missing │ 1099-MIS │ 0\.00\s+│ 1700\.00 │ 408\.00 │ 85%, no", table)
    report = {r["payee"]: r for r in payhub_json(tmp_path, "tax", "report", "--year", str(today.year), "--all")}
    assert (report["rep-ben"]["reportable"], report["rep-ben"]["misc_box3"], report["rep-ben"]["misc_box4"]) == (
        "1099-MISC", "1700.00", "408.00")
    assert "85% of the 2000.00 USD threshold" in report["rep-ben"]["warning"]
    assert {p: (r["form"], r["tin_status"], r["reportable"]) for p, r in report.items() if p != "rep-ben"} == {
        "rep-ana": ("W-9", "valid", ""), "gov-grace": ("W-9", "valid", ""), "rep-zak": ("W-9", "valid", ""),
        **({"rep-chloe": ("W-8BEN", "missing", "")} if chloe_current else {})}

    # 5. erased, the chain verifies, and no value of Ana's is left in the database file (any case, UTF-8 or -16)
    assert re.match(r"payee rep-ana erased: now erased-[0-9a-f]{8}", out[
        "payhub -c examples/compliance.toml payees erase rep-ana"])
    assert out["payhub -c examples/compliance.toml audit verify"].startswith("audit log OK: ")
    database = tmp_path / "examples" / "compliance" / "payhub.db"
    stored = b"".join(p.read_bytes() for p in database.parent.glob("payhub.db*")).lower()
    assert len(stored) > 100_000
    for what, value in ERASED.items():
        for encoding in ("utf-8", "utf-16-le"):
            assert value.lower().encode(encoding) not in stored, f"{what} {value!r} left ({encoding})"
    assert b"zak vorontsev" in stored  # the search finds what is there: another payee's name stays
