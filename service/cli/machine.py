"""``casestudies machine``: the life cycle as the state machine declares it."""
from __future__ import annotations

import click


@click.command()
@click.option("--format", "fmt", type=click.Choice(["md", "mermaid", "json"]), default="md", show_default=True,
              help="md: the events table (as in the README); mermaid: the state diagram; json: as GET /machine.")
def machine(fmt: str) -> None:
    """Print the statuses, events, transitions and guards, read from the state machine itself."""
    import orjson

    from service.api.machine import description, events_table
    from service.domain.machine import mermaid

    if fmt == "md":
        click.echo(events_table(), nl=False)
    elif fmt == "mermaid":
        click.echo(mermaid())
    else:
        click.echo(orjson.dumps(description(), option=orjson.OPT_INDENT_2).decode())
