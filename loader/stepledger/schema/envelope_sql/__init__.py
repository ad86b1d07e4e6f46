"""The envelope compiler: a JSON Schema compiled into one SQL boolean expression (ADR 0003).

compiler.py walks the schema; numbers.py holds the numeric bounds as the validator reads them,
patterns.py the regex subset PostgreSQL reads the same way.
"""

from stepledger.schema.envelope_sql.compiler import CompiledSchema, Dialect, compile_schema_details

__all__ = ["CompiledSchema", "Dialect", "compile_schema_details"]
