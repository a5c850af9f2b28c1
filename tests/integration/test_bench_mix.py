"""``python -m bench --programs mix`` end to end: a small program mix through the benchmark's real end-of-run checks
(every event calculated, each (program, event) once, clawbacks, caps, budgets, funds and rebates consistent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_python_m_bench_program_mix_checks_pass(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--programs", "mix", "-n", "400", "--no-ceiling", "--no-save", "--json",
         "--quiet", "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    checks = json.loads(proc.stdout)["checks"]
    assert checks["problems"] == []
    assert checks["ok"] is True
    assert checks["events_by_status"] == {"calculated": 400}
