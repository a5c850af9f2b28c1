"""Sanctions screening: the lists' published formats (:mod:`.formats`), the fuzzy matcher (:mod:`.matcher`), the
loaded lists in the database (:mod:`.store`, :mod:`.refresh`), screening against them (:mod:`.screener`) and the
recorded screening of payees (:mod:`.payee_screening`). The ``sanctions`` hook plugin
(:mod:`payhub.builtin.sanctions`) applies them; docs/compliance.md#sanctions-screening explains the rules."""
