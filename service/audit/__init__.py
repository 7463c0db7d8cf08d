"""Audit: what auditors ask of the store: approval histories, chain verification, and digests
kept outside the service.

May import: service.domain, service.events (the streams, the state table's heads, the chain), and
the shared leaves (times, cursors).
"""
