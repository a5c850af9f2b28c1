"""The stages: ingest → calculate → schedule → disburse → settle, and the operator decisions on rewards and payouts.

Each stage reads rows in one state and moves them to the next in one transaction that also writes the audit
entries, so a crash at any instant leaves every row in a state the next pass resumes from. A stage decides; the
stores (:mod:`payhub.store`) hold its SQL, and the states are named in :mod:`payhub.states`. No stage imports
another: what two stages share is a helper module of this package (rules, history, presend, rail_results,
operator, storable, waiting, identity).
"""
