"""Private files, re-exported from :mod:`payhub.files`: for plugins that write files (exports, state), created
readable by their owner only.
"""

from __future__ import annotations

from payhub.files import (
    prepare_sqlite_file,
    private_file_mode,
    private_mkstemp,
)

__all__ = [
    "prepare_sqlite_file",
    "private_file_mode",
    "private_mkstemp",
]
