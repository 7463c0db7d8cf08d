"""Access: API keys (created once, stored hashed, revocable) and the roles that say what a key may do.

May import: service.events (its table helpers) and service.times. Nothing here knows HTTP; the
API's ``requires`` decorator reads the roles from here.
"""
