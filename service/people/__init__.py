"""Personal data: the people named in records, their data stored encrypted under a key per person
(crypto-shredding), erasure and access requests, and the reading of sealed fields at the edges.

Personal fields are named in the event schemas (``events.schemas.PERSONAL_FIELDS``). Before an
append is decided, the store's sealer (``subjects.Sealer``) replaces each one's value with a
token: AES-GCM ciphertext under its person's key, with the person's id in the clear. Everything
inside the service (events, hash chains, the state table, projections, the outbox) holds tokens
only; what leaves it (HTTP answers, pages, CSV, webhooks, the CLI) is revealed on the way out
(``reveal.Opener``). Erasing a person destroys their key: every copy of their data, wherever it
went inside the service, becomes unreadable at once, and every chain stays verifiable.

May import: service.config (the master key's form), service.domain, service.events (the store's
seams, its tables and chain), service.notifications (the outbox table an erasure cleans),
service.projections (the tables a reseal empties), service.times and service.spreadsheets.
Nothing here knows HTTP.
"""
