"""The official JSON Schema Test Suite (draft7, draft2020-12) through jsonb_matches_schema.

One round trip per suite file: all its cases go to the database as one JSON array.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

SUITE = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "json-schema-test-suite"
DRAFTS = ("draft7", "draft2020-12")
REMOTES_BASE = "http://localhost:1234/"

# (file, group description, test description) -> why our result differs from the suite.
# A listed case that starts passing fails the test, so this list stays honest.
_NUL = "PostgreSQL json/jsonb cannot hold U+0000: the input is rejected (22P05) before validation"
_DYNAMIC = (
    "jsonschema 4.10.3 implements $dynamicRef/$dynamicAnchor only partially (the dynamic scope is "
    "not tracked across resources; the 2020-12 meta-schema relies on it); rewritten on the "
    "referencing library in 4.18"
)
_PROPERTY_ESCAPE = (
    "Python's re has no ECMA-262 Unicode property escapes (\\p{Letter}): the schema is rejected "
    "with 22023"
)
_SCOPE = (
    "jsonschema 4.10.3 RefResolver: a $ref reached without descending through the enclosing $id "
    "resolves against the wrong base URI (fixed by the referencing library in 4.18)"
)
_ANCHOR = (
    "jsonschema 4.10.3 looks an $anchor up by name in the whole document, ignoring the base URI "
    "that scopes it"
)
_UNEVAL = (
    "jsonschema 4.10.3 does not count properties validated by a sibling non-boolean "
    "additionalProperties as evaluated"
)

EXCLUDED: dict[tuple[str, str, str], str] = {
    (
        "draft2020-12/anchor.json",
        "same $anchor with different base uri",
        "$ref resolves to /$defs/A/allOf/1",
    ): _ANCHOR,
    (
        "draft2020-12/anchor.json",
        "same $anchor with different base uri",
        "$ref does not resolve to /$defs/A/allOf/0",
    ): _ANCHOR,
    ("draft2020-12/const.json", "nul characters in strings", "match string with nul"): _NUL,
    (
        "draft2020-12/defs.json",
        "validate definition against metaschema",
        "invalid definition schema",
    ): _DYNAMIC,
    (
        "draft2020-12/dynamicRef.json",
        "A $dynamicRef without anchor in fragment behaves identical to $ref",
        "An array of strings is invalid",
    ): _DYNAMIC,
    (
        "draft2020-12/dynamicRef.json",
        "A $dynamicRef without anchor in fragment behaves identical to $ref",
        "An array of numbers is valid",
    ): _DYNAMIC,
    (
        "draft2020-12/dynamicRef.json",
        "A $dynamicRef that initially resolves to a schema with a matching $dynamicAnchor resolves to the first $dynamicAnchor in the dynamic scope",  # noqa: E501
        "The recursive part is not valid against the root",
    ): _DYNAMIC,
    (
        "draft2020-12/dynamicRef.json",
        "multiple dynamic paths to the $dynamicRef keyword",
        "number list with string values",
    ): _DYNAMIC,
    (
        "draft2020-12/dynamicRef.json",
        "multiple dynamic paths to the $dynamicRef keyword",
        "string list with number values",
    ): _DYNAMIC,
    (
        "draft2020-12/dynamicRef.json",
        "after leaving a dynamic scope, it is not used by a $dynamicRef",
        "string matches /$defs/thingy, but the $dynamicRef does not stop here",
    ): _DYNAMIC,
    (
        "draft2020-12/dynamicRef.json",
        "after leaving a dynamic scope, it is not used by a $dynamicRef",
        "/then/$defs/thingy is the final stop for the $dynamicRef",
    ): _DYNAMIC,
    (
        "draft2020-12/dynamicRef.json",
        "$ref and $dynamicAnchor are independent of order - $defs first",
        "incorrect extended schema",
    ): _DYNAMIC,
    (
        "draft2020-12/dynamicRef.json",
        "$ref and $dynamicAnchor are independent of order - $defs first",
        "correct extended schema",
    ): _DYNAMIC,
    (
        "draft2020-12/dynamicRef.json",
        "$ref and $dynamicAnchor are independent of order - $ref first",
        "incorrect extended schema",
    ): _DYNAMIC,
    (
        "draft2020-12/dynamicRef.json",
        "$ref and $dynamicAnchor are independent of order - $ref first",
        "correct extended schema",
    ): _DYNAMIC,
    (
        "draft2020-12/dynamicRef.json",
        "$dynamicRef points to a boolean schema",
        "follow $dynamicRef to a true schema",
    ): _DYNAMIC,
    (
        "draft2020-12/dynamicRef.json",
        "$dynamicRef points to a boolean schema",
        "follow $dynamicRef to a false schema",
    ): _DYNAMIC,
    (
        "draft2020-12/dynamicRef.json",
        "$dynamicRef skips over intermediate resources - direct reference",
        "integer property passes",
    ): _DYNAMIC,
    (
        "draft2020-12/dynamicRef.json",
        "$dynamicRef skips over intermediate resources - direct reference",
        "string property fails",
    ): _DYNAMIC,
    ("draft2020-12/enum.json", "nul characters in strings", "match string with nul"): _NUL,
    (
        "draft2020-12/pattern.json",
        "pattern with Unicode property escape requires unicode mode",
        "ASCII letters match",
    ): _PROPERTY_ESCAPE,
    (
        "draft2020-12/pattern.json",
        "pattern with Unicode property escape requires unicode mode",
        "Non-ASCII letters match",
    ): _PROPERTY_ESCAPE,
    (
        "draft2020-12/pattern.json",
        "pattern with Unicode property escape requires unicode mode",
        "Digits do not match",
    ): _PROPERTY_ESCAPE,
    (
        "draft2020-12/patternProperties.json",
        "patternProperties with Unicode property escape",
        "Unicode letter property name matches",
    ): _PROPERTY_ESCAPE,
    (
        "draft2020-12/patternProperties.json",
        "patternProperties with Unicode property escape",
        "Non-letter property name does not match pattern",
    ): _PROPERTY_ESCAPE,
    (
        "draft2020-12/ref.json",
        "order of evaluation: $id and $ref on nested schema",
        "data is valid against nested sibling",
    ): _SCOPE,
    (
        "draft2020-12/ref.json",
        "order of evaluation: $id and $ref on nested schema",
        "data is invalid against nested sibling",
    ): _SCOPE,
    ("draft2020-12/ref.json", "URN ref with nested pointer ref", "a string is valid"): _SCOPE,
    ("draft2020-12/ref.json", "URN ref with nested pointer ref", "a non-string is invalid"): _SCOPE,
    (
        "draft2020-12/refRemote.json",
        "remote HTTP ref with different URN $id",
        "number is invalid",
    ): _SCOPE,
    (
        "draft2020-12/refRemote.json",
        "remote HTTP ref with different URN $id",
        "string is valid",
    ): _SCOPE,
    (
        "draft2020-12/unevaluatedItems.json",
        "unevaluatedItems with $dynamicRef",
        "with no unevaluated items",
    ): _DYNAMIC,
    (
        "draft2020-12/unevaluatedProperties.json",
        "unevaluatedProperties with adjacent non-bool additionalProperties",
        "with additional properties",
    ): _UNEVAL,
    (
        "draft2020-12/unevaluatedProperties.json",
        "unevaluatedProperties with $dynamicRef",
        "with no unevaluated properties",
    ): _DYNAMIC,
    (
        "draft2020-12/vocabulary.json",
        "schema that uses custom metaschema with with no validation vocabulary",
        "no validation: invalid number, but it still validates",
    ): _DYNAMIC,
    ("draft7/const.json", "nul characters in strings", "match string with nul"): _NUL,
    ("draft7/enum.json", "nul characters in strings", "match string with nul"): _NUL,
    (
        "draft7/refRemote.json",
        "base URI change - change folder in subschema",
        "number is valid",
    ): _SCOPE,
    (
        "draft7/refRemote.json",
        "base URI change - change folder in subschema",
        "string is invalid",
    ): _SCOPE,
}

CaseKey = tuple[str, str, str]


def suite_files() -> list[str]:
    return sorted(
        f"{draft}/{path.name}" for draft in DRAFTS for path in (SUITE / draft).glob("*.json")
    )


META_SCHEMAS = {
    "draft7": "http://json-schema.org/draft-07/schema#",
    "draft2020-12": "https://json-schema.org/draft/2020-12/schema",
}


def with_draft(schema: Any, draft: str) -> Any:
    """The suite implies each directory's draft; say it in the schema, as harnesses do."""
    if isinstance(schema, dict) and "$schema" not in schema:
        return {"$schema": META_SCHEMAS[draft], **schema}
    return schema


def load_cases(name: str) -> list[tuple[CaseKey, Any, Any, bool]]:
    groups = json.loads((SUITE / name).read_text(encoding="utf-8"))
    draft = name.split("/")[0]
    return [
        (
            (name, group["description"], test["description"]),
            with_draft(group["schema"], draft),
            test["data"],
            test["valid"],
        )
        for group in groups
        for test in group["tests"]
    ]


@pytest.fixture(scope="module")
def registry(su_conn: psycopg.Connection) -> Iterator[None]:
    """The suite's remotes/ under their http://localhost:1234/ URIs."""
    remotes = SUITE / "remotes"
    rows = [
        (REMOTES_BASE + path.relative_to(remotes).as_posix(), path.read_text(encoding="utf-8"))
        for path in sorted(remotes.rglob("*.json"))
    ]
    with su_conn.cursor() as cur:
        cur.executemany(
            "insert into public.jsonschema_registry (uri, schema) values (%s, %s::jsonb)"
            " on conflict (uri) do update set schema = excluded.schema",
            rows,
        )
    yield
    with su_conn.cursor() as cur:
        cur.execute(
            "delete from public.jsonschema_registry where uri = any(%s)", ([r[0] for r in rows],)
        )


BATCH_SQL = """
    select (c ->> 'i')::int, public.jsonb_matches_schema(c -> 'schema', (c -> 'data')::jsonb)
    from json_array_elements(%s::json) as c
"""
ONE_SQL = "select public.jsonb_matches_schema(%s::json, %s::jsonb)"


def run_cases(conn: psycopg.Connection, cases: list[tuple[CaseKey, Any, Any, bool]]) -> list[Any]:
    """Each case's result: True/False, or the error text when the call raised."""
    payload = json.dumps(
        [{"i": i, "schema": schema, "data": data} for i, (_, schema, data, _) in enumerate(cases)]
    )
    try:
        with conn.cursor() as cur:
            cur.execute(BATCH_SQL, (payload,))
            results: list[Any] = [None] * len(cases)
            for i, ok in cur.fetchall():
                results[i] = ok
            return results
    except psycopg.Error:
        pass
    # Some case raised: find out which, one call each (only on this rare path).
    results = []
    for _, schema, data, _ in cases:
        try:
            with conn.cursor() as cur:
                cur.execute(ONE_SQL, (json.dumps(schema), json.dumps(data)))
                row = cur.fetchone()
                results.append(row[0] if row else None)
        except psycopg.Error as exc:
            results.append(f"error {exc.sqlstate}: {exc}")
    return results


@pytest.mark.parametrize("name", suite_files())
def test_suite_file(name: str, su_conn: psycopg.Connection, registry: None) -> None:
    cases = load_cases(name)
    results = run_cases(su_conn, cases)
    wrong: list[str] = []
    fixed: list[str] = []
    for (key, _, data, valid), got in zip(cases, results, strict=True):
        if key in EXCLUDED:
            if got == valid:
                fixed.append(f"{key[1]} / {key[2]}: now passes, remove it from EXCLUDED")
        elif got != valid:
            wrong.append(f"{key[1]} / {key[2]}: expected {valid}, got {got!r} for {data!r}")
    assert not wrong, f"{len(wrong)} of {len(cases)} cases wrong:\n" + "\n".join(wrong)
    assert not fixed, "\n".join(fixed)


def test_excluded_cases_exist() -> None:
    """Every exclusion names a real case of the suite."""
    known = {key for name in suite_files() for key, *_ in load_cases(name)}
    assert not set(EXCLUDED) - known
