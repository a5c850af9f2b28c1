"""Readers for the sanctions lists' published file formats.

* ``ofac_csv``: OFAC's legacy CSV release, three files without a header: the primary file (``sdn.csv``, or
  ``cons_prim.csv`` for the consolidated non-SDN list) with 12 columns ``ent_num, SDN_Name, SDN_Type, Program,
  Title, Call_Sign, Vess_type, Tonnage, GRT, Vess_flag, Vess_owner, Remarks``; the aliases file (``alt.csv`` /
  ``cons_alt.csv``) with 5 columns ``ent_num, alt_num, alt_type, alt_name, alt_remarks``; the addresses file
  (``add.csv`` / ``cons_add.csv``) with 6 columns ``ent_num, add_num, address, city/state/postal code, country,
  add_remarks``. ``-0-`` is a null; the files end with an ``\\x1a`` (EOF) byte. They carry no date: the list's date
  is the newest modification time (UTC) of its files. Given in this order: primary, aliases, addresses (the last
  two optional).
* ``ofac_xml``: ``sdn.xml`` or ``consolidated.xml`` (``sdnList``): ``publshInformation/Publish_Date``
  (``MM/DD/YYYY``) is the list's date and ``publshInformation/Record_Count`` the number of ``sdnEntry`` records
  published (kept in :attr:`Parsed.declared`); each ``sdnEntry`` gives ``uid``, ``firstName``/``lastName``, ``sdnType``,
  ``programList/program``, ``akaList/aka`` (names), ``addressList/address/country``,
  ``nationalityList/nationality/country`` and ``citizenshipList/citizenship/country``.
* ``eu_xml``: the EU consolidated financial sanctions list (``export``): ``generationDate`` is the list's date;
  each ``sanctionEntity`` (``euReferenceNumber``, else ``logicalId``) gives ``nameAlias/@wholeName`` (the first is
  the name, the others aliases), ``subjectType/@code``, ``regulation/@programme`` and the ``countryIso2Code`` of
  its ``citizenship``, ``address`` and ``birthdate`` elements (``00``, unknown, is left out).

Size limits, so that a damaged or hostile file cannot exhaust memory or time: a file larger than the caller's
``max_bytes`` (the ``max_file_mb`` setting) fails its list; a name longer than :data:`MAX_NAME_CHARS` characters
(after runs of white space are collapsed) or an entry with more than :data:`MAX_ALIASES` aliases is skipped and
counted like any unreadable record: in the CSV files the row holding the long name (a primary row: its entry), or
the entry with too many alias rows; in the XML formats the whole entry.

XML is read with defusedxml, streamed: a document type declaration (and so any entity, the "billion laughs" bomb
among them) or an external reference is refused. A record that cannot be read (a short row, no id, no name, an
alias of an unknown entry) is reported in :attr:`Parsed.problems` and skipped; the others are kept, and
:attr:`Parsed.records` counts every record read (rows of every file, XML entries), so that the caller can refuse a
list where too many were skipped (:mod:`.checks`). A file that cannot be read at all (missing, not the format, not
XML) raises :class:`ListFileError` for the whole list.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from payhub.api import SanctionsEntry, SanctionsList
from payhub.compliance.sanctions.countries import country_code
from payhub.errors import PayhubError

Format = Literal["ofac_csv", "ofac_xml", "eu_xml"]
FORMATS: tuple[Format, ...] = ("ofac_csv", "ofac_xml", "eu_xml")
NULL = "-0-"
EOF = "\x1a"
MAX_PROBLEMS = 100
"""Problems kept per list (their count is always exact)."""
MAX_NAME_CHARS = 1000
"""A listed name (or alias) longer than this, in characters, is skipped: no real name comes close, and one huge
name would cost minutes and gigabytes to normalise and to match every payee against."""
MAX_ALIASES = 500
"""An entry with more aliases than this is skipped (real entries have at most a few dozen)."""
_SPACES = re.compile(r"\s+")


def collapse(text: str) -> str:
    """``text`` with runs of white space made one space, trimmed (linear in time and memory, however long)."""
    return _SPACES.sub(" ", text).strip()


def entry_problem(entry: SanctionsEntry) -> str | None:
    """Why ``entry`` is too large to screen against (more than :data:`MAX_ALIASES` aliases, or a name longer than
    :data:`MAX_NAME_CHARS`); None when it is not."""
    if len(entry.aliases) > MAX_ALIASES:
        return f"{len(entry.aliases):,} aliases, more than {MAX_ALIASES}"
    longest = max(len(name) for name in (entry.name, *entry.aliases))
    if longest > MAX_NAME_CHARS:
        return f"a name of {longest:,} characters, more than {MAX_NAME_CHARS:,}"
    return None


def bounded(entries: Sequence[SanctionsEntry]) -> tuple[list[SanctionsEntry], list[str]]:
    """``entries`` without those :func:`entry_problem` refuses, and a problem text for each left out."""
    kept: list[SanctionsEntry] = []
    problems: list[str] = []
    for entry in entries:
        problem = entry_problem(entry)
        if problem is None:
            kept.append(entry)
        else:
            problems.append(f"entry {entry.entry_id[:100]!r}: {problem}")
    return kept, problems


class ListFileError(PayhubError):
    """A list file that cannot be read at all; the message names the file and the problem."""


@dataclass
class Parsed:
    """A list as read: the list itself (``content``), the records skipped (``problems``, at most
    :data:`MAX_PROBLEMS` kept; ``skipped`` counts them all), every record read (``records``: the rows of all files,
    or the XML entries, skipped ones included), the number of records the file says it holds (``declared``: OFAC
    XML's ``Record_Count``; None when the format has none) and each file's SHA-256."""

    content: SanctionsList
    files: list[tuple[str, str]]  # (file name, sha256)
    skipped: int = 0
    problems: list[str] = field(default_factory=list)
    records: int = 0
    declared: int | None = None


class _Problems:
    def __init__(self) -> None:
        self.count = 0
        self.records = 0  # every record read, skipped ones included
        self.declared: int | None = None
        self.kept: list[str] = []

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.kept) < MAX_PROBLEMS:
            self.kept.append(text)


def list_sha256(file_hashes: Sequence[str]) -> str:
    """The SHA-256 of a list: its file's own for one file; for several, the SHA-256 of their hex digests, one per
    line, in the order the settings give the files."""
    if len(file_hashes) == 1:
        return file_hashes[0]
    return hashlib.sha256("".join(f"{h}\n" for h in file_hashes).encode()).hexdigest()


def _read(name: str, path: Path, max_bytes: int | None) -> bytes:
    """The bytes of ``path``; ListFileError when it cannot be read or holds more than ``max_bytes``."""
    too_big = (f"list {name}: {path} is larger than {max_bytes:,} bytes (max_file_mb): refused, not read"
               if max_bytes is not None else "")
    try:
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise ListFileError(too_big)
        with path.open("rb") as handle:
            blob = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    except OSError as exc:
        raise ListFileError(f"list {name}: cannot read {path}: {exc.strerror or exc}") from None
    if max_bytes is not None and len(blob) > max_bytes:  # it grew after the size was looked at
        raise ListFileError(too_big)
    return blob


def read_list(name: str, fmt: Format, files: Sequence[Path], max_bytes: int | None = None) -> Parsed:
    """Read the list ``name`` in format ``fmt`` from ``files``, each at most ``max_bytes`` long (None: no limit);
    raise ListFileError when a file cannot be read or is larger."""
    if not files:
        raise ListFileError(f"list {name}: no files given")
    blobs = [_read(name, path, max_bytes) for path in files]
    hashes = [hashlib.sha256(blob).hexdigest() for blob in blobs]
    problems = _Problems()
    if fmt == "ofac_csv":
        if len(files) > 3:
            raise ListFileError(f"list {name}: ofac_csv takes at most 3 files (primary, aliases, addresses)")
        entries = _ofac_csv(files, blobs, problems)
        published = max(datetime.fromtimestamp(path.stat().st_mtime, UTC).date() for path in files)
    elif fmt == "ofac_xml":
        if len(files) != 1:
            raise ListFileError(f"list {name}: ofac_xml takes one file (sdn.xml or consolidated.xml)")
        published, entries = _ofac_xml(files[0], blobs[0], problems)
    elif fmt == "eu_xml":
        if len(files) != 1:
            raise ListFileError(f"list {name}: eu_xml takes one file")
        published, entries = _eu_xml(files[0], blobs[0], problems)
    else:
        raise ListFileError(f"list {name}: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    parsed = SanctionsList(name=name, published_on=published, sha256=list_sha256(hashes), entries=tuple(entries))
    return Parsed(parsed, [(path.name, digest) for path, digest in zip(files, hashes, strict=True)],
                  problems.count, problems.kept, problems.records, problems.declared)


# ------------------------------------------------------------------------------------------------- OFAC CSV

def _text(blob: bytes) -> str:
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = blob.decode("cp1252", errors="replace")  # the legacy files predate UTF-8 at OFAC
    return text.rstrip().rstrip(EOF).rstrip()


def _cell(value: str) -> str:
    value = value.strip()
    return "" if value == NULL else value


def _rows(path: Path, blob: bytes, width: int, problems: _Problems) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each row of ``width`` cells; other rows are problems."""
    text = _text(blob)
    if text and "\0" in text:
        raise ListFileError(f"{path.name}: not a CSV text file (NUL bytes)")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for cells in reader:
            if not cells or cells == [""] or cells == [EOF]:
                continue
            problems.records += 1
            if len(cells) != width:
                problems.add(f"{path.name} line {reader.line_num}: {len(cells)} columns, expected {width}")
                continue
            yield reader.line_num, [_cell(c) for c in cells]
    except csv.Error as exc:
        raise ListFileError(f"{path.name} line {reader.line_num}: {exc}") from None


def _programs(text: str) -> tuple[str, ...]:
    """``SDGT] [IRGC`` (how the legacy CSV joins several programs) as ``("SDGT", "IRGC")``."""
    return tuple(p.strip(" []") for p in text.split("] [") if p.strip(" []"))


def _ofac_csv(files: Sequence[Path], blobs: Sequence[bytes], problems: _Problems) -> list[SanctionsEntry]:
    primary: dict[str, dict[str, object]] = {}
    for line, cells in _rows(files[0], blobs[0], 12, problems):
        ent_num, name, kind, program = cells[0], cells[1], cells[2], cells[3]
        if not ent_num.isdigit() or not name:
            problems.add(f"{files[0].name} line {line}: an entry needs a numeric ent_num and a name")
            continue
        if len(name) > MAX_NAME_CHARS:
            problems.add(f"{files[0].name} line {line}: a name of {len(name):,} characters, more than "
                         f"{MAX_NAME_CHARS:,}")
            continue
        if ent_num in primary:
            problems.add(f"{files[0].name} line {line}: ent_num {ent_num} appears twice")
            continue
        primary[ent_num] = {"name": name, "kind": (kind or "entity").lower(), "programs": _programs(program),
                            "aliases": [], "countries": []}
    if len(files) > 1:
        for line, cells in _rows(files[1], blobs[1], 5, problems):
            ent_num, alias = cells[0], cells[3]
            if ent_num not in primary or not alias:
                problems.add(f"{files[1].name} line {line}: an alias needs a known ent_num and a name")
                continue
            if len(alias) > MAX_NAME_CHARS:
                problems.add(f"{files[1].name} line {line}: a name of {len(alias):,} characters, more than "
                             f"{MAX_NAME_CHARS:,}")
                continue
            aliases = primary[ent_num]["aliases"]
            assert isinstance(aliases, list)
            aliases.append(alias)
    if len(files) > 2:
        for line, cells in _rows(files[2], blobs[2], 6, problems):
            ent_num, country = cells[0], cells[4]
            if ent_num not in primary:
                problems.add(f"{files[2].name} line {line}: an address of unknown ent_num {ent_num or '(none)'}")
                continue
            code = country_code(country) if country else None
            countries = primary[ent_num]["countries"]
            assert isinstance(countries, list)
            if code and code not in countries:
                countries.append(code)
    entries = [SanctionsEntry(entry_id=ent_num, name=str(v["name"]), aliases=tuple(v["aliases"]),  # type: ignore[arg-type]
                              countries=tuple(v["countries"]), programs=v["programs"],  # type: ignore[arg-type]
                              kind=str(v["kind"])) for ent_num, v in primary.items()]
    kept, too_large = bounded(entries)
    for problem in too_large:
        problems.add(f"{files[0].name} {problem}")
    return kept


# ------------------------------------------------------------------------------------------------------ XML

def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child(element: Element, name: str) -> Element | None:
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element if _local(child.tag) == name]


def _nested(element: Element, holder: str, item: str) -> list[Element]:
    """The ``item`` children of ``element``'s ``holder`` child (none when it has no such child)."""
    found = _child(element, holder)
    return _children(found, item) if found is not None else []


def _value(element: Element | None, name: str) -> str:
    child = _child(element, name) if element is not None else None
    return collapse(child.text or "") if child is not None else ""


class _Chunks:
    """``blob`` read by a streamed parse in chunks of 64 KiB that double (up to 64 MiB) while the parse yields no
    event: expat (before 2.6) scans an unfinished token again on each chunk, so one huge name fed in small chunks
    costs quadratic time (minutes for 60 MB); growing chunks keep it linear."""

    BASE, LARGEST = 64 * 1024, 64 * 1024 * 1024

    def __init__(self, blob: bytes) -> None:
        self.view = memoryview(blob)
        self.position = 0
        self.size = self.BASE
        self.progress = True  # set by the reader of the events

    def read(self, _size: int = -1) -> bytes:
        self.size = self.BASE if self.progress else min(self.size * 2, self.LARGEST)
        self.progress = False
        chunk = bytes(self.view[self.position:self.position + self.size])
        self.position += len(chunk)
        return chunk


def _events(path: Path, blob: bytes) -> Iterator[tuple[str, Element]]:
    """(event, element) pairs of a streamed parse that refuses DTDs, entities and external references."""
    chunks = _Chunks(blob)
    try:
        for event in SafeET.iterparse(chunks, events=("start", "end"), forbid_dtd=True, forbid_entities=True,
                                      forbid_external=True):
            chunks.progress = True
            yield event
    except DefusedXmlException as exc:
        raise ListFileError(f"{path.name}: refused: {type(exc).__name__} (a document type declaration, entity or "
                            "external reference, which published lists do not use)") from None
    except ParseError as exc:
        raise ListFileError(f"{path.name}: not well-formed XML: {exc}") from None


def _ofac_xml(path: Path, blob: bytes, problems: _Problems) -> tuple[date, list[SanctionsEntry]]:
    published: date | None = None
    entries: list[SanctionsEntry] = []
    root_seen = False
    number = 0
    for event, element in _events(path, blob):
        tag = _local(element.tag)
        if event == "start":
            if not root_seen and tag != "sdnList":
                raise ListFileError(f"{path.name}: not an OFAC sdnList document (root element {tag!r})")
            root_seen = True
            continue
        if tag == "Publish_Date":
            try:
                published = datetime.strptime((element.text or "").strip(), "%m/%d/%Y").date()
            except ValueError:
                raise ListFileError(f"{path.name}: Publish_Date {element.text!r} is not MM/DD/YYYY") from None
        elif tag == "Record_Count":
            count = (element.text or "").strip()
            if not count.isdigit():
                raise ListFileError(f"{path.name}: Record_Count {element.text!r} is not a number")
            problems.declared = int(count)
        elif tag == "sdnEntry":
            number += 1
            problems.records += 1
            entry = _ofac_entry(element)
            if entry is None:
                problems.add(f"{path.name} sdnEntry #{number}: an entry needs a uid and a lastName")
            elif (problem := entry_problem(entry)) is not None:
                problems.add(f"{path.name} sdnEntry #{number} (uid {entry.entry_id[:100]}): {problem}")
            else:
                entries.append(entry)
            element.clear()
    if published is None:
        raise ListFileError(f"{path.name}: no publshInformation/Publish_Date")
    return published, entries


def _person(element: Element) -> str:
    return " ".join(part for part in (_value(element, "firstName"), _value(element, "lastName")) if part)


def _ofac_entry(element: Element) -> SanctionsEntry | None:
    uid, last = _value(element, "uid"), _value(element, "lastName")
    if not uid or not last:
        return None
    aliases = [name for aka in _nested(element, "akaList", "aka") if (name := _person(aka))]
    countries: list[str] = []
    for holder, item in (("addressList", "address"), ("nationalityList", "nationality"),
                         ("citizenshipList", "citizenship")):
        for place in _nested(element, holder, item):
            code = country_code(_value(place, "country")) if _value(place, "country") else None
            if code and code not in countries:
                countries.append(code)
    programs = tuple(p for node in _nested(element, "programList", "program")
                     if (p := " ".join((node.text or "").split())))
    return SanctionsEntry(entry_id=uid, name=_person(element), aliases=tuple(aliases), countries=tuple(countries),
                          programs=programs, kind=_value(element, "sdnType").lower())


def _eu_xml(path: Path, blob: bytes, problems: _Problems) -> tuple[date, list[SanctionsEntry]]:
    published: date | None = None
    entries: list[SanctionsEntry] = []
    depth = 0
    number = 0
    for event, element in _events(path, blob):
        tag = _local(element.tag)
        if event == "start":
            if depth == 0:
                if tag != "export":
                    raise ListFileError(f"{path.name}: not an EU consolidated list export (root element {tag!r})")
                stamp = element.get("generationDate", "")
                try:
                    published = date.fromisoformat(stamp[:10])
                except ValueError:
                    raise ListFileError(f"{path.name}: generationDate {stamp!r} is not a date") from None
            depth += 1
            continue
        depth -= 1
        if tag == "sanctionEntity":
            number += 1
            problems.records += 1
            entry = _eu_entry(element)
            if entry is None:
                problems.add(f"{path.name} sanctionEntity #{number}: an entity needs an id (euReferenceNumber or "
                             "logicalId) and a nameAlias wholeName")
            elif (problem := entry_problem(entry)) is not None:
                problems.add(f"{path.name} sanctionEntity #{number} ({entry.entry_id[:100]}): {problem}")
            else:
                entries.append(entry)
            element.clear()
    if published is None:
        raise ListFileError(f"{path.name}: empty document")
    return published, entries


def _eu_entry(element: Element) -> SanctionsEntry | None:
    entry_id = element.get("euReferenceNumber") or element.get("logicalId") or ""
    found: dict[str, None] = {}
    for alias in _children(element, "nameAlias"):
        whole = collapse(alias.get("wholeName") or "")
        if whole:
            found.setdefault(whole)
            if len(found) > MAX_ALIASES + 1:  # enough to skip the entry for its alias count
                break
    names = list(found)
    if not entry_id or not names:
        return None
    countries: list[str] = []
    for holder in ("citizenship", "address", "birthdate"):
        for place in _children(element, holder):
            code = (place.get("countryIso2Code") or "").strip().upper()
            if len(code) == 2 and code.isalpha() and code not in countries:
                countries.append(code)
    programs = tuple(dict.fromkeys(p for r in _children(element, "regulation") if (p := r.get("programme") or "")))
    subject = _child(element, "subjectType")
    return SanctionsEntry(entry_id=entry_id, name=names[0], aliases=tuple(names[1:]), countries=tuple(countries),
                          programs=programs, kind=(subject.get("code") or "") if subject is not None else "")
