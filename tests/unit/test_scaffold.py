"""``payhub plugins new``: names checked, templates filled, the package written whole or not at all.

That the packages it writes pass their own tests, ruff and mypy is tests/acceptance/test_plugins_new.py.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import payhub
from payhub.scaffold import KINDS, Kind, ScaffoldError, blueprint, payhub_requirement, render, write
from payhub.testing import invoke_cli

LONGEST = "n" * 32


@pytest.mark.parametrize("kind", KINDS)
def test_every_file_is_filled_in_and_fits_ruffs_line_length(kind: Kind) -> None:
    files = render(blueprint(kind, LONGEST, "p" * 40))
    assert {str(path) for path in files} >= {"pyproject.toml", "README.md", f"src/{'p' * 40}/settings.py",
                                              f"src/{'p' * 40}/{kind}.py", f"tests/test_{kind}.py"}
    for path, text in files.items():
        assert "$" not in text.replace("${", ""), path  # no placeholder left unfilled
        if path.suffix == ".py":
            ast.parse(text, str(path))
            long = [line for line in text.splitlines() if len(line) > 120]
            assert not long, (path, long)


@pytest.mark.parametrize("kind", KINDS)
def test_pyproject_registers_the_entry_point_and_depends_on_payhub(kind: Kind) -> None:
    bp = blueprint(kind, "acme_pay")
    project = tomllib.loads(render(bp)[PurePosixPath("pyproject.toml")])["project"]
    assert project["name"] == "payhub-acme-pay"
    group = {"rail": "payhub.rails", "source": "payhub.sources", "calculator": "payhub.calculators",
             "hook": "payhub.hooks"}[kind]
    assert project["entry-points"] == {group: {"acme_pay": bp.entry_point}}
    assert bp.entry_point == f"payhub_acme_pay.{kind}:AcmePay{kind.capitalize()}"
    requirement = Requirement(project["dependencies"][0])
    assert requirement.name == "payhub"
    assert Version(payhub.__version__) in requirement.specifier  # the running payhub's compatible series
    assert Version("1.0.0") not in requirement.specifier  # never the unrelated PyPI project named payhub
    assert bp.entry_points_txt() == f"[{group}]\nacme_pay = {bp.entry_point}\n"


@pytest.mark.parametrize("name", ["", "Acme", "acme-pay", "1acme", "_acme", "../acme", "acme/x", "a" * 33,
                                  "acme pay", "acmé", "acme\n"])
def test_a_name_that_is_not_an_entry_point_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="is not a plugin name"):
        blueprint("rail", name)


@pytest.mark.parametrize("package", ["os", "json", "payhub", "tests", "class", "Acme", "acme.pay", "9x", "x-y"])
def test_a_package_that_would_shadow_a_module_or_is_not_a_name_is_refused(package: str) -> None:
    with pytest.raises(ValueError, match="package name|shadow"):
        blueprint("rail", "acme", package)


@pytest.mark.parametrize(("version", "expected"), [
    ("0.1.0", "payhub<0.2,>=0.1"), ("0.1.7.dev3", "payhub<0.2,>=0.1"), ("0.12.1", "payhub<0.13,>=0.12"),
    ("1.4.2", "payhub<2,>=1.4"), ("2.0", "payhub<3,>=2.0"),
])
def test_payhub_is_required_in_the_compatible_series_of_the_running_version(version: str, expected: str) -> None:
    assert str(Requirement(payhub_requirement(version))) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_the_readme_says_to_install_payhub_from_its_repository_not_pypi(kind: Kind) -> None:
    readme = " ".join(render(blueprint(kind, "acme_pay"))[PurePosixPath("README.md")].split())
    assert "pypi.org" not in readme
    assert "pip install -e /path/to/payhub" in readme
    assert f"pip install payhub-{payhub.__version__}-py3-none-any.whl" in readme
    assert "project named `payhub` on PyPI is unrelated" in readme
    assert "`pip install payhub-acme-pay`" not in readme  # nor this plugin from an index: from its directory


@pytest.mark.parametrize("package", ["httpx", "pydantic", "pluggy", "pytest", "mypy", "ruff", "sqlalchemy", "click"])
def test_a_package_that_would_shadow_an_installed_module_or_a_dependency_is_refused(package: str) -> None:
    with pytest.raises(ValueError, match=f"'{package}' would shadow .*such as 'payhub_{package}'"):
        blueprint("rail", "acme", package)


def test_a_derived_package_that_would_shadow_an_importable_module_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "payhub_acme_pay.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="'payhub_acme_pay' would shadow .*--package"):
        blueprint("rail", "acme_pay")


def test_the_new_packages_own_installed_module_is_not_a_clash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "payhub_acme_pay").mkdir()
    (tmp_path / "payhub_acme_pay" / "__init__.py").write_text("")
    dist = tmp_path / "payhub_acme_pay-0.1.0.dist-info"  # as `pip install -e` of the package wrote it
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: payhub-acme-pay\nVersion: 0.1.0\n")
    (dist / "top_level.txt").write_text("payhub_acme_pay\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert blueprint("rail", "acme_pay").package == "payhub_acme_pay"
    with pytest.raises(ValueError, match="would shadow"):
        blueprint("rail", "other", "payhub_acme_pay")  # another package's module


def test_writes_into_a_new_or_empty_directory(tmp_path: Path) -> None:
    written = write(blueprint("hook", "acme"), tmp_path / "new" / "payhub-acme")
    assert (tmp_path / "new" / "payhub-acme" / "src" / "payhub_acme" / "hook.py").is_file()
    assert len(written) == len(list(p for p in (tmp_path / "new" / "payhub-acme").rglob("*") if p.is_file()))
    (tmp_path / "empty").mkdir()
    write(blueprint("hook", "acme"), tmp_path / "empty")
    assert (tmp_path / "empty" / "pyproject.toml").is_file()


def test_never_writes_into_an_existing_directory_or_over_a_file(tmp_path: Path) -> None:
    target = tmp_path / "payhub-acme"
    target.mkdir()
    (target / "pyproject.toml").write_text("mine")
    with pytest.raises(ScaffoldError, match="already exists"):
        write(blueprint("rail", "acme"), target)
    assert [p.name for p in target.iterdir()] == ["pyproject.toml"]
    assert (target / "pyproject.toml").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ScaffoldError, match="already exists"):
        write(blueprint("rail", "acme"), tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "payhub-acme"]  # nothing half-written left


def test_the_command_writes_the_package_and_says_what_next(tmp_path: Path) -> None:
    result = invoke_cli("plugins", "new", "calculator", "acme_bonus", "--directory", str(tmp_path / "pkg"),
                        "--package", "acme_bonus")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pkg" / "src" / "acme_bonus" / "calculator.py").is_file()
    assert "wrote the calculator plugin 'acme_bonus' (payhub-acme-bonus, package acme_bonus)" in result.stdout
    steps = result.stdout.split("next:")[1]
    assert steps.index("pip install") < steps.index("pip install -e '.[test]'")  # payhub first, from its source
    assert "not the unrelated PyPI project named payhub" in steps


def test_the_command_refuses_an_existing_directory_with_exit_1(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "keep").write_text("x")
    result = invoke_cli("plugins", "new", "rail", "acme", "-d", str(tmp_path / "pkg"))
    assert result.exit_code == 1
    assert "already exists and is not an empty directory; nothing was written" in result.stderr
    assert [p.name for p in (tmp_path / "pkg").iterdir()] == ["keep"]


@pytest.mark.parametrize(("args", "message"), [
    (("rail", "../evil"), "Invalid value for 'NAME': '../evil' is not a plugin name"),
    (("rail", "Acme-Pay"), "(for example 'acme_pay')"),
    (("wallet", "acme"), "Invalid value for '{rail|source|calculator|hook}'"),
    (("rail", "acme", "--package", "json"), "Invalid value for '--package': 'json' would shadow another module"),
    (("rail", "acme", "--package", "httpx"), "Invalid value for '--package': 'httpx' would shadow"),
])
def test_the_command_refuses_bad_names_with_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = invoke_cli("plugins", "new", *args, "-d", str(tmp_path / "pkg"))
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert not (tmp_path / "pkg").exists()


def test_the_command_refuses_a_derived_package_that_would_shadow_a_module_with_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "payhub_acme.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke_cli("plugins", "new", "rail", "acme", "-d", str(tmp_path / "pkg"))
    assert result.exit_code == 2
    assert "'payhub_acme' would shadow" in result.stderr and "--package" in result.stderr
    assert not (tmp_path / "pkg").exists()


def test_the_command_warns_when_the_name_is_already_installed(tmp_path: Path) -> None:
    result = invoke_cli("plugins", "new", "rail", "csv_export", "-d", str(tmp_path / "pkg"))
    assert result.exit_code == 0, result.output
    assert f"warning: a rail plugin named 'csv_export' is already installed (payhub {payhub.__version__})" \
        in result.stderr
    assert (tmp_path / "pkg" / "src" / "payhub_csv_export" / "rail.py").is_file()
