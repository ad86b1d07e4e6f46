"""The envelope compiler's SQL alone, as the tests compare it (the product also reads the
fallbacks: stepledger.schema.envelope_sql.compile_schema_details)."""

from __future__ import annotations

from typing import Any

from stepledger.schema.envelope_sql import Dialect, compile_schema_details


def compile_schema(schema: dict[str, Any] | bool, value_sql: str, *,
                   dialect: Dialect = "general") -> str:
    """SQL boolean expression over the jsonb expression `value_sql`: valid against `schema`."""
    return compile_schema_details(schema, value_sql, dialect=dialect).sql
