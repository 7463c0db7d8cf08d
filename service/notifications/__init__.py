"""Notifications: the outbox every message goes through, webhook subscriptions, the messages
(Slack's, CloudEvents) and the dispatcher that delivers them.

The outbox's planner takes part in every append through the event store's one seam (wired in
bootstrap.py). May import: service.domain, service.events, service.projections (the dispatcher
announces stuck records), service.config (the delivery settings), and the shared leaves.
"""
