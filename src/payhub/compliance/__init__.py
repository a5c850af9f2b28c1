"""Compliance rules of the core: personal data that erasure can reach, tax profiles, thresholds and reports,
gift and anti-bribery limits, sanctions screening, retention (docs/compliance.md)."""
