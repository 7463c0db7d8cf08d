"""Personal data without a database: which fields are personal, tokens, handles, and revealing
tokens in each format an answer can take."""
from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from service.events.event import NewEvent
from service.events.schemas import PERSONAL_FIELDS
from service.people.keys import TOKEN, Keyring, new_master_key, seal, unseal
from service.people.reveal import Opener
from service.people.subjects import Opened, PersonalDataKeyMissing, Unkeyed
from tests.factories import VALID_DATA

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_personal_fields_are_read_from_the_marks_in_the_schemas():
    named = {event_type: [(field.name, field.whose, field.identifies) for field in fields]
             for event_type, fields in PERSONAL_FIELDS.items()}
    assert named == {
        "committed": [("champion.name", "champion", "name"), ("champion.title", "champion", None),
                      ("champion.email", "champion", "email")],
        "approval_granted": [("approver", "approver", "name")],
        "changes_requested": [("approver", "approver", "name")],
        "quote_added": [("text", "speaker", None), ("speaker", "speaker", "name")],
        "nps_recorded": [("respondent", "respondent", "name")],
    }


def test_the_readme_names_every_personal_field_for_the_data_protection_officer():
    table = README.split("<!-- personal fields -->")[1].split("<!-- /personal fields -->")[0]
    for event_type, fields in PERSONAL_FIELDS.items():
        row = next(line for line in table.splitlines() if f"`{event_type}`" in line)
        assert all(f"`{field.name}`" in row for field in fields), event_type


def test_a_token_opens_only_under_its_persons_key_and_id():
    keyring = Keyring(new_master_key())
    subject, key = keyring.new_subject()
    other, other_key = keyring.new_subject()
    token = seal(subject, key, "Zoë Quill")
    match = TOKEN.fullmatch(token)
    assert match and match.group(1) == subject and "Zoë" not in token
    assert unseal(subject, key, match.group(2)) == "Zoë Quill"
    assert unseal(subject, other_key, match.group(2)) is None
    assert unseal(other, key, match.group(2)) is None  # moved to another person: refused
    assert seal(subject, key, "Zoë Quill") != token  # a fresh nonce each time
    assert keyring.unwrap(subject, keyring.wrap(subject, key)) == key


def test_people_are_found_by_email_in_any_case_or_by_name_within_an_account():
    keyring = Keyring(new_master_key())
    assert keyring.handle(email=" Jo.Park@Acme.example ") == keyring.handle(email="jo.park@acme.example")
    assert keyring.handle(name="Jo  PARK", account_id="acme") == keyring.handle(name="jo park", account_id="acme")
    assert keyring.handle(name="Jo Park", account_id="acme") != keyring.handle(name="Jo Park", account_id="globex")
    assert Keyring(new_master_key()).handle(email="jo@a.example") != keyring.handle(email="jo@a.example")
    assert re.fullmatch(r"[0-9a-f]{64}", keyring.handle(email="jo@a.example"))


class _Keys:
    """Stands in for the keys table: one readable person, one erased."""

    def __init__(self, keyring: Keyring):
        self.alive, self.alive_key = keyring.new_subject()
        self.erased, self.erased_key = keyring.new_subject()
        self.reads = 0

    def opened(self, ids):
        self.reads += 1
        table = {self.alive: Opened(self.alive_key, None),
                 self.erased: Opened(None, datetime(2026, 12, 1, 9, tzinfo=UTC))}
        return {i: table[i] for i in ids if i in table}


def test_tokens_are_revealed_in_json_csv_html_and_text_and_an_erased_person_reads_as_a_placeholder():
    keys = _Keys(Keyring(new_master_key()))
    name = '=cmd|"/c calc"!A1, <b>Ann</b>'
    alive = seal(keys.alive, keys.alive_key, name)
    gone = seal(keys.erased, keys.erased_key, "Sam Lee")
    opener = Opener(keys)
    assert orjson.loads(opener.json(orjson.dumps({"a": alive, "b": [gone, "plain"]}))) == \
        {"a": name, "b": ["erased on 2026-12-01", "plain"]}
    assert opener.csv(f"name,who\r\n{alive},{gone}\r\n") == \
        'name,who\r\n"\'=cmd|""/c calc""!A1, <b>Ann</b>",erased on 2026-12-01\r\n'  # one cell, made safe
    assert opener.text(f"<td>{alive}</td>", escape=lambda v: v.replace("<", "&lt;")) == \
        '<td>=cmd|"/c calc"!A1, &lt;b>Ann&lt;/b></td>'
    assert opener.data({"quotes": [{"speaker": gone}]}) == {"quotes": [{"speaker": "erased on 2026-12-01"}]}
    assert keys.reads == 1  # each person's key is read once per answer
    forged = "pd1." + "0" * 22 + "." + "A" * 40
    assert Opener(keys).text(f"x {forged}") == "x erased"  # an unknown person reads as erased, never an error


def test_without_a_master_key_events_naming_a_person_are_refused():
    unkeyed = Unkeyed()
    plain = [NewEvent("started", {}), NewEvent("metrics_recorded", VALID_DATA["metrics_recorded"])]
    assert unkeyed.seal("s", plain, lambda: None) is plain
    with pytest.raises(PersonalDataKeyMissing):
        unkeyed.seal("s", [NewEvent("quote_added", VALID_DATA["quote_added"])], lambda: None)
    assert unkeyed.seal("s", [NewEvent("nps_recorded", {"score": 9})], lambda: None)  # no respondent: fine


def test_a_master_key_that_is_not_32_bytes_of_base64url_is_refused_by_name():
    from service.config import Settings, SettingsError

    for bad in ("short", "!" * 44, new_master_key()[:-8]):
        with pytest.raises(SettingsError, match="PERSONAL_DATA_KEY: .*casestudies people new-key"):
            Settings.from_env({"PERSONAL_DATA_KEY": bad})
    good = new_master_key()
    assert Settings.from_env({"PERSONAL_DATA_KEY": good}).personal_data_key == good
    assert good not in repr(Settings.from_env({"PERSONAL_DATA_KEY": good}))  # a secret: never shown
