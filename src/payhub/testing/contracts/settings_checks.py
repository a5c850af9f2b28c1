"""The rules for a plugin's settings model: secrets are ``SecretStr``, and no key shadows a core key of its section.

A key looks like a secret when one of the words of its name (split at ``_``, ``-`` and camelCase humps:
``clientSecret`` is ``client`` ``secret``) is ``key``, ``secret``, ``token``,
``password``, ``passwd``, ``passphrase`` or ``credential(s)``, or when it ends in ``apikey``, unless its last word
says it names where or how a secret is used rather than the secret (``oauth_token_path``, ``api_key_header``: see
``NOT_SECRET_TAILS``); ``exempt`` names keys that only look like one (``public_key``). A key whose value is a path
(``private_key_file``: the file a secret is kept in), a number or a duration (``token_refresh_margin_seconds``) is
not one. Nested models are checked too, with dotted names.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import PurePath
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretBytes, SecretStr

from payhub.settings import HookSection, ProgramSection, RailSection, SourceSection
from payhub.testing.contracts.checks import Check, ContractViolation

__all__ = ["CORE_KEYS", "SETTINGS_CHECKS", "PluginKind", "SettingsSubject", "looks_secret"]

PluginKind = Literal["rail", "source", "calculator", "hook"]
CORE_KEYS: dict[str, frozenset[str]] = {
    kind: frozenset(section.model_fields)
    for kind, section in (("rail", RailSection), ("source", SourceSection), ("calculator", ProgramSection),
                          ("hook", HookSection))
}
"""The keys the core reads from a plugin's section, by plugin kind (from :mod:`payhub.settings`)."""

SECRET_WORDS = frozenset({"key", "secret", "token", "password", "passwd", "passphrase", "credential", "credentials"})
NOT_SECRET_TAILS = frozenset({"path", "url", "uri", "endpoint", "header", "name", "id", "field", "param", "file",
                              "dir", "directory", "store"})
"""Last words of a key that name a place, a label or a reference, not the secret itself."""


_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def looks_secret(name: str) -> bool:
    words = re.split(r"[_\-]+", _HUMP.sub("_", name).lower())
    if words[-1] in NOT_SECRET_TAILS:
        return False
    return bool(SECRET_WORDS.intersection(words)) or words[-1].endswith("apikey")


@dataclass
class SettingsSubject:
    """A settings model (``settings_model`` or ``params_model``) of a plugin of ``kind``."""

    model: type[BaseModel]
    kind: PluginKind
    exempt: frozenset[str] = field(default_factory=frozenset)


def _types(annotation: Any) -> Iterator[Any]:
    yield annotation
    if get_origin(annotation) in (Union, types.UnionType) or get_args(annotation):
        for arg in get_args(annotation):
            yield from _types(arg)


def _fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, info in model.model_fields.items():
        yield prefix + name, info.annotation
        for inner in _types(info.annotation):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                yield from _fields(inner, f"{prefix}{name}.")


def _not_text(annotation: Any) -> bool:
    """Every type the value may take (None aside) is a path, a number or a duration: it cannot hold a secret."""
    leaves = [t for t in _types(annotation) if isinstance(t, type) and t is not type(None)]
    return bool(leaves) and all(issubclass(t, PurePath | int | float | Decimal | timedelta) for t in leaves)


def secrets_are_secretstr(subject: SettingsSubject) -> None:
    plain = [name for name, annotation in _fields(subject.model)
             if looks_secret(name.rsplit(".", 1)[-1]) and name not in subject.exempt
             and not _not_text(annotation) and not any(t in (SecretStr, SecretBytes) for t in _types(annotation))]
    if plain:
        raise ContractViolation(f"{subject.model.__name__}: {', '.join(plain)} looks like a secret but is not "
                                "pydantic.SecretStr, so `payhub config show`, logs and errors could print it")


def no_core_key_collision(subject: SettingsSubject) -> None:
    core = CORE_KEYS[subject.kind]
    clashes = sorted(set(subject.model.model_fields) & core)
    aliases = sorted({info.alias for info in subject.model.model_fields.values() if info.alias} & core)
    if clashes or aliases:
        found = clashes + aliases
        named = f"{found[0]} is a core key" if len(found) == 1 else f"{', '.join(found[:-1])} and {found[-1]} are " \
            "core keys"
        raise ContractViolation(f"{subject.model.__name__}: {named} of a {subject.kind} section "
                                f"({', '.join(sorted(core))}); the core consumes them and the plugin would only ever "
                                "see their defaults")


SETTINGS_CHECKS: tuple[Check[SettingsSubject], ...] = (
    Check("secrets_are_secretstr", "keys that look like secrets are SecretStr", secrets_are_secretstr),
    Check("no_core_key_collision", "no key has the name of a core key of the section", no_core_key_collision),
)
"""The settings-model contract, in the order it is run."""
