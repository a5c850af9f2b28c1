"""The console in a real browser: Playwright for Python driving the system's Chromium (Debian's ``chromium``
package, launched by path: nothing is downloaded) against ``payhub serve`` in a subprocess (:mod:`browser_site`).

One server per test process (``site``), one browser per module (``browser``), a new context per test
(``context``/``page``); ``attacker`` is a second local web server for forged form posts.

Every test here is slow (a subprocess server and a browser); without Chromium they are skipped with the reason.
Chromium is looked for at ``PAYHUB_TEST_CHROMIUM``, then ``/usr/bin/chromium`` and ``chromium`` on ``PATH``.
Screenshots go to ``PAYHUB_TEST_SCREENSHOTS`` or ``build/screenshots/`` of the repository.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_site import OTHER_SITE, Attacker, Site, chromium_path, serving

BROWSER_TESTS = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark slow, before ``-m`` selects, every test of ``tests/browser`` (a server subprocess and a browser), as
    ``tests/conftest.py`` marks the acceptance tests."""
    for item in items:
        if item.path.is_relative_to(BROWSER_TESTS) and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """``payhub serve`` on a free port of 127.0.0.1 over a quickstart run; stopped at the end of the session."""
    if chromium_path() is None:
        named = os.environ.get("PAYHUB_TEST_CHROMIUM")
        pytest.skip(f"PAYHUB_TEST_CHROMIUM={named!r} is not an executable file" if named else
                    "no Chromium for the browser tests: install Debian's chromium package (apt-get install -y "
                    "chromium) or set PAYHUB_TEST_CHROMIUM to a Chromium executable")
    pytest.importorskip("payhub_bank", reason="the quickstart needs the bank rail plugin (plugins/payout_bank)")
    pytest.importorskip("payhub_creditnote", reason="the quickstart needs plugins/payout_creditnote")
    pytest.importorskip("payhub_simulators.giftcard", reason="the quickstart needs the simulators (simulators/)")
    with serving(tmp_path_factory.mktemp("console")) as running:
        yield running


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    """One headless Chromium per module (Playwright is started and stopped with it, so no event loop of its own
    outlives the module)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    executable = chromium_path()
    assert executable is not None  # site skipped otherwise
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=[
            "--no-sandbox", f"--host-resolver-rules=MAP {OTHER_SITE} 127.0.0.1, EXCLUDE localhost"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser context (its own cookies) at 1280x800, accepting downloads."""
    fresh = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    fresh.set_default_timeout(15_000)
    try:
        yield fresh
    finally:
        fresh.close()


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    server = Attacker()
    try:
        yield server
    finally:
        server.close()
