"""Files that hold payout details: created owner-only, whatever the umask.

The SQLite database (with its ``-wal``, ``-shm`` and ``-journal`` files), the files rails write for a bank or a
billing system, and any other file holding account numbers, IBANs or e-mail addresses are created with mode 0600,
or 0640 when the settings say ``[files] group_readable = true`` (see docs/settings.md). The mode is set explicitly
after creation, so a permissive umask (022, 002) changes nothing. An existing file with more permission bits than
that mode is tightened (the extra bits are removed) and a warning names it; bits are never added.

The mode is process-wide: :func:`payhub.settings.load_settings` sets it from ``[files]``, and plugins read it
through :func:`private_file_mode` (re-exported by :mod:`payhub.api`).
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

OWNER_ONLY = 0o600
GROUP_READABLE = 0o640

_mode = OWNER_ONLY


def configure(*, group_readable: bool) -> None:
    """Set the mode of the files payhub creates: 0600, or 0640 with ``group_readable``."""
    global _mode
    _mode = GROUP_READABLE if group_readable else OWNER_ONLY


def private_file_mode() -> int:
    """The mode for new files that hold payout details: 0600, or 0640 with ``[files] group_readable``."""
    return _mode


def create_private(path: str | os.PathLike[str], mode: int | None = None) -> bool:
    """Create ``path`` empty with ``mode`` (default :func:`private_file_mode`) unless it exists; return whether it
    was created. Nothing is opened when the file exists: closing a descriptor of a SQLite file that a connection of
    this process has open would release that connection's locks."""
    mode = private_file_mode() if mode is None else mode
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits of ``mode``; set them exactly
    finally:
        os.close(fd)
    return True


def tighten(path: str | os.PathLike[str], mode: int | None = None) -> None:
    """Remove from an existing file the permission bits ``mode`` (default :func:`private_file_mode`) does not
    grant, logging a warning that names the file; a missing file is left alone. Never adds bits."""
    mode = private_file_mode() if mode is None else mode
    try:
        current = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    extra = current & ~mode
    if not extra:
        return
    try:
        os.chmod(path, current & mode)
    except OSError as exc:
        log.warning("%s is readable by others (mode %04o) and cannot be restricted: %s", path, current, exc)
    else:
        log.warning("%s had mode %04o, more open than %04o: permissions tightened to %04o",
                    path, current, mode, current & mode)


def prepare_sqlite_file(path: str | os.PathLike[str], mode: int | None = None) -> None:
    """Before SQLite opens ``path``: create it with the private mode if missing (SQLite then gives its ``-wal``,
    ``-shm`` and ``-journal`` files the database file's mode), and tighten the files that already exist."""
    create_private(path, mode)
    for suffix in ("", "-wal", "-shm", "-journal"):
        tighten(f"{os.fspath(path)}{suffix}", mode)


def private_mkstemp(directory: str | os.PathLike[str], prefix: str = "", suffix: str = "",
                    mode: int | None = None) -> tuple[int, str]:
    """``tempfile.mkstemp`` in ``directory`` with the private mode (for atomic writes: write, fsync, rename)."""
    fd, name = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    try:
        os.fchmod(fd, private_file_mode() if mode is None else mode)
    except BaseException:
        os.close(fd)
        Path(name).unlink(missing_ok=True)
        raise
    return fd, name


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """fsync ``directory``, so that a rename or a creation in it survives a crash. Raises OSError."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` whole, or leave it as it was: a temporary file beside it with ``mode`` (default
    :func:`private_file_mode`), fsynced, renamed over ``path``, then its directory fsynced; the temporary file is
    removed on any failure. Return ``path``. Raises OSError."""
    target = Path(path)
    directory = target.parent
    fd, tmp = private_mkstemp(directory, prefix=".partial-", suffix=target.suffix[:16], mode=mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(directory)
    return target
