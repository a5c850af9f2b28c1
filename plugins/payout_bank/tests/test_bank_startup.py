"""Starting the bank rail (its settings validated, its capabilities read) imports its file formats (SEPA, NACHA),
its status reports and lxml: an installation where one of them cannot be imported fails the rail at start-up (payhub
marks it failed and routes nothing to it), instead of failing its first send, whose outcome would then be unknown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ACH, SEPA

FILE_MODULES = ("lxml", "payhub_bank.sepa", "payhub_bank.nacha", "payhub_bank.status")

PROBE = """
import json, sys
from pathlib import Path
from payhub_bank import BankSettings, BankTransferRail

def loaded():
    return sorted(name for name in {modules!r} if name in sys.modules)

raw = json.loads({raw!r})
rail = BankTransferRail("bank", BankSettings.model_validate(raw, context={{"base_dir": Path({base!r})}}))
assert rail.capabilities.currencies == {{"EUR", "USD"}}
print(json.dumps(loaded()))
"""


def test_starting_the_rail_imports_every_file_format_it_sends_with(tmp_path: Path) -> None:
    (tmp_path / "outbox").mkdir()
    (tmp_path / "inbox").mkdir()
    raw = {"outbox": "outbox", "inbox": "inbox", "sepa": SEPA, "ach": ACH}
    code = PROBE.format(modules=FILE_MODULES, raw=json.dumps(raw), base=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == sorted(FILE_MODULES)
