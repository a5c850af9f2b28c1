"""``python -m bench`` end to end: a small pipeline run through the benchmark's real end-of-run checks (every event
calculated, every reward paid exactly once, totals match), so the bench breaks when the pipeline does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_python_m_bench_runs_the_pipeline_and_its_checks_pass(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "-n", "300", "--no-ceiling", "--no-save", "--json", "--quiet",
         "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["checks"]["ok"] is True, report["checks"]["problems"]
    assert report["checks"]["problems"] == []
    assert report["params"]["events"] == 300
    assert report["checks"]["rows"]["events"] == 300
    assert report["end_to_end"]["rewards"] == 300  # one reward per event, every one sent
    assert report["checks"]["rewards_by_status"] == {"sent": 300}
    assert report["end_to_end"]["rate"] > 0
    assert report["ceiling"] is None
    assert list(tmp_path.iterdir()) == []  # the work directory is removed
