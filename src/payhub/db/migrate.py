"""Alembic migrations, run from the package (no alembic.ini needed).

Checking the schema at start-up (:func:`require_current`) imports no Alembic: the head revision is read from the
migration files' module-level ``revision`` and ``down_revision`` assignments (:func:`head_revision`, held equal to
Alembic's own by a test), the database's from its ``alembic_version`` row. Alembic is imported to migrate.
"""

from __future__ import annotations

import ast
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from payhub.errors import SchemaOutOfDateError

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Engine

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"
_SCRIPT_FILE = re.compile(r"(?!\.#|__init__)(.*\.py)$")  # the migration files Alembic reads (sourceless aside)
_DEFINITION = re.compile(rb"^(?:def|async|class|@)\b", re.MULTILINE)  # a top-level definition starts


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


_PARSING = threading.Lock()
"""One thread at a time parses the migration files: CPython 3.11's ``ast.parse`` fails now and then ("AST
constructor recursion depth mismatch") when threads parse at the same time."""


def head_revision() -> str:
    """The revision this version of payhub needs: the one revision of the migration files that no other names as
    its ``down_revision``, read from their module-level assignments of string constants. Alembic decides whenever
    the files are anything else: a branch, a revision id twice, a file without exactly one ``revision`` and one
    ``down_revision`` of that form, module-level statements Python cannot parse."""
    with _PARSING:
        return _head_revision()


def _head_revision() -> str:
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").iterdir():
        if not _SCRIPT_FILE.match(path.name):
            continue
        found = _revision_assignments(path)
        if found is None or found[0] in revisions:
            return _alembic_head()
        revisions.add(found[0])
        parents.update(found[1])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else _alembic_head()


def _revision_assignments(path: Path) -> tuple[str, tuple[str, ...]] | None:
    """The file's ``revision`` and ``down_revision`` (as a tuple) when each is assigned exactly once at module level
    to a string constant (``down_revision``: also None or a tuple or list of them); None otherwise."""
    source = path.read_bytes()
    # Only the statements before the first top-level definition are parsed when the rest does not mention the names
    # (parsing the migrations' bodies would cost ten times more; an error in a body is Alembic's to report when it
    # migrates); a cut inside a string or a bracket does not parse, and the whole file is parsed then.
    cut = _DEFINITION.search(source)
    head = source if cut is None or b"revision" in source[cut.start():] else source[:cut.start()]
    try:
        try:
            tree = ast.parse(head, str(path))
        except SyntaxError:
            if head is source:
                raise
            tree = ast.parse(source, str(path))
    except (SyntaxError, ValueError):
        return None
    found: dict[str, list[ast.expr | None]] = {"revision": [], "down_revision": []}
    for node in tree.body:
        targets: list[ast.expr]
        value: ast.expr | None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name in found:
                return None
            continue
        elif isinstance(node, ast.Expr):
            continue
        else:  # any other statement that binds one of the names (an import, a loop, a branch): not read here
            if any(isinstance(n, ast.Name) and n.id in found or isinstance(n, ast.alias)
                   and (n.asname or n.name) in found for n in ast.walk(node)):
                return None
            continue
        names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        for name in found.keys() & names:
            # only ``name = <value>``: a chained or unpacking assignment, or a bare annotation, is not read here
            found[name].append(value if len(targets) == 1 and isinstance(targets[0], ast.Name) else None)
    if len(found["revision"]) != 1 or len(found["down_revision"]) != 1:
        return None
    revision, down = found["revision"][0], found["down_revision"][0]
    if not (isinstance(revision, ast.Constant) and isinstance(revision.value, str)):
        return None
    if isinstance(down, ast.Constant) and (down.value is None or isinstance(down.value, str)):
        return revision.value, () if down.value is None else (down.value,)
    if isinstance(down, ast.Tuple | ast.List) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in down.elts):
        return revision.value, tuple(str(e.value) for e in down.elts if isinstance(e, ast.Constant))
    return None


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
