"""`casestudies import deals` on a CRM export, as an operator runs it every day."""
from __future__ import annotations

import pytest

from tests.conftest import PERSONAL_DATA_KEY
from tests.e2e.conftest import cli

EXPORT = (
    "\ufeffDeal ID;Account ID;Account Name;Owner;Close Date;Use Case;Champion Name;Champion Title;"
    "Champion Email;Case Study Commitment;Amount;Status;Status Since;Hold Reason\r\n"
    "D-1;A1;Acme Air;Dana;2026-10-01;faster onboarding;Jo Park;VP Ops;jo@acme.example;Accepted;12000;;;\r\n"
    "D-2;A2;Globex;Robin;2026-09-15;fewer tickets;Kim Ode;CTO;;Not discussed;5000;;;\r\n"
    "D-3;A3;Initech;Dana;15/09/2026;less paper;Bill L;COO;;Accepted;1;;;\r\n"
    "D-4;A4;Umbrella;Robin;2026-09-20;\"safer labs;\nfewer incidents\";Alice;Head of R&D;;accepted;7;"
    "On Hold;2026-11-02;waiting for their reorg\r\n"
    ";A5;Hooli;Dana;2026-09-21;search;Gavin;CEO;;Accepted;9;;;\r\n"
    "D-6;A6;Stark;Dana;2026-09-22;;Pepper;COO;;Accepted;3;;;\r\n"
    ";;;;;;;;;;;;;\r\n"
)


@pytest.mark.parametrize("fresh_database", ["sqlite", "postgres"], indirect=True)
def test_an_export_imports_valid_rows_reports_the_rest_and_re_runs_safely(fresh_database, tmp_path):
    url = fresh_database.url
    assert cli(url, "db", "upgrade").returncode == 0
    export = tmp_path / "deals.csv"
    export.write_text(EXPORT, encoding="utf-8")

    first = cli(url, "import", "deals", str(export))
    assert first.returncode == 1, first.stderr  # some rows are invalid; the valid ones are in
    out = first.stdout
    assert "6 rows: 2 created, 0 already existed, 1 skipped (not accepted), 3 invalid" in out
    assert "line 3 (deal D-2): skipped: a case study was not discussed in the deal" in out
    assert "line 4 (deal D-3): INVALID: close_date:" in out
    assert "(deal ?): INVALID: deal_id:" in out
    assert "(deal D-6): INVALID: use_case: is required when case_study_commitment is accepted" in out
    assert "ignored columns: Amount" in out
    assert "importing deals" in first.stderr

    again = cli(url, "import", "deals", str(export))
    assert "6 rows: 0 created, 2 already existed, 1 skipped (not accepted), 3 invalid" in again.stdout

    from service.bootstrap import build
    from service.config import Settings

    services = build(Settings(personal_data_key=PERSONAL_DATA_KEY, database_url=url))
    acme, umbrella = services.store.record("deal-D-1"), services.store.record("deal-D-4")
    assert acme.state == "not_started" and acme.csm == "Dana" and acme.account["name"] == "Acme Air"
    assert umbrella.state == "on_hold" and umbrella.use_case == "safer labs;\nfewer incidents"
    history = services.store.load("deal-D-4")
    assert [(e.type, e.actor, e.occurred_at.date().isoformat()) for e in history] == [
        ("committed", "deal-import", "2026-09-20"), ("held", "deal-import", "2026-11-02")]
    assert services.store.record("deal-D-2") is None and services.store.record("deal-D-3") is None
    services.engine.dispose()


@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
def test_an_export_without_the_required_columns_is_refused_before_any_row(fresh_database, tmp_path):
    url = fresh_database.url
    assert cli(url, "db", "upgrade").returncode == 0
    export = tmp_path / "deals.csv"
    export.write_text("Deal,Commitment\n1,Accepted\n", encoding="utf-8")
    refused = cli(url, "import", "deals", str(export))
    assert refused.returncode == 1
    assert "no deal_id or case_study_commitment column" in refused.stderr
    (tmp_path / "empty.csv").write_text("")
    assert "needs a header row" in cli(url, "import", "deals", str(tmp_path / "empty.csv")).stderr


@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
def test_a_file_that_cannot_be_read_to_its_end_keeps_the_rows_before(fresh_database, tmp_path):
    url = fresh_database.url
    assert cli(url, "db", "upgrade").returncode == 0
    export = tmp_path / "deals.csv"
    header, good = EXPORT.splitlines()[0].lstrip("\ufeff"), EXPORT.splitlines()[1]
    export.write_text("\n".join([header, good, good.replace("D-1", "D-9").replace("Acme Air", "x" * 200_000)]) + "\n")
    done = cli(url, "import", "deals", str(export))
    assert done.returncode == 1
    assert "1 rows: 1 created" in done.stdout and "cannot read on after row 1" in done.stderr
