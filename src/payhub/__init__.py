"""payhub: channel-partner incentives from CRM triggers to audited payouts, exactly once."""

from typing import Any

__version__: str
"""The installed distribution's version (0.0.0 in a source tree without installation), read when first asked for:
``importlib.metadata`` costs ``payhub --help`` a quarter of its time."""


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("payhub")
        except PackageNotFoundError:  # running from a source tree without installation
            found = "0.0.0"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
