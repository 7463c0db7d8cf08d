"""Intake: closed deals from the CRM, posted by its workflow tool or imported from a CSV export;
an accepted case study commitment becomes a record, once.

May import: service.domain and service.events (deals go in through the store's append).
"""
