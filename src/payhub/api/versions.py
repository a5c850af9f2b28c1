"""The version of the public API and how its deprecations are announced.

:data:`API_VERSION` is ``MAJOR.MINOR``. A minor release only adds (names, hooks, optional arguments, fields with
defaults); a major release may remove or change what was deprecated before. A plugin declares the range it supports
as a class (or module) attribute ``api_version`` holding a :pep:`440` specifier set (``">=1.0,<2"``); the loader
fails a plugin whose range excludes :data:`API_VERSION`, or whose range cannot be read, with the reason.
"""

from __future__ import annotations

__all__ = [
    "API_VERSION",
    "PayhubDeprecationWarning",
]

API_VERSION = "1.0"
"""The version of :mod:`payhub.api` and :mod:`payhub.hookspecs` this payhub provides."""


class PayhubDeprecationWarning(DeprecationWarning):
    """Warns that a plugin uses a part of the API that is deprecated: it works until the next major API version.

    Deprecated hooks are declared with ``warn_on_impl=PayhubDeprecationWarning(...)``: pluggy issues the warning when
    a plugin implementing them is registered, and the loader logs it with the plugin's settings key.
    """
