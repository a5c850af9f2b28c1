"""Writing a new plugin package: ``payhub plugins new rail|source|calculator|hook NAME``.

:func:`blueprint` checks the names and derives the rest (distribution, package, class names); :func:`render` fills
the templates shipped in ``payhub/scaffold/templates`` and :func:`write` puts the package on disk, all of it or
nothing. The templates are ``string.Template`` text with ``$name`` placeholders, in ``*.tmpl`` files so that no tool
takes them for code or configuration: a kind's own in ``templates/<kind>``, the shared ones in ``templates/common``.
"""

from __future__ import annotations

import importlib.util
import json
import keyword
import os
import re
import shlex
import shutil
import sys
import uuid
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution, entry_points, packages_distributions
from importlib.resources import files
from pathlib import Path, PurePosixPath
from string import Template
from typing import Literal, get_args
from urllib.parse import urlsplit
from urllib.request import url2pathname

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from payhub import __version__
from payhub.api import API_VERSION
from payhub.errors import PayhubError

Kind = Literal["rail", "source", "calculator", "hook"]
KINDS: tuple[Kind, ...] = get_args(Kind)
GROUPS: dict[Kind, str] = {
    "rail": "payhub.rails",
    "source": "payhub.sources",
    "calculator": "payhub.calculators",
    "hook": "payhub.hooks",
}
_SUFFIX: dict[Kind, str] = {"rail": "Rail", "source": "Source", "calculator": "Calculator", "hook": "Hook"}

NAME_RULE = "1-32 lower-case letters, digits and '_', starting with a letter"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_PACKAGE = re.compile(r"[a-z_][a-z0-9_]{0,39}")
# The top-level modules a generated package needs (its dependencies and their test extra), refused as its package
# name even where they are not installed yet; any other importable module is found with importlib.
_RESERVED = frozenset({"payhub", "pydantic", "pydantic_core", "httpx", "pytest", "_pytest", "mypy", "ruff", "pluggy",
                       "tests", "test", "src"})

# Each generated file: (template, where it goes). ``{pkg}`` and ``{kind}`` are filled from the blueprint.
_FILES: tuple[tuple[str, str], ...] = (
    ("common/pyproject.toml", "pyproject.toml"),
    ("common/README.md", "README.md"),
    ("common/gitignore", ".gitignore"),
    ("common/__init__.py", "src/{pkg}/__init__.py"),
    ("common/py.typed", "src/{pkg}/py.typed"),
    ("{kind}/settings.py", "src/{pkg}/settings.py"),
    ("{kind}/plugin.py", "src/{pkg}/{kind}.py"),
    ("{kind}/test_plugin.py", "tests/test_{kind}.py"),
)


class ScaffoldError(PayhubError):
    """The package cannot be written (its directory exists, or cannot be created); the message says why."""


@dataclass(frozen=True, slots=True)
class Blueprint:
    """The names of a plugin package to write."""

    kind: Kind
    name: str  # the entry-point name, and the default settings section name
    package: str  # the import package, under src/
    distribution: str  # the project name in pyproject.toml

    @property
    def group(self) -> str:
        """The entry-point group of the kind."""
        return GROUPS[self.kind]

    @property
    def title(self) -> str:
        """The name in CamelCase: ``acme_pay`` -> ``AcmePay``."""
        return "".join(part.capitalize() for part in self.name.split("_"))

    @property
    def class_name(self) -> str:
        """The plugin's class: ``AcmePayRail``."""
        return self.title + _SUFFIX[self.kind]

    @property
    def entry_point(self) -> str:
        """The entry point's value: ``payhub_acme_pay.rail:AcmePayRail``."""
        return f"{self.package}.{self.kind}:{self.class_name}"

    def entry_points_txt(self) -> str:
        """The text of the distribution's ``entry_points.txt`` (for a test dist-info, as pip would write it)."""
        return f"[{self.group}]\n{self.name} = {self.entry_point}\n"


def check_name(name: str) -> str:
    """Return ``name`` if it can be a plugin's entry-point name and settings section; raise ValueError otherwise."""
    if not _NAME.fullmatch(name):
        hint = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        also = f" (for example {hint!r})" if hint and _NAME.fullmatch(hint) else ""
        raise ValueError(f"{name!r} is not a plugin name: use {NAME_RULE}{also}")
    return name


def check_package(package: str, distribution: str | None = None) -> str:
    """Return ``package`` if it can be the plugin's import package; raise ValueError otherwise.

    Refused: what is not a lower-case identifier, and a name that would shadow another top-level module, so that
    the plugin or its dependencies import the wrong one: the standard library's, a dependency of the generated
    package (payhub, pydantic, httpx, pytest, mypy, ruff, pluggy), ``tests``, and any module importable here
    (``importlib.util.find_spec``) unless it is the package of ``distribution`` itself, installed before.
    """
    if not _PACKAGE.fullmatch(package) or keyword.iskeyword(package):
        raise ValueError(f"{package!r} is not a package name: use 1-40 lower-case letters, digits and '_', "
                         "not starting with a digit, and not a Python keyword")
    if package in _RESERVED or package in sys.stdlib_module_names \
            or (_importable(package) and not _belongs_to(package, distribution)):
        other = f"payhub_{package}" if not package.startswith("payhub_") else f"{package}_plugin"
        also = f"--package {other}" if _PACKAGE.fullmatch(other) else "--package"
        raise ValueError(f"{package!r} would shadow another module of that name: choose a name of your own, such "
                         f"as {other!r} ({also})")
    return package


def _importable(module: str) -> bool:
    """Whether a top-level ``module`` can be imported here (without importing it)."""
    try:
        return module in sys.modules or importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return True


def _belongs_to(module: str, distribution: str | None) -> bool:
    """Whether the importable ``module`` is installed by ``distribution`` alone (the package written before)."""
    if distribution is None:
        return False
    owners = {canonicalize_name(owner) for owner in packages_distributions().get(module, [])}
    return owners == {canonicalize_name(distribution)}


def blueprint(kind: Kind, name: str, package: str | None = None) -> Blueprint:
    """The blueprint of a ``kind`` plugin named ``name``; the package defaults to ``payhub_<name>``."""
    if kind not in KINDS:
        raise ValueError(f"{kind!r} is not a kind of plugin: use one of {', '.join(KINDS)}")
    check_name(name)
    project = "payhub-" + name.replace("_", "-")
    return Blueprint(kind, name, check_package(package or f"payhub_{name}", project), project)


def installed_as(bp: Blueprint) -> list[str]:
    """The installed distributions that already register ``bp.name`` in its group (a name clash for admins)."""
    found = []
    for ep in entry_points(group=bp.group, name=bp.name):
        dist = ep.dist
        found.append(f"{dist.name} {dist.version}" if dist else ep.value)
    return sorted(found)


def api_range() -> str:
    """The ``api_version`` a generated plugin declares: this payhub's API version up to its next major."""
    major = int(API_VERSION.split(".")[0])
    return f">={API_VERSION},<{major + 1}"


def payhub_requirement(version: str = __version__) -> str:
    """The generated package's requirement on payhub: the compatible series of ``version`` (the running payhub's).

    ``0.Y.*`` for a 0.x version (each minor may break), ``X.*`` from ``X.Y`` on otherwise: ``payhub>=0.1,<0.2``.
    Never satisfied by the unrelated PyPI project named payhub (1.0.0) while payhub is at 0.x; payhub itself is
    installed from its repository or wheel first, as the generated README says.
    """
    try:
        release = Version(version).release
    except InvalidVersion:
        raise ValueError(f"payhub's version {version!r} is not a PEP 440 version") from None
    major, minor = release[0], release[1] if len(release) > 1 else 0
    upper = f"0.{minor + 1}" if major == 0 else f"{major + 1}"
    return f"payhub>={major}.{minor},<{upper}"


def payhub_install_command() -> str:
    """The command that installs the running payhub into another environment: from the directory or file it was
    installed from when pip recorded one (PEP 610 ``direct_url.json``), else from its wheel, by file name."""
    wheel = f"pip install payhub-{__version__}-py3-none-any.whl"
    try:
        recorded = distribution("payhub").read_text("direct_url.json")
        origin = json.loads(recorded) if recorded else {}
    except (PackageNotFoundError, ValueError):
        return wheel
    url = origin.get("url", "") if isinstance(origin, dict) else ""
    if not isinstance(url, str) or not url.startswith("file://"):
        return wheel
    path = url2pathname(urlsplit(url).path)
    editable = bool((origin.get("dir_info") or {}).get("editable"))
    return f"pip install {'-e ' if editable else ''}{shlex.quote(path)}"


def _variables(bp: Blueprint) -> dict[str, str]:
    return {
        "kind": bp.kind,
        "name": bp.name,
        "name_upper": bp.name.upper(),
        "package": bp.package,
        "distribution": bp.distribution,
        "group": bp.group,
        "title": bp.title,
        "class_name": bp.class_name,
        "settings_class": bp.title + "Settings",
        "entry_point": bp.entry_point,
        "payhub_requirement": payhub_requirement(),
        "payhub_version": __version__,
        "api_range": api_range(),
        "extra_dependencies": '\n    "httpx>=0.27",' if bp.kind in ("rail", "source") else "",
        "section": {"rail": "rails", "source": "sources", "calculator": "programs", "hook": "hooks"}[bp.kind],
        "plugin_key": "calculator" if bp.kind == "calculator" else "plugin",
    }


def _sorted_imports(bp: Blueprint) -> dict[str, str]:
    """The imports of the plugin's class and settings model in the order ruff's isort wants them."""
    settings = bp.title + "Settings"
    modules = sorted([(bp.kind, bp.class_name), ("settings", settings)])
    return {
        "init_imports": "".join(f"from {bp.package}.{module} import {name}\n" for module, name in modules),
        "all_names": ", ".join(f'"{name}"' for name in sorted([bp.class_name, settings])),
        "test_imports": "".join(f"    {name},\n" for name in sorted([bp.class_name, settings])),
    }


def render(bp: Blueprint) -> dict[PurePosixPath, str]:
    """The package's files: relative path -> text."""
    templates = files("payhub.scaffold") / "templates"
    variables = _variables(bp) | _sorted_imports(bp)
    variables["usage"] = Template((templates / bp.kind / "usage.md.tmpl").read_text("utf-8")).substitute(variables)
    out: dict[PurePosixPath, str] = {}
    for source, target in _FILES:
        text = (templates / (source.format(kind=bp.kind) + ".tmpl")).read_text("utf-8")
        out[PurePosixPath(target.format(pkg=bp.package, kind=bp.kind))] = Template(text).substitute(variables)
    return out


def write(bp: Blueprint, directory: Path) -> list[PurePosixPath]:
    """Write the package into ``directory``, which must not exist or be empty; return the files written.

    The files are written into a new directory next to it and renamed into place, so a failure leaves nothing
    behind, and an existing non-empty directory is never written into.
    """
    directory = Path(os.path.abspath(directory))
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ScaffoldError(f"{directory} already exists and is not an empty directory; nothing was written "
                            "(choose another --directory, or move it away)")
    rendered = render(bp)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = directory.parent / f".{directory.name}.{uuid.uuid4().hex[:8]}.partial"
        staging.mkdir()
    except OSError as exc:
        raise ScaffoldError(f"cannot create {directory}: {exc.strerror or exc}") from exc
    try:
        for path, text in rendered.items():
            target = staging.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        os.rename(staging, directory)  # atomic; fails if something appeared there meanwhile
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ScaffoldError(f"cannot write {directory}: {exc.strerror or exc}") from exc
    return sorted(rendered)
