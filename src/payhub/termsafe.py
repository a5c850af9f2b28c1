"""Text from outside (CRM records, files, settings) made safe to print on a terminal or in a text log.

:func:`visible` replaces every character that a terminal would act on or that would not show, with a visible Python
style escape: control characters (C0 such as ESC, BEL, BS, CR, LF, TAB; DEL; C1), format characters (bidi
overrides and isolates such as U+202E, zero-width characters, the BOM), line and paragraph separators, and lone
surrogates. ``"\\x1b[2J"`` is shown as ``\\x1b[2J``, U+202E as ``\\u202e``. Everything else (letters of any script,
emoji, spaces) is shown as it is. A backslash is not escaped, so the escaped form is for reading; the JSON outputs
keep the exact text.
"""

from __future__ import annotations

import logging
import unicodedata

HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _escape(char: str) -> str:
    if unicodedata.category(char) not in HIDDEN_CATEGORIES:
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str) -> str:
    """``text`` with every control, format and separator character replaced by its escape (see above)."""
    if text.isprintable():  # the common case: nothing to replace (isprintable is False for all of them)
        return text
    return "".join(map(_escape, text))


def visible_lines(text: str) -> str:
    """Like :func:`visible`, but line feeds are kept (for multi-line text such as a traceback)."""
    return "\n".join(visible(line) for line in text.split("\n"))


class VisibleFormatter(logging.Formatter):
    """A log formatter for text logs: the message is one line with :func:`visible`; tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        message = record.message
        record.message = visible(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message

    def formatException(self, ei: logging._SysExcInfoType) -> str:  # noqa: N802
        return visible_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return visible_lines(super().formatStack(stack_info))
