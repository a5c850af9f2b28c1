"""Physical lines of a text file, split in the byte domain so that every line's byte offsets are exact.

A line ends at LF, CRLF or a lone CR, each written in the file's encoding (two bytes in UTF-16, four in UTF-32,
at code-unit boundaries only). Lines are split before they are decoded, so a byte that does not decode spoils only
its own line. A line longer than the reader's limit is not held in memory: it is skipped to its end and reported
with its first bytes, its size and a SHA-256 of its content.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 1 << 16
PREVIEW_BYTES = 1024
"""How much of an over-long line is kept (to show it in a quarantine listing)."""

_BOMS = (  # UTF-32 first: its little-endian BOM begins with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_WIDE = {"utf-16-le": 2, "utf-16-be": 2, "utf-32-le": 4, "utf-32-be": 4}
_BOM_ONLY = {"utf-16": "utf-16-le", "utf-32": "utf-32-le", "utf-8-sig": "utf-8"}  # without a BOM: this
_REFUSED = ("utf-7", "unicode-escape", "raw-unicode-escape", "idna", "punycode", "hz", "iso2022", "undefined")
_ASCII_PROBE = '\n\r,"{}:0aZ '


def check_encoding(name: str) -> str:
    """The canonical name of a codec the file source can read, or ValueError saying why not.

    Accepted: UTF-8, UTF-16 and UTF-32 (with or without byte order), and the ASCII-compatible, stateless codecs
    (Latin-1, Windows-1252, Shift_JIS, GB18030…). Escape codecs and stateful ones (UTF-7, ISO-2022) are refused: a
    line of them cannot be decoded on its own.
    """
    try:
        info = codecs.lookup(name)
        "x".encode(info.name)  # refuses bytes-to-bytes codecs (base64, hex…)
    except LookupError:
        raise ValueError(f"unknown encoding {name!r}") from None
    canonical = info.name.replace("_", "-")
    if canonical in _WIDE or canonical in _BOM_ONLY:
        return canonical
    if any(canonical.startswith(prefix) for prefix in _REFUSED):
        raise ValueError(f"encoding {name!r} cannot be read line by line; convert the file to UTF-8")
    try:
        ascii_compatible = _ASCII_PROBE.encode(info.name) == _ASCII_PROBE.encode("ascii")
    except UnicodeError:
        ascii_compatible = False
    if not ascii_compatible:
        raise ValueError(f"encoding {name!r} is not ASCII-compatible; use UTF-8, UTF-16 or an ASCII-compatible one")
    return canonical


@dataclass(frozen=True, slots=True)
class Encoding:
    """How a file's text is written: the codec, the size of a code unit, and the length of the file's BOM."""

    name: str
    unit: int
    bom: int

    @classmethod
    def detect(cls, head: bytes, configured: str) -> Encoding:
        """The encoding of a file starting with ``head``: a BOM (UTF-8, UTF-16, UTF-32) wins over ``configured``."""
        for mark, name in _BOMS:
            if head.startswith(mark):
                return cls(name, _WIDE.get(name, 1), len(mark))
        name = _BOM_ONLY.get(configured, configured)
        return cls(name, _WIDE.get(name, 1), 0)

    @property
    def lf(self) -> bytes:
        return "\n".encode(self.name)

    @property
    def cr(self) -> bytes:
        return "\r".encode(self.name)


@dataclass(slots=True)
class Line:
    """One physical line: its 1-based number, where it starts and ends in the file, and its content.

    ``end`` is the offset after the line's terminator. ``data`` excludes the terminator; for a line longer than the
    reader's limit it holds only the first bytes, and ``digest`` is the SHA-256 of the whole content.
    """

    number: int
    start: int
    end: int
    data: bytes
    size: int
    terminated: bool
    digest: str | None = None

    @property
    def oversize(self) -> bool:
        return self.digest is not None


class LineReader:
    """Iterates the lines of ``fh`` from ``offset`` (a line start) up to ``size`` bytes into the file.

    A last line without a terminator is yielded only when ``settled`` (the writer is done); otherwise iteration
    stops before it and ``incomplete`` is set. A CR at the very end of an unsettled file may be the first half of
    a CRLF, so it waits too. (A record that needs more lines than an unsettled file holds should wait as well.)
    ``continues`` says that ``offset`` is right after a line that had no terminator when it was read: a terminator
    found there completes that line and is not counted as a line of its own.
    """

    def __init__(self, fh: BinaryIO, encoding: Encoding, offset: int, number: int, size: int, limit: int, *,
                 settled: bool, continues: bool = False) -> None:
        self._fh = fh
        self._unit = encoding.unit
        self._lf, self._cr = encoding.lf, encoding.cr
        self._ends = re.compile(re.escape(self._cr) + b"|" + re.escape(self._lf))
        self._bytes_lf = self._unit == 1 and self._lf == b"\n" and self._cr == b"\r"
        self._scanned = 0  # no line end between _pos and this index of _buf
        self._buf = bytearray()
        self._base = offset  # the file offset of _buf[0]
        self._pos = 0
        self._size = size
        self._limit = limit
        self._continues = continues
        self.settled = settled
        self.number = number
        self.incomplete = False
        fh.seek(offset)

    def __iter__(self) -> Iterator[Line]:
        return self

    def __next__(self) -> Line:
        if self._bytes_lf and not self._continues:  # the common case: a line ending in LF, no CR before it
            buf, pos = self._buf, self._pos
            at = buf.find(b"\n", pos, pos + self._limit + 1)
            if at >= 0 and buf.find(b"\r", pos, at) < 0:
                return self._emit(at, at + 1, terminated=True)
        if self._continues:  # a line end here belongs to the line before
            self._continues = False
            while len(self._buf) - self._pos < 2 * self._unit and not self._eof:
                self._read()
            found = self._terminator()
            if isinstance(found, tuple) and found[0] == self._pos:
                self._pos += found[1]
        while True:
            found = self._terminator()
            if isinstance(found, tuple) and found[0] - self._pos <= self._limit:
                at, length = found
                return self._emit(at, at + length, terminated=True)
            if isinstance(found, tuple) or len(self._buf) - self._pos > self._limit:
                return self._skip_long()
            if not self._eof:
                self._read()
                continue
            if self._pos >= len(self._buf):
                raise StopIteration
            if not self.settled:  # the writer may still be writing this line
                self.incomplete = True
                raise StopIteration
            return self._emit(len(self._buf), len(self._buf), terminated=False)

    @property
    def _eof(self) -> bool:
        return self._base + len(self._buf) >= self._size

    def _read(self) -> None:
        """Append the next chunk, first dropping the lines already returned."""
        if self._pos:
            del self._buf[:self._pos]
            self._base += self._pos
            self._scanned = max(0, self._scanned - self._pos)
            self._pos = 0
        want = min(CHUNK, self._size - self._base - len(self._buf))
        chunk = self._fh.read(want) if want > 0 else b""
        if not chunk:  # the file shrank under us: stop at what there is
            self._size = self._base + len(self._buf)
        self._buf += chunk

    def _terminator(self) -> tuple[int, int] | str | None:
        """(index, length) of the next line end in the buffer, ``"more"`` if it needs more bytes to tell, None."""
        at = max(self._pos, self._scanned)
        at += (self._pos - at) % self._unit  # code units start at _pos
        found = self._ends.search(self._buf, at)
        while found is not None and (found.start() - self._pos) % self._unit:  # inside a code unit: not an end
            found = self._ends.search(self._buf, found.start() + 1)
        if found is None:
            self._scanned = len(self._buf) - (len(self._buf) - self._pos) % self._unit
            return None
        index = found.start()
        self._scanned = index
        if found.group() == self._lf:
            return index, self._unit
        after = index + self._unit
        if len(self._buf) < after + self._unit:  # what follows the CR is not read yet
            if not self._eof:
                return "more"
            if not self.settled:
                return "cr_at_end"
            return index, self._unit
        return (index, 2 * self._unit) if self._buf[after:after + self._unit] == self._lf else (index, self._unit)

    def _emit(self, content_end: int, end: int, *, terminated: bool) -> Line:
        start = self._base + self._pos
        line = Line(self.number, start, self._base + end, bytes(self._buf[self._pos:content_end]),
                    content_end - self._pos, terminated)
        self._pos = end
        self.number += 1
        return line

    def _skip_long(self) -> Line:
        """Read an over-long line to its end without keeping it; return its preview, size and digest."""
        start = self._base + self._pos
        keep = PREVIEW_BYTES - PREVIEW_BYTES % self._unit
        preview = bytes(self._buf[self._pos:self._pos + keep])
        digest = hashlib.sha256()
        while True:
            found = self._terminator()
            if isinstance(found, tuple):
                at, length = found
                digest.update(self._buf[self._pos:at])
                size = self._base + at - start
                self._pos = at + length
                terminated = True
                break
            if self._eof:
                if not self.settled:
                    self.incomplete = True
                    raise StopIteration
                digest.update(self._buf[self._pos:])
                size = self._base + len(self._buf) - start
                self._pos = len(self._buf)
                terminated = False
                break
            # Hash all but the last code unit (it may be a CR whose LF is in the next chunk), then read on.
            upto = len(self._buf) - self._unit - len(self._buf) % self._unit
            if upto > self._pos:
                digest.update(self._buf[self._pos:upto])
                self._pos = upto
            self._read()
        line = Line(self.number, start, self._base + self._pos, preview, size, terminated, digest.hexdigest())
        self.number += 1
        return line
