"""``casestudies projections``: run, rebuild, verify and inspect the read models kept from the feed."""
from __future__ import annotations

import sys
from contextlib import contextmanager

import click

from service.cli.common import Bar, database_errors, services, stop_on_signals


@click.group()
def projections() -> None:
    """Read models kept from the global feed: run, rebuild, verify, status."""


@contextmanager
def _busy():
    from service.projections.checkpoints import ProjectionFailed
    from service.projections.rebuild import ProjectionBusy

    try:
        yield
    except (ProjectionBusy, ProjectionFailed) as error:
        raise click.ClickException(str(error)) from None


def _projector_names(wired, name: str | None) -> list[str] | None:
    if name is None:
        return None
    if name not in wired.runner.projectors:
        raise click.BadParameter(f"no projector {name!r}; there are {', '.join(wired.runner.projectors)}",
                                 param_hint="NAME")
    return [name]


@projections.command("run")
@click.option("--poll", default=1.0, show_default=True, type=click.FloatRange(0.05, 60),
              help="Seconds to wait when the feed has nothing new.")
@click.option("--parent", type=int, hidden=True, help="Stop when this process is gone (set by serve).")
def projections_run(poll: float, parent: int | None) -> None:
    """Keep every projector following the feed until stopped (SIGTERM or Ctrl-C)."""
    from service.supervision import beat

    wired = services(log_stream=sys.stdout)
    stop = stop_on_signals()
    with database_errors():
        wired.runner.run(stop, poll_seconds=poll, parent_pid=parent, on_round=lambda: beat("projections"))


@projections.command("rebuild")
def projections_rebuild() -> None:
    """Project the whole store afresh (every projection, in one pass) and swap it in when complete."""
    wired = services()
    with database_errors():
        with Bar("rebuilding") as bar, _busy():
            mark = wired.runner.rebuilder.rebuild(total=bar.start, progress=bar.update)
    click.echo(f"rebuilt {', '.join(wired.runner.projectors)} to position {mark.position}")


@projections.command("verify")
@click.argument("name", required=False)
def projections_verify(name: str | None) -> None:
    """Rebuild into scratch tables and report every row of NAME's tables (or all), and of what the
    projections hold for each record, that differs from the live ones (exit 1 if any)."""
    wired = services()
    names = _projector_names(wired, name)
    with database_errors():
        with Bar("verifying") as bar, _busy():
            results = wired.runner.rebuilder.verify(names, total=bar.start, progress=bar.update)
    differing = 0
    for projector, result in results.items():
        for difference in result.differences:
            differing += 1
            click.echo(f"DIFFERS {projector} {difference.table} {difference.key}: live {difference.live}, "
                       f"rebuilt {difference.rebuilt}")
        skipped = f"; {result.skipped} records changed meanwhile and were left out" if result.skipped else ""
        state = "matches" if not result.differences else f"{len(result.differences)} rows differ"
        click.echo(f"{projector}: {state} a rebuild to position {result.checked_to.position}{skipped}")
    sys.exit(1 if differing else 0)


@projections.command("status")
def projections_status() -> None:
    """How far the projections have read, their lag and their last error."""
    wired = services()
    with database_errors():
        status = wired.runner.status()
    error = f"; FAILING at position {status['last_error']['position']}: {status['last_error']['message']}" \
        if status["failing"] else ""
    click.echo(f"projections ({', '.join(p['name'] for p in status['projectors'])}): position "
               f"{status['checkpoint']['position']} of {status['head']['position']}, {status['lag_events']} events / "
               f"{status['lag_seconds']} s behind{error}")
    held = status["held_back"]
    if held["events"]:
        click.echo(f"{held['events']} committed events are held back by an open transaction: {held['by_transaction']}")
