"""JSON Schema functions in the database: signatures, error reports, fast/general agreement,
invalid schemas, the $ref registry and Unicode."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

D7 = "http://json-schema.org/draft-07/schema#"
D2020 = "https://json-schema.org/draft/2020-12/schema"


def one(conn: psycopg.Connection, sql: str, *params: Any) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
        assert row is not None
        return row[0]


def matches(conn: psycopg.Connection, schema: Any, instance: Any) -> bool:
    return one(
        conn,
        "select public.jsonb_matches_schema(%s::json, %s::jsonb)",
        json.dumps(schema),
        json.dumps(instance),
    )


def errors(conn: psycopg.Connection, schema: Any, instance: Any) -> list[dict[str, str]]:
    return one(
        conn,
        "select public.jsonschema_errors(%s::json, %s::jsonb)",
        json.dumps(schema),
        json.dumps(instance),
    )


def path_of(conn: psycopg.Connection, schema: Any) -> str:
    return one(conn, "select public._jsonschema_path(%s::json)", json.dumps(schema))


@pytest.mark.parametrize(
    ("signature", "returns"),
    [
        ("public.json_matches_schema(json, json)", "boolean"),
        ("public.jsonb_matches_schema(json, jsonb)", "boolean"),
        ("public.jsonschema_is_valid(json)", "boolean"),
        ("public.jsonschema_validation_errors(json, json)", "text[]"),
        ("public.jsonschema_errors(json, jsonb)", "jsonb"),
    ],
)
def test_signature(su_conn: psycopg.Connection, signature: str, returns: str) -> None:
    with su_conn.cursor() as cur:
        cur.execute(
            "select provolatile, proisstrict, proparallel, prorettype::regtype::text,"
            " obj_description(oid, 'pg_proc') is not null"
            " from pg_proc where oid = %s::regprocedure",
            (signature,),
        )
        assert cur.fetchone() == ("i", True, "s", returns, True)


def test_strict_null(su_conn: psycopg.Connection) -> None:
    assert one(su_conn, "select public.jsonb_matches_schema('{}', null)") is None


EVENT = {
    "type": "object",
    "required": ["status", "error"],
    "additionalProperties": False,
    "properties": {
        "status": {"enum": ["started", "completed", "failed"]},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "detail": {"type": "object", "properties": {"n": {"type": "integer"}}},
            },
        },
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}},
    },
}


def test_errors_give_paths_and_messages(su_conn: psycopg.Connection) -> None:
    instance = {
        "status": "done",
        "error": {"code": 7, "detail": {"n": "x"}},
        "tags": ["ok", "toolong"],
        "extra": 1,
    }
    report = errors(su_conn, EVENT, instance)
    by_path = {e["path"]: e for e in report}
    assert [e["path"] for e in report] == sorted(by_path)
    assert set(by_path) == {
        "/error/code",
        "/error/detail/n",
        "/error/message",
        "/extra",
        "/status",
        "/tags/1",
    }
    assert by_path["/error/code"]["keyword"] == "type"
    assert by_path["/error/code"]["schema_path"] == "/properties/error/properties/code/type"
    assert "expected string" in by_path["/error/code"]["message"]
    assert by_path["/error/detail/n"]["message"] == 'expected integer, got string "x"'
    assert by_path["/error/message"] == {
        "path": "/error/message",
        "message": "'message' is a required property",
        "keyword": "required",
        "schema_path": "/properties/error/required",
    }
    assert by_path["/extra"]["keyword"] == "additionalProperties"
    assert "'extra' is not allowed" in by_path["/extra"]["message"]
    assert by_path["/status"]["keyword"] == "enum"
    assert '"done"' in by_path["/status"]["message"]
    assert '"completed"' in by_path["/status"]["message"]
    assert by_path["/tags/1"]["keyword"] == "maxLength"


def test_errors_missing_at_root_and_valid(su_conn: psycopg.Connection) -> None:
    report = errors(su_conn, EVENT, {"status": "failed"})
    assert report == [
        {
            "path": "/error",
            "message": "'error' is a required property",
            "keyword": "required",
            "schema_path": "/required",
        }
    ]
    assert (
        errors(su_conn, EVENT, {"status": "failed", "error": {"code": "a", "message": "b"}}) == []
    )


def test_errors_root_and_escaped_pointer(su_conn: psycopg.Connection) -> None:
    assert errors(su_conn, {"type": "object"}, [1])[0]["path"] == ""
    schema = {"properties": {"a/b": {"properties": {"m~n": {"type": "string"}}}}}
    assert errors(su_conn, schema, {"a/b": {"m~n": 1}})[0]["path"] == "/a~1b/m~0n"


def test_errors_in_if_then(su_conn: psycopg.Connection) -> None:
    schema = {
        "type": "object",
        "if": {"properties": {"status": {"const": "failed"}}, "required": ["status"]},
        "then": {"required": ["error"]},
    }
    report = errors(su_conn, schema, {"status": "failed"})
    assert [(e["path"], e["keyword"], e["schema_path"]) for e in report] == [
        ("/error", "required", "/then/required")
    ]


# Schemas the fast path accepts in draft 7 form; adding "$anchor" (no effect on validation)
# forces the same 2020-12 schema through the general path.
AGREEMENT = [
    (
        EVENT,
        [
            {"status": "failed"},
            {"status": "failed", "error": {"code": "a", "message": "b"}},
            {"status": "x", "error": {}},
            {"status": "started", "error": {"code": 1}},
            [],
            None,
        ],
    ),
    ({"type": "integer", "minimum": 1, "multipleOf": 2}, [2, 2.0, 3, 0, True, "2", 1e300]),
    (
        {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$", "minLength": 2},
        ["ab", "a", "A1", "ok_1", "é", "", 5],
    ),
    ({"type": "string", "format": "date-time"}, ["2024-01-01T00:00:00Z", "not a date", 1]),
    ({"enum": ["a", None]}, ["a", None, 0, False, "b"]),
    (
        {"type": "array", "items": {"type": "number"}, "maxItems": 2, "contains": {"minimum": 5}},
        [[5], [1, 2], [1, 6], [1, 2, 6], ["5"], [True, 6]],
    ),
    (
        {
            "properties": {"a": {"$ref": "#/definitions/pos"}},
            "definitions": {"pos": {"minimum": 0}},
            "patternProperties": {"^x-": {"type": "string"}},
            "propertyNames": {"maxLength": 4},
        },
        [{"a": 1}, {"a": -1}, {"x-a": 1}, {"x-a": "s"}, {"toolong": 1}],
    ),
    (
        {"oneOf": [{"type": "integer"}, {"minimum": 2}], "not": {"const": "z"}},
        [1, 2, 2.5, 0.5, "z", "y"],
    ),
    ({"anyOf": [{"required": ["a"]}, {"maxProperties": 0}]}, [{}, {"a": 1}, {"b": 1}, 3]),
]


@pytest.mark.parametrize(("schema", "instances"), AGREEMENT)
def test_fast_and_general_paths_agree(
    su_conn: psycopg.Connection, schema: dict[str, Any], instances: list[Any]
) -> None:
    fast7 = {"$schema": D7, **schema}
    fast2020 = {"$schema": D2020, **schema}
    general = {"$schema": D2020, "$anchor": "forced", **schema}
    assert path_of(su_conn, fast7) == "fast"
    assert path_of(su_conn, fast2020) == "fast"
    assert path_of(su_conn, general) == "general"
    for instance in instances:
        expected = matches(su_conn, general, instance)
        assert matches(su_conn, fast7, instance) == expected, instance
        assert matches(su_conn, fast2020, instance) == expected, instance
        # The error report always comes from the general path: it agrees with the boolean.
        assert (errors(su_conn, fast2020, instance) == []) == expected, instance


@pytest.mark.parametrize(
    "schema",
    [
        {"prefixItems": [{"type": "string"}]},
        {"$defs": {"a": {"type": "string"}}, "$ref": "#/$defs/a", "minLength": 1},
        {"properties": {"a": {"type": "string"}}, "unevaluatedProperties": False},
        {"dependentRequired": {"a": ["b"]}},
        {"items": [{"type": "string"}]},
        {"enum": [1, "a"]},
        {"uniqueItems": True},
        {"$ref": "http://example.com/x.json"},
    ],
)
def test_general_path_for_2020_features(su_conn: psycopg.Connection, schema: Any) -> None:
    if "items" in schema and isinstance(schema["items"], list):
        schema = {"$schema": "https://json-schema.org/draft/2019-09/schema", **schema}
    assert path_of(su_conn, schema) == "general"


@pytest.mark.parametrize(
    "sql",
    [
        "select public.jsonb_matches_schema('{\"type\": \"no-such-type\"}', '1')",
        "select public.json_matches_schema('{\"minLength\": -1}', '\"a\"')",
        "select public.jsonschema_errors('{\"required\": \"a\"}', '{}')",
        'select public.jsonb_matches_schema(\'{"pattern": "("}\', \'"a"\')',
    ],
)
def test_invalid_schema_raises_22023(su_conn: psycopg.Connection, sql: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        one(su_conn, sql)
    assert info.value.sqlstate == "22023"


def test_is_valid_and_validation_errors(su_conn: psycopg.Connection) -> None:
    assert one(su_conn, 'select public.jsonschema_is_valid(\'{"type": "object"}\')') is True
    assert one(su_conn, "select public.jsonschema_is_valid('{\"type\": 1}')") is False
    assert (
        one(su_conn, "select public.jsonschema_validation_errors('{\"maxLength\": 4}', '\"abc\"')")
        == []
    )
    errs = one(
        su_conn, "select public.jsonschema_validation_errors('{\"maxLength\": 4}', '\"abcdef\"')"
    )
    assert len(errs) == 1 and "too long" in errs[0]
    invalid = one(su_conn, "select public.jsonschema_validation_errors('{\"type\": 1}', '1')")
    assert len(invalid) == 1 and "invalid JSON Schema" in invalid[0]


@pytest.fixture
def remote_uri(su_conn: psycopg.Connection) -> Iterator[str]:
    uri = f"https://schemas.example.test/{uuid.uuid4()}.json"
    yield uri
    with su_conn.cursor() as cur:
        cur.execute("delete from public.jsonschema_registry where uri = %s", (uri,))


def test_registry_resolution_and_invalidation(su_conn: psycopg.Connection, remote_uri: str) -> None:
    schema = {"properties": {"n": {"$ref": remote_uri}}}
    # Not registered: no answer can be "valid", and no statement is aborted; the report says why.
    assert matches(su_conn, schema, {"n": 1}) is False
    [report] = errors(su_conn, schema, {"n": 1})
    assert (report["path"], report["keyword"]) == ("/n", "$ref")
    assert "unknown remote" in report["message"] and remote_uri in report["message"]
    with su_conn.cursor() as cur:
        cur.execute(
            "insert into public.jsonschema_registry (uri, schema) values (%s, %s)",
            (remote_uri, json.dumps({"type": "integer"})),
        )
    assert matches(su_conn, schema, {"n": 1}) is True
    assert matches(su_conn, schema, {"n": "a"}) is False
    with su_conn.cursor() as cur:
        cur.execute(
            "update public.jsonschema_registry set schema = %s where uri = %s",
            (json.dumps({"type": "string"}), remote_uri),
        )
    # Same backend, same schema text: the cached validator must notice the change.
    assert matches(su_conn, schema, {"n": 1}) is False
    assert matches(su_conn, schema, {"n": "a"}) is True
    assert errors(su_conn, schema, {"n": 1})[0]["path"] == "/n"


def test_registry_change_rolled_back(su_conn: psycopg.Connection, remote_uri: str) -> None:
    schema = {"$ref": remote_uri}
    with su_conn.cursor() as cur:
        cur.execute(
            "insert into public.jsonschema_registry (uri, schema) values (%s, %s)",
            (remote_uri, json.dumps({"type": "integer"})),
        )
    with su_conn.transaction(force_rollback=True), su_conn.cursor() as cur:
        cur.execute(
            'update public.jsonschema_registry set schema = \'{"type": "string"}\' where uri = %s',
            (remote_uri,),
        )
        assert matches(su_conn, schema, "a") is True
    assert matches(su_conn, schema, "a") is False
    assert matches(su_conn, schema, 1) is True


def test_unicode(su_conn: psycopg.Connection) -> None:
    schema = {
        "type": "object",
        "properties": {
            "naïve 名前": {"type": "string", "maxLength": 2},
            "emoji": {"enum": ["😀", "é"]},
        },
        "additionalProperties": False,
    }
    # Lengths count code points: one emoji is one character.
    assert matches(su_conn, schema, {"naïve 名前": "😀😀", "emoji": "😀"}) is True
    assert matches(su_conn, schema, {"naïve 名前": "😀😀😀"}) is False
    # "é" precomposed is not "é" (e + combining accent).
    assert matches(su_conn, schema, {"emoji": "e\u0301"}) is False
    assert matches(su_conn, schema, {"emoji": "\u00e9"}) is True
    report = errors(su_conn, schema, {"naïve 名前": "😀😀😀", "ключ‮": 1})
    assert [e["path"] for e in report] == ["/naïve 名前", "/ключ‮"]
    assert "😀😀😀" in report[0]["message"]
