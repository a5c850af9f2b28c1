"""The console's assets ship inside the package and are the files vendored from npm, unchanged."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

from payhub.console.web import CSP, TEMPLATES

STATIC = resources.files("payhub.console") / "static"


def test_vendored_chartjs_is_the_recorded_release() -> None:
    vendor = STATIC / "vendor"
    recorded = dict(line.split()[::-1] for line in vendor.joinpath("SHA256SUMS").read_text().splitlines())
    data = vendor.joinpath("chart.umd.min.js").read_bytes()
    assert hashlib.sha256(data).hexdigest() == recorded["chart.umd.min.js"]
    version = vendor.joinpath("CHARTJS_VERSION").read_text().strip()
    assert f"Chart.js v{version}" in data[:200].decode()
    assert "MIT" in vendor.joinpath("chart.js-LICENSE.md").read_text()


def test_templates_load_nothing_from_other_sites() -> None:
    for name in TEMPLATES.list_templates():
        text = TEMPLATES.loader.get_source(TEMPLATES, name)[0]  # type: ignore[union-attr]
        assert not re.search(r"""(src|href|action)=["']?(https?:)?//""", text), name
        assert "|safe" not in text.replace(" ", "") and "Markup" not in text, name
        assert "<script>" not in text and " on" + "click=" not in text, name  # no inline script: the CSP forbids it


def test_content_security_policy_allows_only_this_site() -> None:
    assert "default-src 'none'" in CSP and "script-src 'self'" in CSP and "unsafe" not in CSP
    assert "frame-ancestors 'none'" in CSP and "form-action 'self'" in CSP
