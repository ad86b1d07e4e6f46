"""The operator CLI on clients, prices and tokens: one clear line and a non-zero exit for every
wrong input, nothing changed silently; the currency rule holds on every path (CLI, psql,
PostgREST) because it lives in the database."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from billing_support import event, ingest, make_client, make_pipeline, uid
from stacks import one_line_error
from stepledger.db import loads

Run = Callable[..., subprocess.CompletedProcess[str]]


def client_row(conn: psycopg.Connection, client_id: str) -> tuple[str, str, int]:
    row = conn.execute("select name, currency, payment_terms_days from ledger.clients "
                       "where client_id = %s", [client_id]).fetchone()
    assert row is not None
    return row


# -- Defect 3: `client add` on an existing client ------------------------------------------------

def test_client_add_refuses_an_existing_id_and_changes_nothing(
        cli: Run, su_conn: psycopg.Connection) -> None:
    client = uid("st-mary")
    done = cli("client", "add", client, "--name", "St Mary's Hospital")
    assert done.returncode == 0, done.stderr
    assert client_row(su_conn, client) == ("St Mary's Hospital", "EUR", 30)

    again = cli("client", "add", client, "--name", "Renamed", "--currency", "GBP")
    line = one_line_error(again)
    assert f'client "{client}" already exists' in line
    assert f"stepledger client update {client}" in line
    assert client_row(su_conn, client) == ("St Mary's Hospital", "EUR", 30)


def test_client_update_renames_and_sets_payment_terms(cli: Run, su_conn: psycopg.Connection
                                                      ) -> None:
    client = make_client(su_conn)
    done = cli("client", "update", client, "--name", "Harbourview Clinic",
               "--payment-terms", "45")
    assert done.returncode == 0, done.stderr
    assert client_row(su_conn, client) == ("Harbourview Clinic", "EUR", 45)
    assert "payment terms 45 days" in done.stdout
    assert "unknown client" in one_line_error(cli("client", "update", "nobody-here",
                                                  "--name", "X"))
    assert "nothing to change" in one_line_error(cli("client", "update", client))
    assert "payment terms" in one_line_error(cli("client", "update", client,
                                                 "--payment-terms", "-3"))


def test_currency_change_is_allowed_before_anything_is_billed(
        cli: Run, su_conn: psycopg.Connection) -> None:
    client = make_client(su_conn)
    done = cli("client", "update", client, "--currency", "GBP")
    assert done.returncode == 0, done.stderr
    assert client_row(su_conn, client)[1] == "GBP"


def test_currency_change_is_refused_while_the_client_has_its_own_prices(
        cli: Run, su_conn: psycopg.Connection) -> None:
    pipeline = make_pipeline(su_conn, ["a"])
    client = make_client(su_conn)
    su_conn.execute("select ledger.add_price(%s, 'a', 2, %s)", [pipeline, client])
    line = one_line_error(cli("client", "update", client, "--currency", "GBP"))
    assert f'cannot change the currency of client "{client}" from EUR to GBP' in line
    assert "its own prices in EUR" in line
    assert "under a new client id" in line          # how to proceed
    assert client_row(su_conn, client)[1] == "EUR"


def test_currency_change_is_refused_with_an_open_invoice_on_every_path(
        cli: Run, su_conn: psycopg.Connection, api_url: str, jwt_for: Callable[..., str]
        ) -> None:
    pipeline = make_pipeline(su_conn, ["a"])
    client = make_client(su_conn)
    month_ago = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ingest(api_url, jwt_for("admin"), [event(client, uid("job"), pipeline, "a", "completed",
                                             month_ago)])
    line = one_line_error(cli("client", "update", client, "--currency", "GBP"))
    assert "an open invoice" in line

    # psql: the same rule, with its own SQLSTATE.
    with pytest.raises(psycopg.Error) as failure:
        su_conn.execute("update ledger.clients set currency = 'GBP' where client_id = %s",
                        [client])
    assert failure.value.sqlstate == "SL410"
    with pytest.raises(psycopg.Error) as failure:
        su_conn.execute("select ledger.add_client(%s, 'X', 'GBP')", [client])
    assert failure.value.sqlstate == "SL410"
    assert client_row(su_conn, client)[1] == "EUR"


def test_add_refuses_bad_input_with_one_line(cli: Run) -> None:
    assert "invalid client id" in one_line_error(cli("client", "add", "Bad Id", "--name", "x"))
    assert "invalid currency" in one_line_error(
        cli("client", "add", uid("c"), "--name", "x", "--currency", "euro"))


# -- Defect 5 (CLI): price list and token revoke -------------------------------------------------

def test_price_list_refuses_an_unknown_client(cli: Run) -> None:
    line = one_line_error(cli("price", "list", "--client", "nobody"))
    assert line == "stepledger: unknown client 'nobody' (see `stepledger client list`)"


def test_price_list_shows_a_future_price_as_scheduled(cli: Run, su_conn: psycopg.Connection
                                                      ) -> None:
    pipeline = make_pipeline(su_conn, ["a"])
    future = (datetime.now(UTC) + timedelta(days=40)).date().isoformat()
    for price, since in (("1", "2025-01-01"), ("2", future)):
        done = cli("price", "set", pipeline, "a", price, "--from", since)
        assert done.returncode == 0, done.stderr
    text = cli("price", "list", "--pipeline", pipeline)
    assert text.returncode == 0, text.stderr
    current, scheduled = text.stdout.splitlines()
    assert f"until {future}" in current and "in force" not in current
    assert f"from {future}" in scheduled and scheduled.endswith("scheduled")
    listed = loads(cli("price", "list", "--pipeline", pipeline, "--json").stdout)
    assert [r["status"] for r in listed] == ["in force", "scheduled"]


def test_token_revoke_of_a_malformed_id_says_so_in_one_line(cli: Run) -> None:
    line = one_line_error(cli("token", "revoke", "not-a-uuid"))
    assert line.startswith("stepledger: token id 'not-a-uuid' is not a UUID")
    assert "invalid input syntax" not in line


# -- Pipeline developers: step keys next to titles -----------------------------------------------

def test_pipeline_show_lists_step_keys_with_titles(cli: Run, su_conn: psycopg.Connection
                                                   ) -> None:
    pipeline = make_pipeline(su_conn, ["load_images", "segment"])
    done = cli("pipeline", "show", pipeline)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{pipeline}: Billing test {pipeline} (version 1, 2 steps")
    assert lines[2].split() == ["1", "load_images", "Load_Images"]
    assert lines[3].split() == ["2", "segment", "Segment"]
    assert "unknown pipeline 'nope'" in one_line_error(cli("pipeline", "show", "nope"))

