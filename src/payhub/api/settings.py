"""Settings-model types: the base model and the field types for paths, amounts, currencies, countries and URLs.

Every type validates once, when the core reads the settings file, and its error message names the problem; the core
adds the key (``rails.acme.base_url: ...``).
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import pycountry
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from payhub.errors import InvalidRecord
from payhub.integers import whole_numbers
from payhub.money import check_currency, parse_amount

__all__ = [
    "Amount",
    "ConfigPath",
    "Country",
    "Currency",
    "FileNamePart",
    "MAX_AMOUNT",
    "NoSettings",
    "PluginSettings",
    "Url",
]


class PluginSettings(BaseModel):
    """Base for plugin settings models: unknown keys are errors, values are validated, secrets are SecretStr.

    Numbers must be finite (``inf`` and ``nan`` are refused) and ``int`` keys whole (``true``, ``1.0`` and ``1e3``
    are refused, see :mod:`payhub.integers`); give every numeric key a lower and an upper bound
    (``Field(ge=…, le=…)``) and document them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    _whole_numbers = field_validator("*", mode="before")(whole_numbers)


class NoSettings(PluginSettings):
    """For plugins that take no settings."""


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    if "\0" in str(value):
        raise ValueError("a path cannot hold a NUL character")
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    return value if value.is_absolute() or base is None else Path(base) / value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path setting; relative paths are relative to the settings file's directory."""

_FILE_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _file_name_part(value: str) -> str:
    if not _FILE_NAME_PART.fullmatch(value):
        raise ValueError("1-64 letters, digits, '.', '_' or '-', starting with a letter or digit: a part of a file "
                         "name, so no '/', '\\' or '..' that could lead out of its directory")
    return value


FileNamePart = Annotated[str, AfterValidator(_file_name_part)]
"""A setting that becomes part of a file name (a prefix): it cannot name another directory."""


class JsonFloat(float):
    """A number with a fraction or exponent read from JSON text (a ``PAYHUB_…`` variable holding a table or a
    list); ``text`` is how it was written."""

    text: str

    def __new__(cls, text: str) -> JsonFloat:
        number = super().__new__(cls, text)
        number.text = text
        return number


def _plain_amount(value: Any) -> Any:
    if isinstance(value, JsonFloat):
        raise ValueError(f'write decimal amounts as strings, in JSON too: quote it ("{value.text}"), a float is not '
                         "exact")
    if isinstance(value, float):
        raise ValueError(f'write decimal amounts as strings ("{value}"), a float is not exact')
    if isinstance(value, str):
        try:
            return parse_amount(value)
        except InvalidRecord as exc:
            raise ValueError(str(exc)) from None
    return value


MAX_AMOUNT = Decimal("1000000000000")
"""The largest amount setting (10^12 in absolute value), far below what the database stores in minor units."""

Amount = Annotated[Decimal, BeforeValidator(_plain_amount), Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT)]
"""A decimal setting given as plain decimal text or an integer; floats and exponents are refused, and its absolute
value is at most :data:`MAX_AMOUNT`."""


def _currency_code(value: str) -> str:
    try:
        return check_currency(value)
    except InvalidRecord as exc:
        raise ValueError(str(exc)) from None


Currency = Annotated[str, AfterValidator(_currency_code)]
"""A currency setting: an ISO 4217 code with minor units, upper-cased."""


_USER_ASSIGNED_COUNTRIES = frozenset({"XK"})  # Kosovo: user-assigned in ISO 3166, used by banks and the EU


def _country_code(value: str) -> str:
    code = value.strip().upper()
    if not (re.fullmatch(r"[A-Z]{2}", code) and (code in _USER_ASSIGNED_COUNTRIES
                                                 or pycountry.countries.get(alpha_2=code) is not None)):
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code (like DE or US)")
    return code


Country = Annotated[str, AfterValidator(_country_code)]
"""A country setting: an ISO 3166-1 alpha-2 code (or ``XK``), upper-cased."""


def _http_url(value: str) -> str:
    if not value or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("a URL cannot be empty or hold white space or control characters")
    import httpx  # here: a settings model that has no URL does not pay for importing it

    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"{value!r} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{value!r} is not an absolute http:// or https:// URL with a host")
    shown = url.copy_with(username=None, password=None, query=None, fragment=None)  # no secret in the message
    if url.userinfo:
        raise ValueError(f"{shown} holds credentials (user:password@): a URL "
                         "setting is shown and logged in clear, so put them in a SecretStr setting")
    secret = sorted(k for k in url.params if k.lower().replace("-", "_") in _SECRET_PARAMS)
    if secret:
        raise ValueError(f"the query of {shown} holds {', '.join(secret)}: a URL setting is shown "
                         "and logged in clear, so put it in a SecretStr setting")
    return value


_SECRET_PARAMS = frozenset({"token", "access_token", "api_key", "apikey", "key", "secret", "client_secret",
                            "password", "passwd", "signature", "sig"})
"""Query parameters that carry a secret, which a :data:`Url` refuses."""

Url = Annotated[str, AfterValidator(_http_url)]
"""A URL setting: an absolute ``http://`` or ``https://`` URL with a host and no credentials (neither
``user:password@`` nor a query parameter such as ``token`` or ``api_key``: secrets go in ``SecretStr`` settings),
kept exactly as written."""
