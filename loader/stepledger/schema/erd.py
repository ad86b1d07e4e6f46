"""The entity-relationship diagram of schemas ledger and auth, read from the live catalog.

`stepledger erd` writes it to docs/erd.md as Mermaid text, which the code host renders; the test
suite fails when that file and the catalog of a migrated database differ. Tables (partitions are
shown as their parent), their primary-key and foreign-key columns with their types, and one line
per foreign key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from stepledger.settings import Settings

SCHEMAS = ("ledger", "auth")

HEADER = """# Entity-relationship diagram: schemas ledger and auth

Generated from the database catalog by `stepledger erd`; `tests/test_erd.py` fails when this
file is out of date. Each table shows its primary-key (PK) and foreign-key (FK) columns; each
line is a foreign key, labelled with its columns. Partitions are shown as their parent table.
Tables that name a client without a foreign key (row-level security scopes them by
`client_id`) stand alone.
"""

# Tables (not partitions) of the schemas, with their key columns, in column order.
_KEY_COLUMNS = """
select n.nspname, c.relname, a.attname,
       case when t.typtype = 'd' or t.typnamespace <> 'pg_catalog'::regnamespace
            then t.typname
            when t.typcategory = 'A' then e.typname || '[]'
            else t.typname end as type,
       exists (select from pg_constraint k
                where k.conrelid = c.oid and k.contype = 'p' and a.attnum = any (k.conkey)),
       exists (select from pg_constraint k
                where k.conrelid = c.oid and k.contype = 'f' and a.attnum = any (k.conkey))
  from pg_class c
  join pg_namespace n on n.oid = c.relnamespace
  left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
       and exists (select from pg_constraint k
                    where k.conrelid = c.oid and k.contype in ('p', 'f')
                      and a.attnum = any (k.conkey))
  left join pg_type t on t.oid = a.atttypid
  left join pg_type e on e.oid = t.typelem
 where n.nspname = any (%(schemas)s) and c.relkind in ('r', 'p') and not c.relispartition
 order by n.nspname, c.relname, a.attnum
"""

# Foreign keys between those tables: the child's columns, whether they are all NOT NULL, and
# whether they are unique in the child (a primary key or unique constraint on exactly them).
_FOREIGN_KEYS = """
select cn.nspname, c.relname, pn.nspname, p.relname, k.conname,
       array(select a.attname from unnest(k.conkey) with ordinality u(attnum, i)
               join pg_attribute a on a.attrelid = k.conrelid and a.attnum = u.attnum
              order by u.i),
       (select bool_and(a.attnotnull) from pg_attribute a
         where a.attrelid = k.conrelid and a.attnum = any (k.conkey)),
       exists (select from pg_constraint u
                where u.conrelid = k.conrelid and u.contype in ('p', 'u')
                  and u.conkey::int2[] @> k.conkey and k.conkey::int2[] @> u.conkey)
  from pg_constraint k
  join pg_class c on c.oid = k.conrelid
  join pg_namespace cn on cn.oid = c.relnamespace
  join pg_class p on p.oid = k.confrelid
  join pg_namespace pn on pn.oid = p.relnamespace
 where k.contype = 'f' and k.conparentid = 0 and not c.relispartition
   and cn.nspname = any (%(schemas)s) and pn.nspname = any (%(schemas)s)
 order by cn.nspname, c.relname, k.conname
"""


@dataclass
class Table:
    schema: str
    name: str
    columns: list[tuple[str, str, str]] = field(default_factory=list)  # (type, name, keys)

    @property
    def entity(self) -> str:
        return f"{self.schema}_{self.name}"


def erd_path(settings: Settings) -> Path:
    return settings.repo_root / "docs" / "erd.md"


def diagram(conn: psycopg.Connection) -> str:
    """docs/erd.md for the database `conn` is connected to."""
    tables: dict[tuple[str, str], Table] = {}
    for schema, name, column, type_, primary, foreign in conn.execute(
            _KEY_COLUMNS, {"schemas": list(SCHEMAS)}).fetchall():
        table = tables.setdefault((schema, name), Table(schema, name))
        if column is not None:
            keys = ", ".join(k for k, on in (("PK", primary), ("FK", foreign)) if on)
            table.columns.append((type_, column, keys))
    lines = ["```mermaid", "erDiagram"]
    for table in tables.values():
        if not table.columns:
            lines.append(f"    {table.entity}")
            continue
        lines.append(f"    {table.entity} {{")
        lines.extend(f"        {type_} {column} {keys}" for type_, column, keys in table.columns)
        lines.append("    }")
    for (child_schema, child, parent_schema, parent, _name, columns, not_null,
         unique) in conn.execute(_FOREIGN_KEYS, {"schemas": list(SCHEMAS)}).fetchall():
        # parent side: exactly one, or zero or one when the columns may be null;
        # child side: zero or more, or zero or one when the columns are unique.
        left = "||" if not_null else "|o"
        right = "o|" if unique else "o{"
        lines.append(f"    {parent_schema}_{parent} {left}--{right} {child_schema}_{child} "
                     f": \"{', '.join(columns)}\"")
    lines.append("```")
    return HEADER + "\n" + "\n".join(lines) + "\n"


def current_erd(settings: Settings) -> str:
    """The diagram of the stack's database (migrated: `stepledger up` or `stepledger migrate`)."""
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        return diagram(conn)
