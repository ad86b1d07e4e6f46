"""The access matrix: who may do what to every object of the schemas that hold or expose data.

`actual(conn)` reads it from the catalog; `intended()` merges tests/access/*.yaml (format at the
top of tests/access/spine.yaml). tests/test_access_matrix.py compares the two.

To see the entries of objects missing from the files (to review, never to paste unread):
    STEPLEDGER_HOME=... STEPLEDGER_PG_PORT=... python tests/access_matrix.py [OBJECT-PREFIX ...]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import psycopg
import yaml

ACCESS_DIR = Path(__file__).resolve().parent / "access"
SCHEMAS = ("api", "reporting", "ledger", "auth")
# Functions are also compared in public, where the JSON Schema validator lives (its tables and
# the schema itself keep PostgreSQL's defaults and are not listed).
FUNCTION_SCHEMAS = (*SCHEMAS, "public")
# The roles whose rights are compared. bi_all_clients is checked separately: it must hold exactly
# bi_reader's grants (it inherits them) plus its policies.
ROLES = ("anon", "client", "admin", "ingest", "bi_reader", "authenticator")
RELATION_KINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view",
                  "f": "foreign table", "S": "sequence"}
TABLE_PRIVILEGES = ("select", "insert", "update", "delete", "truncate")
COLUMN_PRIVILEGES = ("select", "insert", "update")
SEQUENCE_PRIVILEGES = ("usage", "select", "update")
SCHEMA_PRIVILEGES = ("usage", "create")
FLAGS = ("rls", "security_invoker", "security_definer")

Entry = dict[str, Any]


def _schemas(conn: psycopg.Connection) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for (name,) in conn.execute("select nspname from pg_namespace where nspname = any(%s)",
                                [list(SCHEMAS)]).fetchall():
        entry: Entry = {"kind": "schema"}
        for role in ROLES:
            privs = [p for p in SCHEMA_PRIVILEGES if conn.execute(
                "select has_schema_privilege(%s, %s, %s)", [role, name, p]).fetchone()[0]]
            if privs:
                entry[role] = privs
        out[name] = entry
    return out


def _relations(conn: psycopg.Connection) -> dict[str, Entry]:
    rows = conn.execute(
        """
        select c.oid, n.nspname || '.' || c.relname, c.relkind::text, c.relrowsecurity,
               coalesce((select option_value in ('true', 'on', '1')
                           from pg_options_to_table(c.reloptions)
                          where option_name = 'security_invoker'), false)
          from pg_class c
          join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = any(%s) and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
           and not c.relispartition
           and not exists (select from pg_depend d where d.classid = 'pg_class'::regclass
                            and d.objid = c.oid and d.deptype = 'e')
         order by 2
        """, [list(SCHEMAS)]).fetchall()
    out: dict[str, Entry] = {}
    for oid, name, relkind, rls, invoker in rows:
        kind = RELATION_KINDS[relkind]
        entry: Entry = {"kind": kind}
        if relkind in ("r", "p"):
            entry["rls"] = bool(rls)
        if relkind == "v":
            entry["security_invoker"] = bool(invoker)
        for role in ROLES:
            privs = _relation_privileges(conn, role, oid, relkind)
            if privs:
                entry[role] = privs
        out[name] = entry
    return out


def _relation_privileges(conn: psycopg.Connection, role: str, oid: int, relkind: str) -> list[str]:
    if relkind == "S":
        return [p for p in SEQUENCE_PRIVILEGES if conn.execute(
            "select has_sequence_privilege(%s, %s::oid, %s)", [role, oid, p]).fetchone()[0]]
    privs: list[str] = []
    for p in TABLE_PRIVILEGES:
        held = conn.execute("select has_table_privilege(%s, %s::oid, %s)", [role, oid, p])
        if held.fetchone()[0]:
            privs.append(p)
        elif p in COLUMN_PRIVILEGES:
            columns = [c for (c,) in conn.execute(
                "select attname from pg_attribute where attrelid = %s and attnum > 0 "
                "and not attisdropped and has_column_privilege(%s, %s::oid, attnum, %s) "
                "order by attnum", [oid, role, oid, p]).fetchall()]
            if columns:
                privs.append(f"{p}({', '.join(columns)})")
    return privs


def _functions(conn: psycopg.Connection) -> dict[str, Entry]:
    rows = conn.execute(
        """
        select p.oid, p.oid::regprocedure::text, p.prosecdef, p.prokind::text
          from pg_proc p
          join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = any(%s)
           and not exists (select from pg_depend d where d.classid = 'pg_proc'::regclass
                            and d.objid = p.oid and d.deptype = 'e')
         order by 2
        """, [list(FUNCTION_SCHEMAS)]).fetchall()
    out: dict[str, Entry] = {}
    for oid, name, definer, prokind in rows:
        entry: Entry = {"kind": "procedure" if prokind == "p" else "function",
                        "security_definer": bool(definer)}
        for role in ROLES:
            if conn.execute("select has_function_privilege(%s, %s::oid, 'execute')",
                            [role, oid]).fetchone()[0]:
                entry[role] = ["execute"]
        out[name] = entry
    return out


def actual(conn: psycopg.Connection) -> dict[str, Entry]:
    """The matrix as the catalog has it. Object names are fully qualified."""
    conn.execute("set search_path = pg_catalog")  # regprocedure then qualifies every name
    try:
        return {**_schemas(conn), **_relations(conn), **_functions(conn)}
    finally:
        conn.execute("reset search_path")


# Top-level keys that hold another kind of matrix, checked by their own tests (loader.yaml lists
# HTTP endpoints with the roles allowed and denied; tests/test_replay_access.py).
OTHER_DOCUMENTS = frozenset({"endpoints"})


def load_files(directory: Path = ACCESS_DIR,
               conn: psycopg.Connection | None = None) -> tuple[dict[str, Entry], list[str]]:
    """Merge every <area>.yaml; returns the matrix and the problems found in the files. With a
    connection, function names are written the way the catalog prints them, so that
    `f(text, timestamptz)` and `f(text,timestamp with time zone)` are the same key."""
    merged: dict[str, Entry] = {}
    origin: dict[str, str] = {}
    problems: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        document = yaml.safe_load(path.read_text()) or {}
        if not isinstance(document, dict):
            problems.append(f"{path.name}: the top level must be a mapping of objects")
            continue
        for raw_name, entry in document.items():
            if raw_name in OTHER_DOCUMENTS:
                continue
            name = canonical(conn, str(raw_name))
            problem = _check_entry(name, entry)
            if problem:
                problems.append(f"{path.name}: {problem}")
                continue
            entry = normalise(entry)
            if name in merged:
                # An area that changes another's object may list it too, if both say the same.
                if not _agree(merged[name], entry):
                    problems.append(f"{name}: {origin[name]} and {path.name} disagree")
                elif "kind" in entry:
                    merged[name], origin[name] = entry, path.name
                continue
            merged[name] = entry
            origin[name] = path.name
    return merged, problems


def _agree(one: Entry, other: Entry) -> bool:
    if "kind" in one and "kind" in other:
        return one == other
    return _short(one) == _short(other)


def canonical(conn: psycopg.Connection | None, name: str) -> str:
    """A function's name(argument types) as regprocedure prints it; other names unchanged."""
    if conn is None or "(" not in name:
        return name
    conn.execute("set search_path = pg_catalog")
    try:
        row = conn.execute("select to_regprocedure(%s)::text", [name]).fetchone()
    except psycopg.Error:
        row = None  # a type that does not exist: leave the name, reported as missing
    finally:
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        conn.execute("reset search_path")
    return str(row[0]) if row and row[0] else name


def _check_entry(name: str, entry: object) -> str | None:
    if not isinstance(entry, dict):
        return f"{name}: an entry is a mapping"
    unknown = set(entry) - {"kind", *FLAGS, *ROLES}
    if unknown:
        return f"{name}: unknown keys {sorted(unknown)} (roles are {', '.join(ROLES)})"
    if "kind" not in entry and set(entry) & set(FLAGS):
        return f"{name}: flags need a kind"
    for role in ROLES:
        if role in entry and not (isinstance(entry[role], list)
                                  and all(isinstance(p, str) for p in entry[role])):
            return f"{name}: {role} must be a list of privileges"
    return None


def normalise(entry: Entry) -> Entry:
    """Full entries (with a kind) are compared exactly; short ones (roles only) on privilege names
    alone, whatever the order, a privilege held on some columns counting as held."""
    out: Entry = {"kind": entry["kind"]} if "kind" in entry else {}
    for flag in FLAGS:
        if flag in entry:
            out[flag] = bool(entry[flag])
    for role in ROLES:
        if entry.get(role):
            out[role] = list(entry[role]) if "kind" in entry else sorted(set(entry[role]))
    return out


def _short(entry: Entry) -> Entry:
    return {role: sorted({p.split("(")[0] for p in entry[role]}) for role in ROLES if role in entry}


def intended(conn: psycopg.Connection | None = None) -> dict[str, Entry]:
    matrix, problems = load_files(conn=conn)
    if problems:
        raise ValueError("; ".join(problems))
    return matrix


def differences(want: dict[str, Entry], have: dict[str, Entry]) -> list[str]:
    """Readable differences, one line per object."""
    lines: list[str] = []
    for name in sorted(set(want) | set(have)):
        if name not in want:
            lines.append(f"{name}: exists but is in no tests/access/*.yaml: "
                         f"{_flow(have[name])}")
        elif name not in have:
            lines.append(f"{name}: listed but does not exist")
        elif "kind" not in want[name]:
            if want[name] != _short(have[name]):
                lines.append(f"{name}: intended {_flow(want[name])}, "
                             f"actual {_flow(_short(have[name]))}")
        elif want[name] != have[name]:
            lines.append(f"{name}: intended {_flow(want[name])}, actual {_flow(have[name])}")
    return lines


def _flow(entry: Entry) -> str:
    return yaml.safe_dump(entry, default_flow_style=True, sort_keys=False).strip()


def dump(entries: dict[str, Entry]) -> str:
    """YAML in the files' format (block style, one role per line)."""
    chunks = []
    for name, entry in entries.items():
        lines = [f"{_quote(name)}:", f"  kind: {entry['kind']}"]
        for flag in FLAGS:
            if flag in entry:
                lines.append(f"  {flag}: {str(entry[flag]).lower()}")
        for role in ROLES:
            if role in entry:
                lines.append(f"  {role}: [{', '.join(_quote(p) for p in entry[role])}]")
        chunks.append("\n".join(lines))
    return "\n".join(chunks) + "\n"


def _quote(text: str) -> str:
    plain = yaml.safe_load(text) == text if not any(c in text for c in ",[]{}#&*!|>'\"%@`") \
        else False
    return text if plain and ": " not in text else "'" + text.replace("'", "''") + "'"


def main(argv: list[str]) -> int:
    from stepledger.settings import Settings

    settings = Settings.from_env()
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        have = actual(conn)
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        want, _ = load_files(conn=conn)
    missing = {k: v for k, v in have.items()
               if k not in want and (not argv or any(k.startswith(a) for a in argv))}
    sys.stdout.write(dump(missing))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
