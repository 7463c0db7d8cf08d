"""Reports for people: the weekly review's content, and its Markdown and HTML templates.

May import: service.domain, service.projections and service.links (the report links the long lists).
"""
