"""The independent ceiling of a pipeline run: the very rows payhub wrote, inserted again with the plainest driver
calls into an empty database of the same schema, with the same durability and transactions of the same size.

- SQLite: ``sqlite3`` (the standard library) ``BEGIN; executemany; COMMIT`` into a fresh file made with the same
  DDL (read from the run's ``sqlite_master``), WAL checkpointed as payhub's connections do, the run's ``synchronous``,
  foreign keys on.
- PostgreSQL: ``psycopg`` ``executemany`` of plain ``INSERT``s (no COPY) in one transaction per batch, into a fresh
  database migrated like the run's (same tables, keys and indexes), the server's default durability
  (``synchronous_commit`` as payhub runs with it).

Only the inserts and their commits are timed, not reading the rows back. Each transaction holds as many rows as
payhub's do: the source batch size for events, the database batch size for every other table. Tables are filled
parents first (foreign keys hold), each in its insertion order.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any


def measure_ceiling(url: str, workdir: Path, *, synchronous: str = "FULL", event_batch: int = 1000,
                    batch: int = 2000, server_url: str | None = None) -> dict[str, Any]:
    """Copy every table of the finished database at ``url`` as described above and time the inserts.

    ``server_url`` (PostgreSQL): the server on which the ceiling's fresh database is created and dropped (default:
    the server of ``url``). Returns ``method``, ``events`` and ``all_tables`` (rows, seconds, rate in rows/s) and
    ``tables`` (rows and seconds per table).
    """
    if url.startswith("sqlite"):
        from payhub.db.engine import sqlite_file

        tables = _sqlite_tables(Path(str(sqlite_file(url))), workdir / "ceiling.db", synchronous, event_batch, batch)
        method = (f"sqlite3 {sqlite3.sqlite_version} executemany, WAL (checkpointed as payhub's), "
                  f"synchronous={synchronous}, foreign_keys=ON, same DDL as the migrated database, rows copied from it")
    else:
        tables, server = _pg_tables(url, server_url or url, event_batch, batch)
        method = (f"psycopg executemany of plain INSERTs (no COPY), one transaction per batch, PostgreSQL {server}, "
                  "synchronous_commit as configured, a fresh database migrated like payhub's, rows copied from it")
    total_rows = sum(t["rows"] for t in tables.values())
    total_s = sum(t["seconds"] for t in tables.values())
    events = tables.get("events", {"rows": 0, "seconds": 0.0})
    return {
        "method": method,
        "batches": {"events": event_batch, "other_tables": batch},
        "events": {**events, "rate": _rate(events["rows"], events["seconds"])},
        "all_tables": {"rows": total_rows, "seconds": total_s, "rate": _rate(total_rows, total_s)},
        "tables": tables,
    }


def _rate(n: float, seconds: float) -> float | None:
    return n / seconds if seconds > 0 else None


def _sqlite_tables(db_path: Path, target: Path, synchronous: str, event_batch: int, batch: int
                   ) -> dict[str, dict[str, Any]]:
    from payhub.db.engine import WAL_CHECKPOINT_PAGES
    from payhub.db.schema import metadata

    src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    dst = sqlite3.connect(target, isolation_level=None)
    tables: dict[str, dict[str, Any]] = {}
    try:
        dst.execute("PRAGMA journal_mode=WAL")
        dst.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")  # as payhub's connections
        dst.execute(f"PRAGMA synchronous={synchronous}")
        dst.execute("PRAGMA foreign_keys=ON")
        for table in metadata.sorted_tables:  # parents before children, so foreign keys hold
            name = table.name
            ddl = src.execute("SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL "
                              "ORDER BY type = 'index'", (name,)).fetchall()
            for (sql,) in ddl:
                dst.execute(sql)
            dst.execute(f"DELETE FROM {name}")  # audit_head's migration row is copied like the others
            columns = [row[1] for row in src.execute(f"PRAGMA table_info({name})")]
            insert = f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            cursor = src.execute(f"SELECT {', '.join(columns)} FROM {name} ORDER BY rowid")
            size = event_batch if name == "events" else batch
            rows, seconds = 0, 0.0
            while chunk := cursor.fetchmany(size):
                start = time.perf_counter()
                dst.execute("BEGIN")
                dst.executemany(insert, chunk)
                dst.execute("COMMIT")
                seconds += time.perf_counter() - start
                rows += len(chunk)
            tables[name] = {"rows": rows, "seconds": seconds}
    finally:
        src.close()
        dst.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
    return tables


def _pg_tables(url: str, server_url: str, event_batch: int, batch: int) -> tuple[dict[str, dict[str, Any]], str]:
    import psycopg

    from bench.runner import fresh_pg_database, libpq_url
    from payhub.db import migrate
    from payhub.db.engine import make_engine
    from payhub.db.schema import metadata

    tables: dict[str, dict[str, Any]] = {}
    with fresh_pg_database(server_url, "ceiling") as target_url:
        engine = make_engine(target_url)
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()
        with psycopg.connect(libpq_url(url), autocommit=True) as src, \
                psycopg.connect(libpq_url(target_url), autocommit=True) as dst:
            server = str(dst.info.server_version)
            server = f"{int(server[:-4])}.{int(server[-4:])}"
            with dst.transaction():  # empty the migrated tables (the migration's own rows are copied like the others)
                for table in reversed(metadata.sorted_tables):
                    dst.execute(f'DELETE FROM "{table.name}"')
            for table in metadata.sorted_tables:
                name = table.name
                columns = [c.name for c in table.columns]
                cols = ", ".join(f'"{c}"' for c in columns)
                insert = f'INSERT INTO "{name}" ({cols}) VALUES ({", ".join(["%s"] * len(columns))})'
                order = ", ".join(f'"{c.name}"' for c in table.primary_key.columns) or "ctid"
                size = event_batch if name == "events" else batch
                rows, seconds = 0, 0.0
                with src.transaction(), src.cursor(name=f"ceiling_{name}") as cursor:
                    cursor.itersize = size
                    cursor.execute(f'SELECT {cols} FROM "{name}" ORDER BY {order}')
                    while chunk := cursor.fetchmany(size):
                        start = time.perf_counter()
                        with dst.transaction(), dst.cursor() as cur:
                            cur.executemany(insert, chunk)
                        seconds += time.perf_counter() - start
                        rows += len(chunk)
                tables[name] = {"rows": rows, "seconds": seconds}
    return tables, server
