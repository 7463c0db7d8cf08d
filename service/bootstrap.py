"""The composition root: the one place where the real parts are built and wired together."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from service.access.keys import KeyStore
from service.audit.approvals import ApprovalHistory
from service.audit.verification import Verification
from service.config import Settings
from service.events.backends import make_engine
from service.events.feed import Feed
from service.events.store import EventStore
from service.links import Links
from service.notifications.outbox import Outbox, OutboxPlanner
from service.notifications.subscriptions import Subscriptions
from service.notifications.targets import Targets, parse_networks
from service.people.erasure import People
from service.people.reveal import Opener
from service.people.subjects import Unkeyed
from service.projections.projectors import projectors
from service.projections.queries import Projections
from service.projections.records import Records
from service.projections.runner import ProjectionRunner


@dataclass
class Services:
    settings: Settings
    engine: Engine
    links: Links
    store: EventStore
    keys: KeyStore
    records: Records
    approvals: ApprovalHistory
    verification: Verification
    feed: Feed
    runner: ProjectionRunner
    projections: Projections
    subscriptions: Subscriptions
    outbox: Outbox
    people: People | None  # None without PERSONAL_DATA_KEY

    def opener(self) -> Opener:
        """What reveals personal fields in one answer (without a master key: each reads as sealed)."""
        return self.people.opener() if self.people else Opener(None)


def build(settings: Settings, engine: Engine | None = None, *, serving: bool = False) -> Services:
    """Wire the store, keys, projections and the outbox onto one engine (made from settings unless
    given; one that ``serving`` requests bounds each statement by ``STATEMENT_TIMEOUT_SECONDS``)."""
    engine = engine or make_engine(settings.database_url, pool_size=settings.db_pool_size,
                                   statement_timeout=settings.statement_timeout_seconds if serving else 0)
    links = Links(settings.public_base_url)
    subscriptions = Subscriptions(engine, cache_seconds=settings.webhook_cache_seconds,
                                  targets=Targets(parse_networks(settings.webhook_allowed_networks)))
    # The outbox takes part in every append: its messages are written in the append's transaction.
    planner = OutboxPlanner(subscriptions, slack=settings.slack_webhook_url is not None, links=links,
                            kpi_threshold_pct=settings.candidate_kpi_improvement_pct)
    # Personal fields are sealed before every append is decided: nothing below sees them in clear.
    people = (People(engine, lambda: store, settings.personal_data_key, cache_seconds=settings.subject_cache_seconds)
              if settings.personal_data_key else None)
    store = EventStore(engine, cache_size=settings.state_cache_size, participant=planner,
                       sealer=people.sealer if people else Unkeyed())
    feed = Feed(engine)
    runner = ProjectionRunner(engine, feed, projectors(settings.candidate_kpi_improvement_pct, settings.stuck))
    return Services(
        settings=settings,
        engine=engine,
        links=links,
        store=store,
        keys=KeyStore(engine, cache_seconds=settings.key_cache_seconds),
        records=Records(engine),
        approvals=ApprovalHistory(engine, store),
        verification=Verification(engine, store),
        feed=feed,
        runner=runner,
        projections=Projections(engine, runner.checkpoints, feed, settings.stuck,
                                wait_seconds=settings.read_wait_seconds),
        subscriptions=subscriptions,
        outbox=Outbox(engine),
        people=people,
    )


def dispatcher(services: Services):
    """The outbox's dispatcher, configured from the services' settings (it opens an HTTP client)."""
    from service.notifications.dispatcher import Dispatcher

    return Dispatcher(services.engine, services.subscriptions, services.projections, services.settings.notify,
                      slack_webhook_url=services.settings.slack_webhook_url, links=services.links,
                      reveal=lambda body: services.opener().json(body))
