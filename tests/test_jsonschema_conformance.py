"""The official JSON Schema Test Suite (drafts 4, 6, 7, 2019-09, 2020-12) through the validator.

Every core case of every draft runs through `jsonb_matches_schema` (`json_matches_schema` for the
few whose data jsonb cannot hold: U+0000), one round trip per suite file. No case may abort the
statement, excluded or not. Each case whose schema has a fast form runs through both of the
validator's paths, which must give one answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

SUITE = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "json-schema-test-suite"
DRAFTS = ("draft4", "draft6", "draft7", "draft2019-09", "draft2020-12")
REMOTES_BASE = "http://localhost:1234/"

# (file, group description, test description) -> why our result differs from the suite.
# A listed case that starts passing fails the test, so this list stays honest. An exclusion
# covers a wrong true/false only: a case that aborts the statement always fails.
_DYNAMIC = (
    "jsonschema 4.10.3 implements $dynamicRef/$dynamicAnchor only partially (the dynamic scope is "
    "not tracked across resources; the 2020-12 meta-schema relies on it); rewritten on the "
    "referencing library in 4.18"
)
_META = (
    "$ref to the draft's own meta-schema: 4.10.3 loses the dynamic scope ($dynamicAnchor) across "
    "the 2020-12 meta-schema's vocabulary resources, so the nested definition is not checked"
)
_VOCABULARY = (
    "$vocabulary is not implemented (as in 4.10.3): a custom meta-schema without the validation "
    "vocabulary still has its validation keywords applied"
)
_SCOPE = (
    "jsonschema 4.10.3 RefResolver: a $ref reached without descending through the enclosing $id "
    "resolves against the wrong base URI (fixed by the referencing library in 4.18); the $ref is "
    "reported as unresolvable and the instance counts as invalid"
)
_ANCHOR = (
    "jsonschema 4.10.3 looks an $anchor up by name in the whole document, ignoring the base URI "
    "that scopes it"
)


CaseKey = tuple[str, str, str]


def _excluded(reason: str, files: tuple[str, ...], group: str, *tests: str) -> dict[CaseKey, str]:
    """The same group's tests, in each of these suite files, excluded for one reason."""
    return {(name, group, test): reason for name in files for test in tests}


def _in(file: str, *drafts: str) -> tuple[str, ...]:
    return tuple(f"{draft}/{file}" for draft in drafts)


_NEW = ("draft2019-09", "draft2020-12")
_OLD = ("draft4", "draft6", "draft7")
_DYNAMIC_REF = _in("dynamicRef.json", "draft2020-12")
EXCLUDED: dict[CaseKey, str] = {
    **_excluded(_ANCHOR, _in("anchor.json", *_NEW), "same $anchor with different base uri",
                "$ref resolves to /$defs/A/allOf/1"),
    **_excluded(_META, _in("defs.json", "draft2020-12"), "validate definition against metaschema",
                "invalid definition schema"),
    **_excluded(_VOCABULARY, _in("vocabulary.json", *_NEW),
                "schema that uses custom metaschema with with no validation vocabulary",
                "no validation: invalid number, but it still validates"),
    **_excluded(_SCOPE, _in("refRemote.json", *_OLD),
                "base URI change - change folder in subschema", "number is valid"),
    **_excluded(_SCOPE, _in("ref.json", *_NEW),
                "order of evaluation: $id and $ref on nested schema",
                "data is valid against nested sibling"),
    **_excluded(_SCOPE, _in("ref.json", *_NEW), "URN ref with nested pointer ref",
                "a string is valid"),
    **_excluded(_SCOPE, _in("refRemote.json", *_NEW), "remote HTTP ref with different URN $id",
                "string is valid"),
    **_excluded(_DYNAMIC, _DYNAMIC_REF,
                "A $dynamicRef without anchor in fragment behaves identical to $ref",
                "An array of numbers is valid"),
    **_excluded(_DYNAMIC, _DYNAMIC_REF,
                "A $dynamicRef that initially resolves to a schema with a matching $dynamicAnchor "
                "resolves to the first $dynamicAnchor in the dynamic scope",
                "The recursive part is not valid against the root"),
    **_excluded(_DYNAMIC, _DYNAMIC_REF, "multiple dynamic paths to the $dynamicRef keyword",
                "number list with string values", "string list with number values"),
    **_excluded(_DYNAMIC, _DYNAMIC_REF,
                "after leaving a dynamic scope, it is not used by a $dynamicRef",
                "string matches /$defs/thingy, but the $dynamicRef does not stop here",
                "/then/$defs/thingy is the final stop for the $dynamicRef"),
    **_excluded(_DYNAMIC, _DYNAMIC_REF,
                "$ref and $dynamicAnchor are independent of order - $defs first",
                "correct extended schema"),
    **_excluded(_DYNAMIC, _DYNAMIC_REF,
                "$ref and $dynamicAnchor are independent of order - $ref first",
                "correct extended schema"),
    **_excluded(_DYNAMIC, _DYNAMIC_REF, "$dynamicRef points to a boolean schema",
                "follow $dynamicRef to a true schema"),
    **_excluded(_DYNAMIC, _DYNAMIC_REF,
                "$dynamicRef skips over intermediate resources - direct reference",
                "integer property passes", "string property fails"),
    **_excluded(_DYNAMIC, _in("unevaluatedItems.json", "draft2020-12"),
                "unevaluatedItems with $dynamicRef", "with no unevaluated items"),
    **_excluded(_DYNAMIC, _in("unevaluatedProperties.json", "draft2020-12"),
                "unevaluatedProperties with $dynamicRef", "with no unevaluated properties"),
}


def suite_files() -> list[str]:
    return sorted(
        f"{draft}/{path.name}" for draft in DRAFTS for path in (SUITE / draft).glob("*.json")
    )


META_SCHEMAS = {
    "draft4": "http://json-schema.org/draft-04/schema#",
    "draft6": "http://json-schema.org/draft-06/schema#",
    "draft7": "http://json-schema.org/draft-07/schema#",
    "draft2019-09": "https://json-schema.org/draft/2019-09/schema",
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


# jsonb cannot hold U+0000: those few cases go through json_matches_schema, which reads the text.
BATCH_SQL = """
    select (c ->> 'i')::int,
           case when (c ->> 'nul')::boolean
                then public.json_matches_schema(c -> 'schema', c -> 'data')
                else public.jsonb_matches_schema(c -> 'schema', (c -> 'data')::jsonb) end
    from json_array_elements(%s::json) as c
"""
ONE_SQL = """
    select case when %(nul)s then public.json_matches_schema(%(schema)s::json, %(data)s::json)
                else public.jsonb_matches_schema(%(schema)s::json, %(data)s::jsonb) end
"""
PATHS_SQL = """
    select (c ->> 'i')::int,
           public._jsonschema_matches_on(c -> 'schema', (c -> 'data')::jsonb, 'fast'),
           public._jsonschema_matches_on(c -> 'schema', (c -> 'data')::jsonb, 'general')
    from json_array_elements(%s::json) as c
    where public._jsonschema_path(c -> 'schema') = 'fast'
"""


def has_nul(value: Any) -> bool:
    return "\\u0000" in json.dumps(value)


def payload(cases: list[tuple[CaseKey, Any, Any, bool]]) -> str:
    return json.dumps([{"i": i, "schema": schema, "data": data, "nul": has_nul(data)}
                       for i, (_, schema, data, _) in enumerate(cases)])


def run_cases(conn: psycopg.Connection, cases: list[tuple[CaseKey, Any, Any, bool]]) -> list[Any]:
    """Each case's result: True/False, or the error text when the call raised."""
    try:
        with conn.cursor() as cur:
            cur.execute(BATCH_SQL, (payload(cases),))
            results: list[Any] = [None] * len(cases)
            for i, ok in cur.fetchall():
                results[i] = ok
            return results
    except psycopg.Error:
        pass
    # Some case raised: find out which, one call each (only on this path, which fails the test).
    results = []
    for _, schema, data, _ in cases:
        try:
            with conn.cursor() as cur:
                cur.execute(ONE_SQL, {"nul": has_nul(data), "schema": json.dumps(schema),
                                      "data": json.dumps(data)})
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
    aborted = [f"{key[1]} / {key[2]}: {got}" for (key, *_), got in zip(cases, results, strict=True)
               if not isinstance(got, bool)]
    assert not aborted, f"{len(aborted)} cases aborted the statement:\n" + "\n".join(aborted)
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


@pytest.mark.parametrize("name", suite_files())
def test_fast_and_general_paths_agree(name: str, su_conn: psycopg.Connection,
                                      registry: None) -> None:
    """One schema, one answer: every case whose schema has a fast form, through both paths."""
    cases = [case for case in load_cases(name) if not has_nul(case[1:3])]  # jsonb only
    with su_conn.cursor() as cur:
        cur.execute(PATHS_SQL, (payload(cases),))
        rows = cur.fetchall()
    differ = [f"{cases[i][0][1]} / {cases[i][0][2]}: fast {fast}, general {general}"
              for i, fast, general in rows if fast is not general]
    assert not differ, "\n".join(differ)


def test_the_suite_reaches_both_paths(su_conn: psycopg.Connection) -> None:
    """The agreement test above compares something: many suite schemas have a fast form."""
    schemas = [json.dumps(schema) for name in suite_files() for _, schema, *_ in load_cases(name)]
    row = su_conn.execute("select count(*) filter (where public._jsonschema_path(s::json) = 'fast')"
                          " from unnest(%s::text[]) s", (schemas,)).fetchone()
    assert row is not None and row[0] > 1000
