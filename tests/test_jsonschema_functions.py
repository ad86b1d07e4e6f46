"""JSON Schema functions in the database: signatures, error reports, fast/general agreement,
invalid schemas, the $ref registry and Unicode."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# -- one schema, one answer -----------------------------------------------------------------------
EMPTY_KEYS = {"$defs": {"": {"$defs": {"": {"type": "number"}}}},
              "allOf": [{"$ref": "#/$defs//$defs/"}]}


@pytest.mark.parametrize("draft", [D7, D2020])
def test_an_unrelated_keyword_does_not_change_the_answer(su_conn: psycopg.Connection,
                                                         draft: str) -> None:
    """The report: `uniqueItems: true` sent this schema down the general path, which dropped the
    empty JSON Pointer tokens of the $ref and said "a" is valid."""
    fast = {"$schema": draft, **EMPTY_KEYS}
    general = {**fast, "uniqueItems": True}
    assert (path_of(su_conn, fast), path_of(su_conn, general)) == ("fast", "general")
    for instance, valid in (("a", False), (1, True)):
        assert matches(su_conn, fast, instance) is valid
        assert matches(su_conn, general, instance) is valid


NUMBER_KEYWORDS = st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"])
FAST_LEAVES = st.one_of(
    st.builds(lambda k, v: {k: v}, NUMBER_KEYWORDS,
              st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False))),
    st.builds(lambda v: {"multipleOf": v}, st.integers(1, 4)),
    st.builds(lambda t: {"type": t}, st.sampled_from(
        ["string", "number", "integer", "boolean", "null", "array", "object"])),
    st.builds(lambda k, v: {k: v}, st.sampled_from(["minLength", "maxLength", "minItems",
                                                    "maxItems", "minProperties", "maxProperties"]),
              st.integers(0, 3)),
    st.builds(lambda p: {"pattern": p}, st.sampled_from(["^a", "b$", "^[a-c]+$", "x|y", "[$]"])),
    st.builds(lambda v: {"enum": v}, st.lists(st.one_of(st.none(), st.text("ab", max_size=2)),
                                              min_size=1, max_size=3)),
    st.builds(lambda v: {"required": v}, st.lists(st.sampled_from("ab"), max_size=2, unique=True)),
    st.just({"uniqueItems": False}),
    st.booleans(),
)


def _fast_schemas(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(lambda a, b: {"allOf": [a, b]}, children, children),
        st.builds(lambda a, b: {"anyOf": [a, b]}, children, children),
        st.builds(lambda a, b: {"oneOf": [a, b]}, children, children),
        st.builds(lambda a: {"not": a}, children),
        st.builds(lambda a, b, c: {"if": a, "then": b, "else": c}, children, children, children),
        st.builds(lambda a: {"items": a}, children),
        st.builds(lambda a: {"contains": a}, children),
        st.builds(lambda a: {"additionalProperties": a}, children),
        st.builds(lambda a: {"propertyNames": a}, children),
        st.builds(lambda a, b: {"properties": {"a": a, "b": b}}, children, children),
        st.builds(lambda a: {"patternProperties": {"^a": a}}, children),
        st.builds(lambda a, b: {**a, **b} if isinstance(a, dict) and isinstance(b, dict) else a,
                  children, children),
    )


FAST_SCHEMAS = st.recursive(FAST_LEAVES, _fast_schemas, max_leaves=6)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-6, 2**60), st.floats(-6, 6, allow_nan=False,
              allow_infinity=False), st.text("ab$\n", max_size=3)),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text("abc", max_size=2), children, max_size=3)),
    max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=FAST_SCHEMAS, instances=st.lists(JSON_VALUES, min_size=1, max_size=12),
       draft=st.sampled_from([D7, D2020]))
def test_both_paths_agree_on_generated_schemas(su_conn: psycopg.Connection, schema: Any,
                                               instances: list[Any], draft: str) -> None:
    """Schemas made only of the keywords the fast path takes, on every kind of value: both
    paths give each instance one answer (the suite checks the same on its own cases)."""
    if isinstance(schema, dict):
        schema = {"$schema": draft, **schema}
    rows = su_conn.execute(
        "select public._jsonschema_matches_on(%(s)s::json, i, 'fast'),"
        " public._jsonschema_matches_on(%(s)s::json, i, 'general')"
        " from unnest(%(i)s::jsonb[]) i",
        {"s": json.dumps(schema), "i": [json.dumps(i) for i in instances]}).fetchall()
    for instance, (fast, general) in zip(instances, rows, strict=True):
        if fast is not None:
            assert fast is general, (schema, instance)


# -- no statement aborted, each draft by its own rules -------------------------------------------
D4 = "http://json-schema.org/draft-04/schema#"
D6 = "http://json-schema.org/draft-06/schema#"
D2019 = "https://json-schema.org/draft/2019-09/schema"
RECURSIVE_TREE = {  # the suite's "unevaluatedItems with $recursiveRef"
    "$schema": D2019, "$id": "https://example.com/unevaluated-items-with-recursive-ref/extended-tree",
    "$recursiveAnchor": True, "$ref": "./tree", "items": [True, True, {"type": "string"}],
    "$defs": {"tree": {"$id": "./tree", "$recursiveAnchor": True, "type": "array", "items": [
        {"type": "number"}, {"unevaluatedItems": False, "$recursiveRef": "#"}]}}}
ABORTED_BEFORE = [
    # 4.10.3 raised TypeErrors (SQLSTATE 38000) on these valid schemas and instances.
    ({"$schema": D2019, "items": [{}], "additionalItems": False}, [1, "foo", False], False),
    ({"$schema": D7, "items": [{}], "additionalItems": False}, [1, "foo", None], False),
    ({"$schema": D2020, "prefixItems": [{"type": "string"}], "unevaluatedItems": False},
     ["a", 1, "b"], False),
    ({"$schema": D2020, "$defs": {"true": True, "false": False},
      "properties": {"true": {"$dynamicRef": "#/$defs/true"},
                     "false": {"$dynamicRef": "#/$defs/false"}}}, {"false": 1}, False),
    *((RECURSIVE_TREE, instance, valid) for instance, valid in (
        ([1, [2, [], "b"], "a"], True), ([1, [2, [], "b", "too many"], "a"], False))),
    # fastjsonschema 2.16 calls data.keys() on any value for propertyNames: false.
    *(({"$schema": D7, "propertyNames": False}, instance, valid)
      for instance, valid in ((None, True), (3, True), ({}, True), ({"a": 1}, False))),
]


def test_the_fast_path_alone_has_no_answer_where_its_library_fails(
        su_conn: psycopg.Connection) -> None:
    """The tests' view of one path: where fastjsonschema itself raises, the fast path gives no
    answer (null) instead of aborting, and the general path answers."""
    schema = json.dumps({"$schema": D7, "propertyNames": False})
    assert one(su_conn, "select public._jsonschema_matches_on(%s::json, 'null', 'fast')",
               schema) is None
    assert one(su_conn, "select public._jsonschema_matches_on(%s::json, 'null', 'general')",
               schema) is True


@pytest.mark.parametrize(("schema", "instance", "valid"), ABORTED_BEFORE)
def test_no_valid_schema_aborts_the_statement(su_conn: psycopg.Connection, schema: Any,
                                              instance: Any, valid: bool) -> None:
    assert matches(su_conn, schema, instance) is valid
    assert (errors(su_conn, schema, instance) == []) is valid
    assert (one(su_conn, "select public.jsonschema_validation_errors(%s::json, %s::json)",
                json.dumps(schema), json.dumps(instance)) == []) is valid


def test_a_library_error_becomes_a_reported_failure(su_conn: psycopg.Connection) -> None:
    """Where 4.10.3 raises on a valid schema, that subschema fails with the reason instead."""
    schema = {"$schema": D7, "items": [{}], "additionalItems": False}
    [report] = errors(su_conn, schema, [1, "foo", None])
    assert (report["path"], report["keyword"]) == ("", "additionalItems")


@pytest.mark.parametrize("draft", [D4, D6, D7])
def test_array_form_items_in_drafts_4_to_7(su_conn: psycopg.Connection, draft: str) -> None:
    schema = {"$schema": draft, "items": [{"type": "integer"}, {"type": "string"}]}
    assert one(su_conn, "select public.jsonschema_is_valid(%s::json)", json.dumps(schema))
    assert matches(su_conn, schema, [1, "a", None]) is True
    assert matches(su_conn, schema, ["a", 1]) is False


def test_draft4_id_sets_the_base_uri(su_conn: psycopg.Connection) -> None:
    schema = {"$schema": D4, "id": "http://example.com/root.json",
              "definitions": {"b": {"id": "b.json", "definitions": {
                  "c": {"id": "c.json", "type": "integer"}}}},
              "properties": {"n": {"$ref": "http://example.com/c.json"}}}
    assert matches(su_conn, schema, {"n": 1}) is True
    assert matches(su_conn, schema, {"n": "x"}) is False


def test_draft2019_recursive_ref(su_conn: psycopg.Connection) -> None:
    tree = {"$schema": D2019, "$id": "https://example.com/tree", "$recursiveAnchor": True,
            "type": "object", "properties": {"data": True, "children": {
                "type": "array", "items": {"$recursiveRef": "#"}}}}
    strict = {"$schema": D2019, "$id": "https://example.com/strict-tree",
              "$recursiveAnchor": True, "$ref": "tree", "unevaluatedProperties": False}
    with su_conn.cursor() as cur:
        cur.execute("insert into public.jsonschema_registry (uri, schema) values (%s, %s)"
                    " on conflict (uri) do update set schema = excluded.schema",
                    ("https://example.com/tree", json.dumps(tree)))
    try:
        assert matches(su_conn, strict, {"children": [{"data": 1}]}) is True
        # The recursion uses the outermost anchored schema: unknown keys deep down are refused.
        assert matches(su_conn, strict, {"children": [{"daat": 1}]}) is False
        assert matches(su_conn, tree, {"children": [{"daat": 1}]}) is True
    finally:
        su_conn.execute("delete from public.jsonschema_registry where uri = %s",
                        ("https://example.com/tree",))


def test_the_default_draft_is_2020_12(su_conn: psycopg.Connection) -> None:
    """No $schema: draft 2020-12, where array-form items is not a schema."""
    assert one(su_conn, "select public.jsonschema_is_valid(%s::json)",
               json.dumps({"items": [{"type": "integer"}]})) is False
    assert matches(su_conn, {"prefixItems": [{"type": "integer"}]}, ["a"]) is False


def test_registration_says_which_data_schema_is_invalid_and_why(db: psycopg.Connection) -> None:
    definition = {"pipeline": f"bad-{uuid.uuid4().hex[:8]}", "title": "Bad", "steps": [
        {"key": "ok", "title": "OK", "data_schema": {"type": "object"}},
        {"key": "scan", "title": "Scan", "data_schema": {"properties": {"x": {"pattern": "("}}}},
    ]}
    with pytest.raises(psycopg.Error) as info:
        db.execute("select ledger.register_pipeline(%s::jsonb)", [json.dumps(definition)])
    error = info.value
    assert error.sqlstate == "SL101"
    assert 'data_schema of step "scan"' in str(error) and "regular expression" in str(error)
    assert error.diag.message_detail == "at /steps/1/data_schema"
