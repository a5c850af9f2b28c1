"""What ``help()`` shows of the kit's fakes names only public modules (payhub.api, payhub.hookspecs,
payhub.testing) and entry-point groups, never an internal module a plugin may not import."""

from __future__ import annotations

import inspect
import re

import pytest

import payhub.testing
import payhub.testing.fakes

PUBLIC = re.compile(r"payhub\.(api|hookspecs|testing|rails|sources|calculators|hooks)\b")
ANY = re.compile(r"""(?<!["'/])\bpayhub\.[a-z_]+\b""")
FAKES = [name for name in payhub.testing.__all__
         if getattr(getattr(payhub.testing, name), "__module__", None) == payhub.testing.fakes.__name__]


@pytest.mark.parametrize("name", FAKES)
def test_docstrings_of_the_fakes_name_only_public_modules(name: str) -> None:
    obj = getattr(payhub.testing, name)
    docs = [obj.__doc__ or ""]  # its own, not inherited from payhub.api
    if inspect.isclass(obj):
        docs += [member.__doc__ or "" for attr, member in vars(obj).items()
                 if not attr.startswith("_") and getattr(member, "__module__", obj.__module__) == obj.__module__]
    internal = {ref for doc in docs for ref in ANY.findall(doc) if not PUBLIC.match(ref)}
    assert not internal, internal
