"""payhub-salesforce: a payhub source that reads incentive triggers from Salesforce through the REST API.

Enable it with a ``[sources.<name>]`` section whose ``plugin = "salesforce"``; see ``docs/sources/salesforce.md``.
"""

from payhub_salesforce.settings import ObjectMapping, OpportunityMapping, SalesforceSettings
from payhub_salesforce.source import SalesforceSource

__all__ = ["ObjectMapping", "OpportunityMapping", "SalesforceSettings", "SalesforceSource"]
__version__ = "0.1.0"
