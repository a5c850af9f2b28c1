"""HubSpot CRM source for payhub: closed-won partner deals, and their reversals, read incrementally.

Enable it with a ``[sources.<name>]`` section, ``plugin = "hubspot"``; see docs/sources/hubspot.md.
"""

from payhub_hubspot.settings import HubSpotSettings
from payhub_hubspot.signature import sign_v3, verify_v3
from payhub_hubspot.source import HubSpotSource

__all__ = ["HubSpotSettings", "HubSpotSource", "sign_v3", "verify_v3"]
