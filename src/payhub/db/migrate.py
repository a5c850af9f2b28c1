"""Alembic migrations, run from the package (no alembic.ini needed).

Checking the schema at start-up (:func:`require_current`) imports no Alembic: the head revision is read from the
migration files' ``revision`` and ``down_revision`` lines (:func:`head_revision`, held equal to Alembic's own by a
test), the database's from its ``alembic_version`` row. Alembic is imported to migrate.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import TYPE_CHECKING

from payhub.errors import SchemaOutOfDateError

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Engine

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"
_SCRIPT_FILE = re.compile(r"(?!\.#|__init__)(.*\.py)$")  # the migration files Alembic reads (sourceless aside)
_ASSIGNMENT = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*(.+?)\s*(?:#.*)?$", re.MULTILINE)


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    """The revision this version of payhub needs: the one revision of the migration files that no other names as
    its ``down_revision`` (Alembic decides when the files are not that simple: a branch, a line it cannot read)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").iterdir():
        if not _SCRIPT_FILE.match(path.name):
            continue
        found: dict[str, str] = {}
        for match in _ASSIGNMENT.finditer(path.read_text(encoding="utf-8")):
            found.setdefault(match[1], match[2])  # the module-level assignment comes first
        try:
            revision = ast.literal_eval(found["revision"])
            down = ast.literal_eval(found["down_revision"])
        except (KeyError, ValueError, SyntaxError):
            return _alembic_head()
        if not isinstance(revision, str):
            return _alembic_head()
        revisions.add(revision)
        parents.update([down] if isinstance(down, str) else down or ())
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else _alembic_head()


def _alembic_head() -> str:
    """The head revision as Alembic computes it from the migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from sqlalchemy import inspect, text

    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        versions = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(versions) > 1:
        from alembic.util import CommandError

        raise CommandError(f"Version table '{VERSION_TABLE}' has more than one head present; please use "
                           "get_current_heads()")
    return versions[0] if versions else None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def require_current(engine: Engine) -> None:
    """Raise SchemaOutOfDateError unless the database is at the head revision."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        where = "an empty database" if current is None else f"revision {current}"
        raise SchemaOutOfDateError(
            f"the database is at {where} but this payhub needs revision {head}; run `payhub db upgrade`"
        )
