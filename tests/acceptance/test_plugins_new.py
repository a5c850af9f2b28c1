"""``payhub plugins new``: each kind of package passes, as written, its own tests (every check of payhub's contract
suite for the kind among them), ruff and ``mypy --strict``.

The package is not installed into this environment: its ``src`` and a dist-info holding its entry point (what
``pip install -e`` would write) are put on ``PYTHONPATH`` of the subprocesses only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import PAYHUB

from payhub.scaffold import KINDS, Kind, blueprint
from payhub.testing import write_distribution
from payhub.testing.contracts.calculator_checks import CALCULATOR_CHECKS
from payhub.testing.contracts.hook_checks import HOOK_CHECKS
from payhub.testing.contracts.rail_checks import RAIL_CHECKS
from payhub.testing.contracts.settings_checks import SETTINGS_CHECKS
from payhub.testing.contracts.source_checks import SOURCE_CHECKS

CHECK_NAMES: dict[Kind, list[str]] = {
    "rail": [check.name for check in RAIL_CHECKS],
    "source": [check.name for check in SOURCE_CHECKS],
    "calculator": [check.name for check in CALCULATOR_CHECKS],
    "hook": [check.name for check in HOOK_CHECKS],
}


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for the four packages: payhub's own modules are analysed once."""
    return tmp_path_factory.mktemp("mypy-cache")


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_new_package_passes_its_tests_ruff_and_mypy(kind: Kind, tmp_path: Path, mypy_cache: Path) -> None:
    name = f"acme_{kind}"
    made = run([*PAYHUB, "plugins", "new", kind, name], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    root = tmp_path / f"payhub-acme-{kind}"
    assert f"wrote the {kind} plugin 'acme_{kind}' (payhub-acme-{kind}, package payhub_acme_{kind})" in made.stdout

    bp = blueprint(kind, name)
    site = write_distribution(tmp_path / "site", bp.distribution, bp.entry_points_txt(), version="0.1.0")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root / "src"), str(site), env.get("PYTHONPATH")]))

    tests = run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"], cwd=root, env=env)
    summary = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else ""
    assert tests.returncode == 0 and re.fullmatch(r"=+ \d+ passed in .*", summary), tests.stdout + tests.stderr
    passed = set(re.findall(rf"tests/test_{kind}\.py::TestContract::(test_\w+) PASSED", tests.stdout))
    expected = {f"test_{name}" for name in (*CHECK_NAMES[kind], *(check.name for check in SETTINGS_CHECKS))}
    assert passed == expected  # the whole contract ran, nothing skipped

    lint = run([sys.executable, "-m", "ruff", "check", "."], cwd=root, env=env)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    types = run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(mypy_cache), "src", "tests"],
                cwd=root, env=env)
    assert types.returncode == 0, types.stdout + types.stderr


def test_an_existing_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "payhub-acme").mkdir()
    (tmp_path / "payhub-acme" / "notes.txt").write_text("mine")
    refused = run([*PAYHUB, "plugins", "new", "rail", "acme"], cwd=tmp_path)
    assert refused.returncode == 1
    assert "already exists and is not an empty directory; nothing was written" in " ".join(refused.stderr.split())
    assert [p.name for p in tmp_path.iterdir()] == ["payhub-acme"]
    assert [p.name for p in (tmp_path / "payhub-acme").iterdir()] == ["notes.txt"]
    bad = run([*PAYHUB, "plugins", "new", "rail", "../acme"], cwd=tmp_path / "payhub-acme")
    assert bad.returncode == 2 and "is not a plugin name" in bad.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["payhub-acme"]


def test_the_next_steps_install_payhub_first_and_a_shadowing_package_is_refused(tmp_path: Path) -> None:
    made = run([*PAYHUB, "plugins", "new", "hook", "acme"], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    steps = made.stdout.split("next:")[1].splitlines()
    first = next(n for n, step in enumerate(steps) if "pip install" in step)
    assert "not the unrelated PyPI project named payhub" in steps[first]
    assert steps[first + 1].strip() == "pip install -e '.[test]'"
    requirement = re.search(r'"(payhub[<>=,.\d]+)"', (tmp_path / "payhub-acme" / "pyproject.toml").read_text())
    assert requirement and "<" in requirement.group(1)  # a compatible series, never the unrelated payhub 1.0.0
    shadow = run([*PAYHUB, "plugins", "new", "rail", "acme", "--package", "httpx", "-d", "other"], cwd=tmp_path)
    assert shadow.returncode == 2 and "'httpx' would shadow" in shadow.stderr, shadow.stderr
    assert not (tmp_path / "other").exists()
