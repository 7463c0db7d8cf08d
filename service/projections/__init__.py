"""Projections: read models kept from the global feed, and the queries that answer from them.

The projectors (pure folds of the domain's reporting, one stream at a time) turn events into
rows; the runner follows the feed with a checkpoint per projector; rebuild and verify project
the whole store into a generation readers do not see. The record list and the stuck list read
the state table, the projection the store keeps in each append's own write.

May import: service.domain, service.events, and the shared leaves (times, cursors).
"""
