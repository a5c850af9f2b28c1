"""Local simulators of the systems payhub talks to, for tests, demos and the quickstart. None of them is the real
system, moves money or proves anything about the vendor; they serve the vendor's documented request and response
shapes on 127.0.0.1, with the vendor's paging, rate limits and failures, and misbehave on demand.

* :mod:`payhub_simulators.salesforce`: a Salesforce org's REST API (OAuth, SOQL queries, query locators).
* :mod:`payhub_simulators.hubspot`: the HubSpot CRM API (OAuth, deal search, batch reads, associations).
* :mod:`payhub_simulators.giftcard`: a gift-card provider's REST API (catalog, orders deduplicated by external_id).
* :mod:`payhub_simulators.cli`: ``payhub-simulator`` (or ``python -m payhub_simulators``) serves one of them.

Each runs on the kit's fault-injecting server, :class:`payhub.testing.server.FaultServer` (its ``server``
attribute), so a test can also delay, hang, drop or leave unanswered any request. This distribution is a test tool:
production installs of payhub and its plugins neither contain nor import it.
"""

__version__ = "0.1.0"
