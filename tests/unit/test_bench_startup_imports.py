"""bench.startup --imports: python -X importtime's report summed by package (payhub and its plugins by module)."""

from __future__ import annotations

import pytest

from bench.startup import import_times

REPORT = """\
import time: self [us] | cumulative | imported package
import time:      1000 |       1000 |     sqlalchemy.sql.elements
import time:       500 |       1500 |   sqlalchemy.sql
import time:       250 |       1750 | sqlalchemy
import time:      2000 |       2000 |   payhub.db.schema
import time:       100 |        100 |     payhub_bank.settings
import time:        50 |         50 |     payhub_bank.settings
Traceback lines and other output are ignored
"""


def test_self_times_are_summed_by_package_and_payhub_by_module() -> None:
    found = import_times(REPORT)
    assert found == {"sqlalchemy": 1.75, "payhub.db.schema": 2.0, "payhub_bank.settings": pytest.approx(0.15)}
