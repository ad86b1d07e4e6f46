"""Compile a JSON Schema into one SQL boolean expression over a jsonb value (ADR 0003).

`compile_schema_details(schema, "payload").sql` is plain SQL (jsonb operators, jsonb_typeof, numeric
comparisons, `~`, jsonb_path_exists: no subquery) that is true exactly when our validator,
`public.jsonb_matches_schema(schema, payload)`, says valid. Wrapped in an immutable `language sql`
function it is inlined into the CHECK constraint and the ingest statement, so the common case
never enters plpython.

Compiled keywords: type (1.0 is an integer), enum and const (JSON equality), minLength and
maxLength (code points), pattern (a whitelisted regex subset, see patterns.py), minimum,
maximum, exclusiveMinimum, exclusiveMaximum (numbers as the validator reads them, see
numbers.py), integer multipleOf, required, properties, additionalProperties (false, or
a schema of types, scalar enums and bounds), minItems, maxItems, items (a schema of that kind,
or any schema when maxItems <= 8), allOf, anyOf, oneOf, not, if/then/else, boolean schemas and
local `$ref`s into the same document. `format` and other annotations assert nothing, as in our
validator.

Anything else makes that subschema fall back to `public.jsonb_matches_schema('<subschema>',
value)`. A subschema that needs a fallback and contains a `$ref`, and every schema with an
embedded `$id`, anchors, dynamic or recursive references, or a draft other than 2020-12, 2019-09
and 7, falls back as a whole.

`dialect` names the validator the SQL must agree with where implementations differ: "general"
(our plpython validator, both of its paths: `multipleOf` is exact for integers of any size) or
"spec" (pg_jsonschema: it divides in floating point above 2**53). In both, `$` ends the string
and numeric bounds ignore true and false.

Assumes a valid schema (`public.jsonschema_is_valid`); the compiled SQL never returns NULL for a
non-null value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal
from urllib.parse import unquote

from stepledger.schema.envelope_sql.numbers import (
    EXACT_INT,
    Bounds,
    at_least,
    at_most,
    bounds_sql,
    decimal,
    equal_to,
)
from stepledger.schema.envelope_sql.patterns import Untranslatable, translate

Dialect = Literal["general", "spec"]

JSONB_TYPES = ("object", "array", "string", "number", "boolean", "null")
SCHEMA_TYPES = frozenset((*JSONB_TYPES, "integer"))
# Assertions and applicators that are not compiled: their subschema falls back.
FALLBACK_KEYWORDS = frozenset((
    "patternProperties", "propertyNames", "dependencies", "dependentRequired",
    "dependentSchemas", "prefixItems", "additionalItems", "contains", "minContains", "maxContains",
    "unevaluatedItems", "unevaluatedProperties", "minProperties", "maxProperties",
    "contentMediaType", "contentEncoding", "contentSchema", "extends", "disallow", "divisibleBy",
))
# Keywords that change how references resolve: the whole schema falls back.
RESOLUTION_KEYWORDS = frozenset((
    "$id", "$anchor", "$dynamicAnchor", "$dynamicRef", "$recursiveRef", "$recursiveAnchor",
    "$vocabulary", "$schema",
))
NUMERIC_KEYWORDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
PATH_KEYWORDS = frozenset(("type", "enum", "const", *NUMERIC_KEYWORDS))
# Keywords that have a meaning somewhere; any other key is an annotation and asserts nothing.
MEANINGFUL = FALLBACK_KEYWORDS | RESOLUTION_KEYWORDS | frozenset((
    "type", "enum", "const", "minLength", "maxLength", "pattern", "multipleOf", "required",
    "properties", "additionalProperties", "minItems", "maxItems", "items", "uniqueItems",
    "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "$ref", *NUMERIC_KEYWORDS,
))
DRAFTS = {
    "json-schema.org/draft/2020-12/schema": "2020-12",
    "json-schema.org/draft/2019-09/schema": "2019-09",
    "json-schema.org/draft-07/schema": "7",
    "json-schema.org/draft-06/schema": None,
    "json-schema.org/draft-04/schema": None,
    "json-schema.org/draft-03/schema": None,
}
MAX_UNROLLED_ITEMS = 8


class _Fallback(Exception):
    """This subschema is left to the validator."""


class _WholeFallback(Exception):
    """The whole schema is left to the validator."""


@dataclass(frozen=True)
class _Value:
    """SQL for a jsonb value, and for its text when it is a JSON string."""

    jsonb: str
    text: str

    @classmethod
    def of(cls, sql: str) -> _Value:
        return cls(sql, f"({sql} #>> '{{}}')")

    def key(self, name: str) -> _Value:
        lit = _lit(name)
        return _Value(f"({self.jsonb} -> {lit})", f"({self.jsonb} ->> {lit})")

    def index(self, i: int) -> _Value:
        return _Value(f"({self.jsonb} -> {i})", f"({self.jsonb} ->> {i})")

    @property
    def numeric(self) -> str:
        return f"({self.jsonb})::numeric"


@dataclass(frozen=True)
class _Known:
    """What enclosing checks already established about the value (when they pass)."""

    type: str | None = None
    keys: frozenset[str] = frozenset()


@dataclass
class CompiledSchema:
    """The SQL and the JSON pointers of the subschemas left to the validator ("" = all)."""

    sql: str
    fallbacks: list[str] = field(default_factory=list)

    @property
    def whole_fallback(self) -> bool:
        return self.fallbacks == [""]


def compile_schema_details(schema: dict[str, Any] | bool, value_sql: str, *,
                           dialect: Dialect = "general") -> CompiledSchema:
    """SQL boolean expression over the jsonb expression `value_sql` (valid against `schema`),
    and which subschemas fall back to the validator."""
    return _Compiler(schema, dialect).run(_Value.of(value_sql))


class _Compiler:
    def __init__(self, root: dict[str, Any] | bool, dialect: Dialect) -> None:
        self.root = root
        self.dialect = dialect
        self.draft = _draft(root)
        self.fallbacks: list[str] = []
        self.expanding: list[str] = []

    def run(self, value: _Value) -> CompiledSchema:
        try:
            if self.draft is None or _resolution_keywords_below(self.root):
                raise _WholeFallback
            sql = self.node(self.root, value, _Known(), "")
        except _WholeFallback:
            return CompiledSchema(self.validator(self.root, value, whole=True), [""])
        return CompiledSchema(sql, self.fallbacks)

    def validator(self, schema: Any, value: _Value, *, whole: bool = False) -> str:
        document = schema
        if (not whole and isinstance(schema, dict) and isinstance(self.root, dict)
                and "$schema" in self.root):
            document = {"$schema": self.root["$schema"], **schema}
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        return f"public.jsonb_matches_schema({_lit(text, strict=False)}::json, {value.jsonb})"

    # -- one subschema --------------------------------------------------------------------
    def node(self, schema: Any, v: _Value, known: _Known, where: str,
             present: str | None = None) -> str:
        """SQL for `schema` over v. With `present` (SQL true when v exists: an optional
        property), an absent v is valid."""
        if schema is True:
            return "true"
        if schema is False:
            return "false" if present is None else f"not ({present})"
        try:
            if not isinstance(schema, dict):
                raise _Fallback
            sql, absence_handled = self.assertions(schema, v, known, where,
                                                   optional=present is not None)
        except _Fallback:
            if _contains_ref(schema):
                raise _WholeFallback from None
            self.fallbacks.append(where)
            sql, absence_handled = self.validator(schema, v), False
        if present is None or sql == "true" or absence_handled:
            return sql
        return f"(case when {present} then {sql} else true end)"

    def assertions(self, s: dict[str, Any], v: _Value, known: _Known, where: str,
                   optional: bool = False) -> tuple[str, bool]:
        """The checks of one schema object, and whether they already accept an absent value."""
        if self.draft == "7" and "$ref" in s:  # draft 7 ignores every keyword beside $ref
            return self.ref(s["$ref"], v, known), False
        if set(s) & FALLBACK_KEYWORDS or s.get("uniqueItems", False) is not False:
            raise _Fallback
        allowed, integral = _types(s)
        single = next(iter(allowed)) if allowed is not None and len(allowed) == 1 else None
        here = known.type or single
        outer = known.keys if known.type == "object" else frozenset()
        inner = _Known(here, outer | set(_required(s)) if here == "object" else frozenset())

        def typed(t: str) -> str:
            if allowed is not None and t not in allowed:
                return "false"
            if t == "object":
                return self.object_checks(s, v, outer, where)
            if t == "array":
                return self.array_checks(s, v, where)
            if t == "string":
                return self.string_checks(s, v)
            if t == "number":
                return self.number_checks(s, v, integral)
            return "true"

        if here is not None:
            body = typed(here)
            body = _and(body, *self.common(s, v, inner, where)) if body != "false" else body
            if known.type is not None or body == "false":
                return body, False
            if optional:  # one lookup: jsonb_typeof is null when the property is absent
                return (f"(case coalesce(jsonb_typeof({v.jsonb}), '')"
                        f" when '{here}' then {body} when '' then true else false end)"), True
            is_type = f"jsonb_typeof({v.jsonb}) = '{here}'"
            if body == "true":
                return is_type, False
            return f"(case when {is_type} then {body} else false end)", False
        cases = "".join(f" when '{t}' then {sql}" for t in JSONB_TYPES
                        if (sql := typed(t)) != "true")
        by_type = f"(case jsonb_typeof({v.jsonb}){cases} else true end)" if cases else "true"
        return _and(by_type, *self.common(s, v, inner, where)), False

    # -- keywords of one type -------------------------------------------------------------
    def string_checks(self, s: dict[str, Any], v: _Value) -> str:
        lo = _count(s, "minLength") or 0
        hi = _count(s, "maxLength")
        regex = None
        if "pattern" in s:
            if not isinstance(s["pattern"], str):
                raise _Fallback
            try:
                # Both validator paths read `$` as ECMA-262 does (the end of the string).
                found = translate(s["pattern"])
            except Untranslatable:
                raise _Fallback from None
            regex = f"{v.text} ~ {_lit(found.regex)}"
            lo = max(lo, found.min_length)
            if found.max_length is not None:
                hi = found.max_length if hi is None else min(hi, found.max_length)
        length = f"char_length({v.text})"
        if hi is not None and lo > hi:
            return "false"
        if lo and hi is not None:  # |2n - (lo + hi)| <= hi - lo reads the length once
            bound = (f"{length} = {lo}" if lo == hi
                     else f"abs(2 * {length} - {lo + hi}) <= {hi - lo}")
        elif lo:
            bound = f"{length} >= {lo}"
        else:
            bound = "true" if hi is None else f"{length} <= {hi}"
        return _and(bound, regex or "true")

    def number_checks(self, s: dict[str, Any], v: _Value, integral: bool) -> str:
        bounds = _bounds(s)
        n = v.numeric
        parts = []
        if integral or not bounds.unbounded:
            parts.append(bounds_sql(bounds, n, integral=integral))
        if "multipleOf" in s:
            m = s["multipleOf"]
            if type(m) is not int or m <= 0:
                raise _Fallback
            # Exact below 2**53 in every implementation; elsewhere the validator decides (our
            # general path is exact for all integers, the others divide in floating point).
            exact = "true" if self.dialect == "general" else f"abs({n}) < {EXACT_INT}"
            rest = self.validator({"multipleOf": m}, v)
            parts.append(f"(case when scale({n}) = 0 and {exact} then mod({n}, {m}) = 0"
                         f" else {rest} end)")
        return _and(*parts)

    def object_checks(self, s: dict[str, Any], v: _Value, outer: frozenset[str],
                      where: str) -> str:
        """`outer`: keys that an enclosing schema of the same value requires (checked there)."""
        parts = []
        required = _required(s)
        present = outer | set(required)
        missing = [k for k in dict.fromkeys(required) if k not in outer]
        if len(missing) == 1:
            parts.append(f"{v.jsonb} ? {_lit(missing[0])}")
        elif missing:
            parts.append(f"{v.jsonb} ?& {_text_array(missing)}")
        properties = s.get("properties", {})
        if not isinstance(properties, dict):
            raise _Fallback
        for name, sub in properties.items():
            check = self.node(sub, v.key(name), _Known(), f"{where}/properties/{_escape(name)}",
                              None if name in present else f"{v.jsonb} ? {_lit(name)}")
            if check != "true":
                parts.append(check)
        extra = s.get("additionalProperties", True)
        rest = f"({v.jsonb} - {_text_array(list(properties))})" if properties else v.jsonb
        if extra is False:
            parts.append(f"{rest} = '{{}}'::jsonb")
        elif extra is not True:
            predicate = self.path_predicate(extra)
            if predicate is None:
                raise _Fallback
            if predicate:
                path = f"strict $.* ? (!({predicate}))"
                parts.append(f"not jsonb_path_exists({rest}, {_lit(path)}::jsonpath)")
        return _and(*parts)

    def array_checks(self, s: dict[str, Any], v: _Value, where: str) -> str:
        parts = []
        length = f"jsonb_array_length({v.jsonb})"
        lo = _count(s, "minItems")
        hi = _count(s, "maxItems")
        if lo:
            parts.append(f"{length} >= {lo}")
        if hi is not None:
            parts.append(f"{length} <= {hi}")
        items = s.get("items", True)
        if isinstance(items, list):
            raise _Fallback  # the tuple form (draft 7, 2019-09)
        if items is False:
            parts.append(f"{length} = 0")
        elif items is not True:
            predicate = self.path_predicate(items)
            if predicate:
                path = f"strict $[*] ? (!({predicate}))"
                parts.append(f"not jsonb_path_exists({v.jsonb}, {_lit(path)}::jsonpath)")
            elif predicate is None:
                if hi is None or hi > MAX_UNROLLED_ITEMS:
                    raise _Fallback
                for i in range(hi):
                    check = self.node(items, v.index(i), _Known(), f"{where}/items")
                    if check != "true":
                        parts.append(f"(case when {length} > {i} then {check} else true end)")
        return _and(*parts)

    # -- keywords of any type -------------------------------------------------------------
    def common(self, s: dict[str, Any], v: _Value, known: _Known, where: str) -> list[str]:
        parts = []
        if "enum" in s:
            parts.append(self.enum(s["enum"], v))
        if "const" in s:
            parts.append(self.enum([s["const"]], v))
        for keyword in ("allOf", "anyOf", "oneOf"):
            if keyword not in s:
                continue
            subs = s[keyword]
            if not isinstance(subs, list) or not subs:
                raise _Fallback
            checks = [self.node(sub, v, known, f"{where}/{keyword}/{i}")
                      for i, sub in enumerate(subs)]
            if keyword == "allOf":
                parts.append(_and(*checks))
            elif keyword == "anyOf":
                parts.append(_or(*checks))
            else:
                parts.append("(" + " + ".join(f"({c})::int" for c in checks) + ") = 1")
        if "not" in s:
            parts.append(_not(self.node(s["not"], v, known, where + "/not")))
        if "if" in s:
            then = self.node(s["then"], v, known, where + "/then") if "then" in s else "true"
            other = self.node(s["else"], v, known, where + "/else") if "else" in s else "true"
            if then != "true" or other != "true":
                test = self.node(s["if"], v, known, where + "/if")
                parts.append(f"(case when {test} then {then} else {other} end)")
        if "$ref" in s:
            parts.append(self.ref(s["$ref"], v, known))
        return parts

    def enum(self, values: Any, v: _Value) -> str:
        if not isinstance(values, list):
            raise _Fallback
        # jsonb cannot hold U+0000: a value with it never equals an instance.
        values = [x for x in values if not _has_nul(x)]
        plain = [x for x in values if not _is_number(x)]
        if any(_has_number(x) for x in plain):
            raise _Fallback  # containers with numbers: jsonb compares decimals exactly
        parts = []
        if len(plain) == 1:
            parts.append(f"{v.jsonb} = {_jsonb(plain[0])}")
        elif plain:
            parts.append(f"{v.jsonb} in ({', '.join(_jsonb(x) for x in plain)})")
        numbers = [_fraction(x) for x in values if _is_number(x)]
        if numbers:
            equal = _or(*(bounds_sql(equal_to(c), v.numeric, integral=False) for c in numbers))
            parts.append(f"(case when jsonb_typeof({v.jsonb}) = 'number' then {equal}"
                         " else false end)")
        return _or(*parts) if parts else "false"

    def ref(self, ref: Any, v: _Value, known: _Known) -> str:
        if not isinstance(ref, str) or not ref.startswith("#/") or ref in self.expanding:
            raise _WholeFallback  # remote, anchor, the root itself, or recursion
        target: Any = self.root
        for token in unquote(ref[2:]).split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and token in target:
                target = target[token]
            elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
                target = target[int(token)]
            else:
                raise _WholeFallback
        self.expanding.append(ref)
        try:
            return self.node(target, v, known, ref[1:])
        finally:
            self.expanding.pop()

    def path_predicate(self, s: Any) -> str | None:
        """A two-valued jsonpath filter on `@` for simple schemas ("" = always true), or None."""
        if s is True:
            return ""
        if not isinstance(s, dict) or set(s) & (MEANINGFUL - PATH_KEYWORDS):
            return None
        parts = []
        allowed, integral = _types(s)
        if integral:
            return None
        if allowed is not None:
            parts.append("(" + " || ".join(f'@.type() == "{t}"' for t in sorted(allowed)) + ")")
        for keyword in ("const", "enum"):
            if keyword not in s:
                continue
            values = [s["const"]] if keyword == "const" else s["enum"]
            if not isinstance(values, list) or not values or any(
                    not (x is None or isinstance(x, (str, bool))) for x in values):
                return None
            parts.append("(" + " || ".join(_path_equals(x) for x in values) + ")")
        bounds = _bounds(s)
        if not bounds.unbounded:
            if not bounds.unified():
                return None
            parts.append(f'(@.type() != "number" || ({_path_interval(bounds)}))')
        return " && ".join(parts)


# -- helpers -------------------------------------------------------------------------------
def _draft(schema: Any) -> str | None:
    uri = schema.get("$schema") if isinstance(schema, dict) else None
    if not isinstance(uri, str):
        return "2020-12"
    # Unknown meta-schemas validate as 2020-12, as in our validator.
    return DRAFTS.get(uri.split("://", 1)[-1].rstrip("#"), "2020-12")


def _resolution_keywords_below(root: Any) -> bool:
    """An embedded resource, anchor or dynamic reference anywhere below the root. Scans every
    value, data included: a false alarm only costs a fallback."""
    def walk(node: Any, top: bool) -> bool:
        if isinstance(node, list):
            return any(walk(x, False) for x in node)
        if not isinstance(node, dict):
            return False
        for key, value in node.items():
            if key in RESOLUTION_KEYWORDS and not (top and key in ("$schema", "$id")) and (
                    isinstance(value, str) or key == "$vocabulary"):
                return True
        return any(walk(value, False) for value in node.values())
    return walk(root, True)


def _contains_ref(node: Any) -> bool:
    if isinstance(node, list):
        return any(_contains_ref(x) for x in node)
    if not isinstance(node, dict):
        return False
    return "$ref" in node or any(_contains_ref(value) for value in node.values())


def _types(s: dict[str, Any]) -> tuple[frozenset[str] | None, bool]:
    """(allowed jsonb types or None for any, whether a number must be an integer)."""
    if "type" not in s:
        return None, False
    names = s["type"] if isinstance(s["type"], list) else [s["type"]]
    if not names or any(not isinstance(t, str) or t not in SCHEMA_TYPES for t in names) \
            or len(set(names)) != len(names):
        raise _Fallback
    allowed = frozenset("number" if t == "integer" else t for t in names)
    return allowed, "integer" in names and "number" not in names


def _required(s: dict[str, Any]) -> list[str]:
    required = s.get("required", [])
    if not isinstance(required, list) or not all(isinstance(k, str) for k in required):
        raise _Fallback
    return required


def _count(s: dict[str, Any], keyword: str) -> int | None:
    """A non-negative integer keyword (2.0 counts as 2, as in the meta-schema)."""
    if keyword not in s:
        return None
    value = s[keyword]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or value < 0:
        raise _Fallback
    return value


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _has_number(x: Any) -> bool:
    if isinstance(x, list):
        return any(_has_number(y) for y in x)
    if isinstance(x, dict):
        return any(_has_number(y) for y in x.values())
    return _is_number(x)


def _has_nul(x: Any) -> bool:
    if isinstance(x, str):
        return "\x00" in x
    if isinstance(x, list):
        return any(_has_nul(y) for y in x)
    if isinstance(x, dict):
        return any("\x00" in k or _has_nul(y) for k, y in x.items())
    return False


def _fraction(x: Any) -> Fraction:
    if not _is_number(x) or (isinstance(x, float) and not math.isfinite(x)):
        raise _Fallback
    return Fraction(x)


def _bounds(s: dict[str, Any]) -> Bounds:
    bounds = Bounds()
    for keyword, strict in (("minimum", False), ("exclusiveMinimum", True)):
        if keyword in s:
            bounds = bounds.meet(at_least(_fraction(s[keyword]), strict))
    for keyword, strict in (("maximum", False), ("exclusiveMaximum", True)):
        if keyword in s:
            bounds = bounds.meet(at_most(_fraction(s[keyword]), strict))
    return bounds


def _path_equals(x: str | bool | None) -> str:
    if x is None:
        return '@.type() == "null"'
    if isinstance(x, bool):
        return f'(@.type() == "boolean" && @ == {"true" if x else "false"})'
    return f'(@.type() == "string" && @ == {json.dumps(x, ensure_ascii=False)})'


def _path_interval(bounds: Bounds) -> str:
    r = bounds.rounded
    parts = []
    if r.lo is not None:
        parts.append(f"@ {'>=' if r.lo_incl else '>'} {decimal(r.lo)}")
    if r.hi is not None:
        parts.append(f"@ {'<=' if r.hi_incl else '<'} {decimal(r.hi)}")
    return " && ".join(parts)


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _lit(text: str, *, strict: bool = True) -> str:
    """A SQL string literal that reads the same whatever standard_conforming_strings says."""
    if "\x00" in text:
        if strict:
            raise _Fallback
        raise _WholeFallback
    quoted = text.replace("'", "''")
    if "\\" in text:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return "'" + quoted + "'"


def _text_array(items: list[str]) -> str:
    return "array[" + ", ".join(_lit(k) for k in items) + "]::text[]"


def _jsonb(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return f"{_lit(text)}::jsonb"


def _and(*parts: str) -> str:
    return _connect("and", parts, neutral="true", absorbing="false")


def _not(part: str) -> str:
    return {"true": "false", "false": "true"}.get(part, f"not ({part})")


def _or(*parts: str) -> str:
    return _connect("or", parts, neutral="false", absorbing="true")


def _connect(operator: str, parts: tuple[str, ...], *, neutral: str, absorbing: str) -> str:
    """`parts` joined by `operator`, constants folded: `neutral` drops out, `absorbing` wins."""
    if absorbing in parts:
        return absorbing
    kept = [p for p in parts if p != neutral]
    if not kept:
        return neutral
    return kept[0] if len(kept) == 1 else "(" + f" {operator} ".join(kept) + ")"
