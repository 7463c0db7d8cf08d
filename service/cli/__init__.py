"""The ``casestudies`` command, one module per command group.

May import anything below it; commands import what touches the database inside themselves, so
that ``serve`` can set up metrics before prometheus_client is first imported.
"""
from __future__ import annotations

import click

from service.cli.audit import audit
from service.cli.db import db
from service.cli.imports import import_
from service.cli.keys import keys
from service.cli.machine import machine
from service.cli.notifications import notifications
from service.cli.people import people
from service.cli.projections import projections
from service.cli.reports import report
from service.cli.serve import serve
from service.cli.webhooks import webhooks


@click.group()
def main() -> None:
    """Case study pipeline service. Settings come from the environment (see the README)."""


for command in (serve, db, keys, audit, projections, import_, notifications, webhooks, report, machine, people):
    main.add_command(command)
