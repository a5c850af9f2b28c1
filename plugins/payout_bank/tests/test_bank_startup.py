"""Starting the bank rail (its settings validated, its capabilities read) imports neither the file formats (SEPA,
NACHA), the status reports, nor lxml: the first call that writes or reads a file does."""

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
at_start = loaded()
assert rail.lookup(["ph-unknown"]) == {{"ph-unknown": None}}  # reads the outbox and the inbox
print(json.dumps([at_start, loaded()]))
"""


def test_starting_the_rail_imports_no_file_format_and_the_first_file_call_does(tmp_path: Path) -> None:
    (tmp_path / "outbox").mkdir()
    (tmp_path / "inbox").mkdir()
    raw = {"outbox": "outbox", "inbox": "inbox", "sepa": SEPA, "ach": ACH}
    code = PROBE.format(modules=FILE_MODULES, raw=json.dumps(raw), base=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    at_start, after_lookup = json.loads(done.stdout)
    assert at_start == []
    assert {"payhub_bank.status"} <= set(after_lookup)
