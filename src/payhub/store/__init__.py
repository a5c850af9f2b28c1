"""The stores: one module per aggregate (events, rewards, payouts, funds, audit) owning its SQL.

A store claims and leases rows, changes their status as the state machines of :mod:`payhub.states` allow, and reads
the history the stages decide from. The stages (:mod:`payhub.pipeline`) and the worker decide; they call a store to
read and write. :mod:`payhub.store.leases` holds the fencing leases the stores share.
"""
