"""The event store: the events table and the state table it keeps in step, the event data
schemas, the hash chain, the global feed, and one module per database backend for what differs
(postgres.py, sqlite.py). Database errors become the store's own errors here (errors.py), once.

The store knows no capability: what else an append writes in its transaction comes through its
one seam, a participant (see store.py). May import: service.domain, service.times, service.telemetry.
"""
