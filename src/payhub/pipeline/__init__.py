"""The stages: ingest → calculate → schedule → disburse → settle.

Each stage reads rows in one state and moves them to the next in one transaction that also writes the audit
entries, so a crash at any instant leaves every row in a state the next pass resumes from.
"""
