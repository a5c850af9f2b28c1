"""Partner statements (remittance advice): one per payout once it is sent or paid (docs/console.md).

:mod:`~payhub.statements.content` gathers a statement's lines from the payout's provenance and refuses one that
does not add up; :mod:`~payhub.statements.render` makes its HTML and PDF; :mod:`~payhub.statements.delivery`
mails it (SMTP) or writes it into an outbox; :mod:`~payhub.statements.stage` is the daemon stage that delivers
each statement and records every delivery, audited.
"""
