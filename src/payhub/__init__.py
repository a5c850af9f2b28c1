"""payhub: channel-partner incentives from CRM triggers to audited payouts, exactly once."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("payhub")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
