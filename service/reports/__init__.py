"""Reports for people: the weekly review's content, and its Markdown and HTML templates.

May import: service.domain and service.projections.
"""
