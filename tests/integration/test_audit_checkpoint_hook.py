"""``payhub_audit_checkpoint`` is called by ``payhub audit verify``, in that command's process, with each signed
checkpoint it appends to ``audit.checkpoint_dir``: the same ``seq``, ``hash``, ``at``, ``key_id`` and ``signature``
as the file, for the head of the chain. The hook is a real plugin, loaded by entry point from the settings; a verify
that fails signs nothing and calls nothing."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import invoke
from sqlalchemy import select, update
from test_disburse import BASE, drain, schedule

from payhub import checkpoints, signing
from payhub.db.schema import audit_log, payouts
from payhub.runtime import Runtime
from payhub.testing import write_distribution

CHECKPOINT_COPY = '''
import json
from payhub.api import ConfigPath, PluginSettings, hookimpl

class CopySettings(PluginSettings):
    path: ConfigPath

class CheckpointCopy:
    """Keeps a copy of every signed checkpoint, one JSON object a line."""
    settings_model = CopySettings

    def __init__(self, settings):
        self.path = settings.path

    @hookimpl
    def payhub_audit_checkpoint(self, checkpoint):
        with open(self.path, "a") as fh:
            fh.write(json.dumps(checkpoint) + "\\n")
'''
SETTINGS = """
[rails.r]
plugin = "fake"
[audit]
checkpoint_key_file = "checkpoint.pem"
checkpoint_dir = "checkpoints"
[hooks.copy]
plugin = "checkpoint_copy"
path = "copies.jsonl"
"""


@pytest.fixture
def world(make_runtime: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    site = write_distribution(tmp_path / "site", "payhub-checkpoint-copy",
                              "[payhub.hooks]\ncheckpoint_copy = payhub_checkpoint_copy:CheckpointCopy\n",
                              modules={"payhub_checkpoint_copy": CHECKPOINT_COPY})
    monkeypatch.syspath_prepend(str(site))
    (tmp_path / "payees.csv").write_text("id,name,country\np1,One,DE\np2,Two,FR\n")
    pem, _key = signing.new_private_key()
    (tmp_path / "checkpoint.pem").write_text(pem)
    rt: Runtime = make_runtime(BASE + textwrap.dedent(SETTINGS))
    assert [s.section for s in rt.plugins.statuses if s.state != "loaded"] == []
    return rt


def copies(rt: Runtime) -> list[dict[str, Any]]:
    path = rt.settings.base_dir / "copies.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def head(rt: Runtime) -> tuple[int, str]:
    with rt.engine.connect() as conn:
        row = conn.execute(select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)).one()
    return row.seq, row.hash


def test_audit_verify_hands_each_checkpoint_it_signs_to_the_hook(world: Runtime) -> None:
    rt = world
    config = rt.settings.base_dir / "payhub.toml"
    schedule(rt, ("p1", "10"), ("p2", "20"))
    drain(rt)
    copied_before = len(copies(rt))

    result = invoke("-c", str(config), "audit", "verify")
    assert result.exit_code == 0, result.output
    saved, problems = checkpoints.read(rt.settings.base_dir / "checkpoints")
    assert not problems and saved
    new = copies(rt)[copied_before:]
    assert new, "audit verify signed a checkpoint without calling the hook"
    assert new[-1] == saved[-1].as_dict()
    assert set(new[-1]) == {"seq", "hash", "at", "key_id", "signature"}
    # The checkpoint is of the head as verify saw it (its own audit.verify entry comes after).
    assert new[-1]["seq"] <= head(rt)[0]

    # A chain that does not verify is not signed, and the hook is not called.
    with rt.engine.begin() as conn:
        conn.execute(update(payouts).values(amount_minor=payouts.c.amount_minor * 100))
    count = len(copies(rt))
    result = invoke("-c", str(config), "audit", "verify")
    assert result.exit_code == 1, result.output
    assert len(copies(rt)) == count
