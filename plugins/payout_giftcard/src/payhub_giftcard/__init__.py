"""Gift-card payout rail for payhub (entry point ``giftcard`` in ``payhub.rails``).

* :class:`GiftCardRail` / :class:`GiftCardSettings`: the rail (see :mod:`payhub_giftcard.rail`).
* :mod:`payhub_giftcard.client`: the provider API client and its exception tree.
"""

from payhub_giftcard.rail import GiftCardRail, GiftCardSettings, Product

__all__ = ["GiftCardRail", "GiftCardSettings", "Product"]
