-- JSON Schema validation inside PostgreSQL.
--
-- Uses the pg_jsonschema extension when the server has it. Otherwise installs functions with
-- pg_jsonschema's exact signatures, written in plpython3u over Debian's python3-jsonschema and
-- python3-fastjsonschema (see docs/adr/0001-jsonschema-in-database.md). Always installs our own
-- jsonschema_errors() (JSON paths for every error) and the $ref registry.
--
-- Run by a superuser on every migrate: everything here is idempotent.

create extension if not exists plpython3u;

-- Remote $ref targets. Nothing is ever fetched over the network: a $ref to a URI that is not
-- here is an error.
create table if not exists public.jsonschema_registry (
    uri text primary key,
    schema jsonb not null
);
comment on table public.jsonschema_registry is
    'JSON Schema documents that remote $refs may point to, by URI. Never fetched over the network.';

-- One row; bumped by every statement that changes the registry, so backends can tell when their
-- compiled validators that used the registry are stale.
create table if not exists public.jsonschema_registry_version (
    singleton boolean primary key default true check (singleton),
    version bigint not null default 0
);
comment on table public.jsonschema_registry_version is
    'Change counter of public.jsonschema_registry (one row), read by the validator cache.';
insert into public.jsonschema_registry_version (singleton, version) values (true, 0)
on conflict (singleton) do nothing;

create or replace function public.tg_jsonschema_registry__bump_version() returns trigger
language plpgsql
as $$
begin
    update public.jsonschema_registry_version set version = version + 1;
    return null;
end
$$;
comment on function public.tg_jsonschema_registry__bump_version() is
    'Statement trigger: invalidates compiled validators that resolved refs through the registry.';

drop trigger if exists jsonschema_registry__bump_version on public.jsonschema_registry;
create trigger jsonschema_registry__bump_version
    after insert or update or delete or truncate on public.jsonschema_registry
    for each statement execute function public.tg_jsonschema_registry__bump_version();

-- Validation runs as the calling role (e.g. inside a CHECK constraint during ingest): these two
-- definer helpers let it read the registry without a grant on the tables.
create or replace function public._jsonschema_registry_lookup(p_uri text) returns text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select r.schema::text from public.jsonschema_registry r
    where r.uri = p_uri or r.uri = p_uri || '#' or r.uri || '#' = p_uri
    order by r.uri = p_uri desc
    limit 1
$$;
comment on function public._jsonschema_registry_lookup(text) is
    'Private: the registered schema for a $ref URI (exact, or differing by an empty fragment).';

create or replace function public._jsonschema_registry_version() returns bigint
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select v.version from public.jsonschema_registry_version v
$$;
comment on function public._jsonschema_registry_version() is
    'Private: current change counter of public.jsonschema_registry.';

-- The shared Python implementation, installed once per backend into GD. Every public function
-- starts by fetching it from GD; this function runs only on a backend's first call.
create or replace function public._jsonschema_boot() returns void
language plpython3u
as $py$
import json
import re
from urllib.parse import urldefrag, urljoin

import sys

import fastjsonschema
from fastjsonschema.exceptions import JsonSchemaDefinitionException, JsonSchemaValueException
from operator import methodcaller

from jsonschema import exceptions as js_exceptions
from jsonschema._legacy_validators import ignore_ref_siblings
from jsonschema import validators as js_validators

GD_KEY = "stepledger.jsonschema/1"
MAX_ENTRIES = 256
MEMO_ENTRIES = 4096  # recent instance results kept per schema (see make_match)
INVALID = "22023"  # invalid_parameter_value

loads = json.loads
D2020 = js_validators.Draft202012Validator
D7 = js_validators.Draft7Validator
D6 = js_validators.Draft6Validator
D4 = js_validators.Draft4Validator
OLD = (D4, D6, D7)
DRAFTS = {
    "json-schema.org/draft/2020-12/schema": D2020,
    "json-schema.org/draft/2019-09/schema": js_validators.Draft201909Validator,
    "json-schema.org/draft-07/schema": D7,
    "json-schema.org/draft-06/schema": D6,
    "json-schema.org/draft-04/schema": D4,
}


# ---- fixes over jsonschema 4.10.3 -------------------------------------------------------------

def json_equal(a, b):
    """Equality as JSON defines it: true is not 1, 1 is 1.0, recursively."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def enum_fixed(validator, enums, instance, schema):
    # 4.10.3 compares nested values with ==, so [0] equals [false].
    if not any(json_equal(instance, each) for each in enums):
        yield js_exceptions.ValidationError(f"{instance!r} is not one of {enums!r}")


def const_fixed(validator, const, instance, schema):
    if not json_equal(instance, const):
        yield js_exceptions.ValidationError(f"{const!r} was expected")


def unique_fixed(validator, unique, instance, schema):
    if unique and validator.is_type(instance, "array"):
        for i, item in enumerate(instance):
            if any(json_equal(item, other) for other in instance[i + 1:]):
                yield js_exceptions.ValidationError(f"{instance!r} has non-unique elements")
                return


def multiple_of_fixed(validator, dB, instance, schema):
    # A quotient that overflows a float is not a multiple (4.10.3 falls back to exact fractions,
    # which calls 1e308 a multiple of 0.123456789 once jsonb has written 1e308 as an integer).
    if not validator.is_type(instance, "number"):
        return
    if isinstance(dB, float) or isinstance(instance, float):
        try:
            quotient = instance / dB
            failed = int(quotient) != quotient
        except OverflowError:
            failed = True
    else:
        failed = instance % dB
    if failed:
        yield js_exceptions.ValidationError(f"{instance!r} is not a multiple of {dB}")


def ecma_pattern(pattern):
    """ECMA-262's `$` (no m flag) matches only at the very end; Python's also matches before a
    final newline, so "st-mary\\n" would pass ^[a-z-]+$. Rewrite unescaped `$` outside character
    classes to \\Z, as the fast path does."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "$":
            c = "\\Z"
        out.append(c)
        i += 1
    return "".join(out)


PATTERNS = {}


def pattern_fixed(validator, pattern, instance, schema):
    if not validator.is_type(instance, "string"):
        return
    compiled = PATTERNS.get(pattern)
    if compiled is None:
        compiled = PATTERNS[pattern] = re.compile(ecma_pattern(pattern))
    if not compiled.search(instance):
        yield js_exceptions.ValidationError(f"{instance!r} does not match {pattern!r}")


FIXES = {"enum": enum_fixed, "const": const_fixed, "uniqueItems": unique_fixed,
         "multipleOf": multiple_of_fixed, "pattern": pattern_fixed}


def fixed_class(cls):
    old = cls in (D4, D6, D7)
    base_id_of = cls.ID_OF

    def legacy_id_of(schema):
        # Drafts 4-7 ignore every keyword beside $ref, $id included (4.10.3 still uses it).
        if isinstance(schema, dict) and "$ref" in schema:
            return ""
        return base_id_of(schema)

    return js_validators.create(
        meta_schema=cls.META_SCHEMA,
        validators={**cls.VALIDATORS,
                    **{k: v for k, v in FIXES.items() if k in cls.VALIDATORS}},
        type_checker=cls.TYPE_CHECKER,
        format_checker=cls.FORMAT_CHECKER,
        id_of=legacy_id_of if old else base_id_of,
        applicable_validators=ignore_ref_siblings if old else methodcaller("items"),
    )


FIXED = {cls: fixed_class(cls) for cls in set(DRAFTS.values())}

# JSON numbers have no digit limit; Python 3.11 refuses to parse integers over 4,300 digits.
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)

version_plan = plpy.prepare("select public._jsonschema_registry_version() as v")
lookup_plan = plpy.prepare("select public._jsonschema_registry_lookup($1) as s", ["text"])


def registry_version():
    return version_plan.execute()[0]["v"]


class InvalidSchema(Exception):
    """The schema itself is unusable (not the instance)."""


def draft_of(schema):
    if isinstance(schema, dict):
        uri = schema.get("$schema")
        if isinstance(uri, str):
            key = uri.split("://", 1)[-1].rstrip("#")
            # Unknown meta-schemas (custom ones) validate as 2020-12, as jsonschema does.
            return DRAFTS.get(key, D2020)
    return D2020


# ---- fast path eligibility -------------------------------------------------------------------
# fastjsonschema implements draft 7. A schema goes through it only when every keyword in it is
# one we have checked means the same there as in the schema's own draft, and where
# fastjsonschema's Python-equality shortcuts cannot differ from JSON semantics.

class NotFast(Exception):
    pass


PLAIN = frozenset((
    "type", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "maxItems", "minItems", "maxProperties",
    "minProperties", "required",
))
# Annotations, dropped from the compiled copy: format is not asserted (as in the general path),
# default must not be inserted into the instance.
ANNOTATIONS = frozenset((
    "title", "description", "default", "examples", "$comment", "readOnly", "writeOnly",
    "deprecated", "format",
))
ONE = frozenset(("additionalProperties", "propertyNames", "if", "then", "else", "not", "contains"))
MANY = frozenset(("allOf", "anyOf", "oneOf"))
NAMED = frozenset(("properties", "patternProperties", "definitions", "$defs"))


def is_plain_value(value):
    # Python's == says 1 == 1.0 == True; only strings and null compare like JSON.
    return value is None or isinstance(value, str)


def fast_copy(node, draft7, root):
    if isinstance(node, bool):
        return node
    if not isinstance(node, dict):
        raise NotFast
    out = {}
    for key, value in node.items():
        if key in PLAIN:
            out[key] = value
        elif key in ANNOTATIONS:
            continue
        elif key in ONE:
            out[key] = fast_copy(value, draft7, False)
            if key == "not" and out[key] == {}:
                raise NotFast  # fastjsonschema tests the instance's truthiness for not: {}
        elif key in NAMED:
            if not isinstance(value, dict):
                raise NotFast
            out[key] = {k: fast_copy(v, draft7, False) for k, v in value.items()}
        elif key in MANY:
            if not isinstance(value, list):
                raise NotFast
            out[key] = [fast_copy(v, draft7, False) for v in value]
        elif key == "items":
            if isinstance(value, list):
                if not draft7:
                    raise NotFast
                out[key] = [fast_copy(v, draft7, False) for v in value]
            else:
                out[key] = fast_copy(value, draft7, False)
        elif key == "additionalItems" and draft7:
            out[key] = fast_copy(value, draft7, False)
        elif key == "dependencies" and draft7:
            if not isinstance(value, dict):
                raise NotFast
            out[key] = {
                k: v if isinstance(v, list) else fast_copy(v, draft7, False)
                for k, v in value.items()
            }
        elif key in ("enum", "const"):
            values = value if key == "enum" else [value]
            if not isinstance(values, list) or not all(is_plain_value(v) for v in values):
                raise NotFast
            out[key] = value
        elif key == "multipleOf":
            # Float quotients overflow differently there; integer divisors are exact in both.
            if not isinstance(value, int) or isinstance(value, bool):
                raise NotFast
            out[key] = value
        elif key == "uniqueItems":
            if value is not False:  # fastjsonschema treats true and "True" as equal items
                raise NotFast
        elif key == "$ref":
            if not isinstance(value, str) or not (value == "#" or value.startswith("#/")):
                raise NotFast
            # Draft 7 ignores keywords beside $ref, 2020-12 applies them: only a lone $ref
            # means the same in both.
            if not draft7 and any(k != "$ref" and k not in ANNOTATIONS for k in node):
                raise NotFast
            out[key] = value
        elif key == "$schema" and root:
            continue
        elif key == "$id" and root and isinstance(value, str):
            continue  # only local refs reach the fast path, so the base URI changes nothing
        else:
            raise NotFast
    return out


def fast_form(schema, cls):
    """The schema as fastjsonschema should compile it, or None for the general path."""
    if cls is not D7 and cls is not D2020:
        return None
    try:
        return fast_copy(schema, cls is D7, True)
    except NotFast:
        return None


# Keywords whose values are data, not schemas: an "$id" inside them identifies nothing.
DATA_KEYWORDS = frozenset(("enum", "const", "default", "examples"))


def embedded_resources(node, base, old_draft):
    """(absolute URI, subschema) for every subschema with its own $id, resolved against the
    nearest enclosing base URI."""
    if isinstance(node, list):
        for item in node:
            yield from embedded_resources(item, base, old_draft)
        return
    if not isinstance(node, dict):
        return
    ident = node.get("$id")
    # In drafts 4-7, $ref makes siblings (including $id) ignored, and "#name" is an anchor.
    if isinstance(ident, str) and not ident.startswith("#") and not (old_draft and "$ref" in node):
        base = urldefrag(urljoin(base, ident))[0]
        if base:
            yield base, node
    for key, value in node.items():
        if key not in DATA_KEYWORDS:
            yield from embedded_resources(value, base, old_draft)


# ---- registry-backed $ref resolution ----------------------------------------------------------

class Resolver(js_validators.RefResolver):
    """Resolves non-local $refs from public.jsonschema_registry, never from the network."""

    def __init__(self, *args, compiled, **kwargs):
        super().__init__(*args, **kwargs)
        self.compiled = compiled

    def resolve_remote(self, uri):
        self.compiled.uses_registry = True
        row = lookup_plan.execute([uri])[0]["s"]
        if row is None:
            raise LookupError(
                f"unknown remote $ref {uri!r}: it is not in public.jsonschema_registry "
                "(remote schemas are never fetched over the network)"
            )
        document = loads(row)
        # Its own $id (and nested ones) may differ from the URI it is registered under.
        base = urldefrag(uri)[0]
        for inner, resource in embedded_resources(document, base, draft_of(document) in OLD):
            self.store.setdefault(inner, resource)
        if self.cache_remote:
            self.store[uri] = document
        return document


# ---- compiled schemas ------------------------------------------------------------------------

class Compiled:
    __slots__ = ("schema", "validator", "fast", "version", "uses_registry")

    def __init__(self, text):
        try:
            schema = loads(text)
        except ValueError as exc:
            raise InvalidSchema(f"schema is not JSON: {exc}") from None
        cls = draft_of(schema)
        try:
            cls.check_schema(schema)
        except js_exceptions.SchemaError as exc:
            raise InvalidSchema(
                f"invalid JSON Schema at {pointer(exc.absolute_path)!r}: {exc.message}"
            ) from None
        self.schema = schema
        self.uses_registry = False
        self.version = registry_version()
        fixed = FIXED[cls]
        resolver = Resolver.from_schema(schema, id_of=fixed.ID_OF, compiled=self)
        # jsonschema 4.10 finds an embedded $id only relative to its immediate parent; register
        # every embedded resource under its absolute URI so refs to it resolve locally.
        root = fixed.ID_OF(schema) if isinstance(schema, dict) else None
        old_draft = cls in OLD
        for uri, resource in embedded_resources(schema, root or "", old_draft):
            resolver.store.setdefault(uri, resource)
        self.validator = fixed(schema, resolver=resolver)
        self.fast = None
        form = fast_form(schema, cls)
        if form is not None:
            try:
                self.fast = fastjsonschema.compile(form, use_default=False)
            except Exception:  # noqa: BLE001
                # fastjsonschema cannot compile some valid schemas (refs into dropped
                # annotations, NUL in patterns, some boolean subschemas); the general path,
                # which already accepted the schema, is authoritative.
                self.fast = None

    def stale(self):
        return self.uses_registry and registry_version() != self.version

    def is_valid(self, instance):
        try:
            return self.validator.is_valid(instance)
        except js_exceptions.RefResolutionError as exc:
            raise InvalidSchema(f"cannot resolve $ref: {exc}") from None
        except re.error as exc:
            raise InvalidSchema(f"invalid regular expression in schema: {exc}") from None

    def iter_errors(self, instance):
        try:
            return list(self.validator.iter_errors(instance))
        except js_exceptions.RefResolutionError as exc:
            raise InvalidSchema(f"cannot resolve $ref: {exc}") from None
        except re.error as exc:
            raise InvalidSchema(f"invalid regular expression in schema: {exc}") from None


def make_match(compiled, cache, key):
    """The per-schema hot path: instance text -> bool.

    Results are memoised per schema for the most recent instances: ingest classifies an event and
    then stores it in a table whose CHECK constraint validates the same text again; the second
    call is a dict lookup. Validation is a pure function of (schema, instance), so this is safe.
    """
    fast = compiled.fast
    if fast is not None:
        def match(text, fast=fast, loads=loads, invalid=JsonSchemaValueException, memo={}):
            known = memo.get(text)
            if known is not None:
                return known
            try:
                fast(loads(text))
                valid = True
            except invalid:
                valid = False
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            memo[text] = valid
            return valid
    else:
        def match(text, compiled=compiled, loads=loads, memo={}):
            if compiled.uses_registry and compiled.stale():
                return cache.refresh(key)(text)
            known = memo.get(text)
            if known is not None:
                return known
            valid = compiled.is_valid(loads(text))
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            memo[text] = valid
            return valid
    match.compiled = compiled
    return match


class Cache(dict):
    """schema text -> match function; compiles on a miss, bounded (oldest entry evicted)."""

    def __missing__(self, key):
        return self.refresh(key)

    def refresh(self, key):
        self.pop(key, None)
        if len(self) >= MAX_ENTRIES:
            del self[next(iter(self))]
        match = make_match(Compiled(key), self, key)
        self[key] = match
        return match

    def compiled(self, key):
        compiled = self[key].compiled
        if compiled.stale():
            compiled = self.refresh(key).compiled
        return compiled


# ---- error reports ---------------------------------------------------------------------------

def pointer(parts):
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def show(value, limit=80):
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
              (list, "array"), (dict, "object"), (type(None), "null"))


def type_name(value):
    for py, name in JSON_TYPES:
        if isinstance(value, py):
            return name
    return type(value).__name__


def describe(error):
    """One jsonschema error -> our report entries (several for additionalProperties)."""
    path = list(error.absolute_path)
    schema_path = pointer(error.absolute_schema_path)
    keyword = error.validator
    value = error.validator_value
    inst = error.instance
    if keyword == "required" and isinstance(inst, dict):
        for name in value:
            if name not in inst and error.message == f"{name!r} is a required property":
                return [entry(path + [name], error.message, keyword, schema_path)]
    if keyword == "additionalProperties" and value is False and isinstance(inst, dict):
        from jsonschema._utils import find_additional_properties

        allowed = ", ".join(sorted(error.schema.get("properties", {}))) or "none"
        return [
            entry(path + [extra], f"property {extra!r} is not allowed here "
                  f"(additional properties are forbidden; allowed: {allowed})",
                  keyword, schema_path)
            for extra in sorted(find_additional_properties(inst, error.schema))
        ]
    if keyword == "type":
        wanted = " or ".join(value) if isinstance(value, list) else value
        message = f"expected {wanted}, got {type_name(inst)} {show(inst)}"
    elif keyword == "enum":
        message = f"{show(inst)} is not one of the allowed values: " + ", ".join(
            show(v, 40) for v in value)
    elif keyword == "const":
        message = f"{show(inst)} is not the required value {show(value)}"
    elif keyword == "pattern":
        message = f"{show(inst)} does not match the pattern {value!r}"
    elif keyword == "minLength":
        message = f"{show(inst)} is too short: {len(inst)} characters, at least {value} required"
    elif keyword == "maxLength":
        message = f"{show(inst)} is too long: {len(inst)} characters, at most {value} allowed"
    elif keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        rule = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">",
                "exclusiveMaximum": "<"}[keyword]
        message = f"{show(inst)} is out of range: must be {rule} {show(value)}"
    elif keyword is None:  # the false schema
        message = f"{show(inst)} is not allowed here (the schema is false)"
    else:
        message = error.message
    return [entry(path, message, keyword, schema_path)]


def entry(path, message, keyword, schema_path):
    return {"path": pointer(path), "message": message, "keyword": keyword,
            "schema_path": schema_path}


# ---- entry points used by the SQL functions --------------------------------------------------

def fail(exc):
    plpy.error(str(exc), sqlstate=INVALID)


class Api:
    def __init__(self):
        self.cache = Cache()

    def matches(self, schema, instance):
        try:
            return self.cache[schema](instance)
        except InvalidSchema as exc:
            fail(exc)

    def is_valid_schema(self, schema):
        try:
            self.cache[schema]
        except InvalidSchema as exc:
            plpy.notice(f"Invalid JSON schema: {exc}")
            return False
        return True

    def validation_errors(self, schema, instance):
        try:
            compiled = self.cache.compiled(schema)
            return [e.message for e in compiled.iter_errors(loads(instance))]
        except InvalidSchema as exc:
            return [str(exc)]

    def errors(self, schema, instance):
        try:
            compiled = self.cache.compiled(schema)
            found = compiled.iter_errors(loads(instance))
        except InvalidSchema as exc:
            fail(exc)
        report = [item for error in found for item in describe(error)]
        report.sort(key=lambda e: (e["path"], e["schema_path"], e["message"]))
        return json.dumps(report, ensure_ascii=False)

    def path_of(self, schema):
        try:
            return "fast" if self.cache[schema].compiled.fast is not None else "general"
        except InvalidSchema as exc:
            fail(exc)


GD[GD_KEY] = Api()
$py$;
comment on function public._jsonschema_boot() is
    'Private: installs the plpython JSON Schema implementation into this backend (GD).';

-- Our extra: every error with its JSON Pointer, in both cases (pg_jsonschema has no paths).
create or replace function public.jsonschema_errors(schema json, instance jsonb) returns jsonb
language plpython3u immutable strict parallel safe
as $py$
api = GD.get("stepledger.jsonschema/1")
if api is None:
    plpy.execute("select public._jsonschema_boot()")
    api = GD["stepledger.jsonschema/1"]
return api.errors(schema, instance)
$py$;
comment on function public.jsonschema_errors(json, jsonb) is
    'Validation errors of instance against schema as a JSON array of {path, message, keyword, '
    'schema_path}, sorted by path; path is a JSON Pointer ("" = root). Empty array when valid. '
    'Raises SQLSTATE 22023 for an invalid schema.';

-- Which implementation a schema takes (tests and diagnostics).
create or replace function public._jsonschema_path(schema json) returns text
language plpython3u immutable strict parallel safe
as $py$
api = GD.get("stepledger.jsonschema/1")
if api is None:
    plpy.execute("select public._jsonschema_boot()")
    api = GD["stepledger.jsonschema/1"]
return api.path_of(schema)
$py$;
comment on function public._jsonschema_path(json) is
    'Private: "fast" (fastjsonschema) or "general" (jsonschema) for the plpython implementation.';

do $do$
begin
    if exists (select from pg_available_extensions where name = 'pg_jsonschema') then
        if not exists (select from pg_extension where extname = 'pg_jsonschema') then
            -- Replace a plpython fallback installed before the extension became available.
            drop function if exists public.json_matches_schema(json, json);
            drop function if exists public.jsonb_matches_schema(json, jsonb);
            drop function if exists public.jsonschema_is_valid(json);
            drop function if exists public.jsonschema_validation_errors(json, json);
        end if;
        create extension if not exists pg_jsonschema;
        return;
    end if;

    create or replace function public.json_matches_schema(schema json, instance json)
    returns boolean
    language plpython3u immutable strict parallel safe
    as $py$
api = GD.get("stepledger.jsonschema/1")
if api is None:
    plpy.execute("select public._jsonschema_boot()")
    api = GD["stepledger.jsonschema/1"]
return api.matches(schema, instance)
$py$;
    comment on function public.json_matches_schema(json, json) is
        'True when instance is valid against the JSON Schema (pg_jsonschema-compatible; '
        'raises SQLSTATE 22023 for an invalid schema).';

    create or replace function public.jsonb_matches_schema(schema json, instance jsonb)
    returns boolean
    language plpython3u immutable strict parallel safe
    as $py$
api = GD.get("stepledger.jsonschema/1")
if api is None:
    plpy.execute("select public._jsonschema_boot()")
    api = GD["stepledger.jsonschema/1"]
return api.matches(schema, instance)
$py$;
    comment on function public.jsonb_matches_schema(json, jsonb) is
        'True when instance is valid against the JSON Schema (pg_jsonschema-compatible; '
        'raises SQLSTATE 22023 for an invalid schema).';

    create or replace function public.jsonschema_is_valid(schema json) returns boolean
    language plpython3u immutable strict parallel safe
    as $py$
api = GD.get("stepledger.jsonschema/1")
if api is None:
    plpy.execute("select public._jsonschema_boot()")
    api = GD["stepledger.jsonschema/1"]
return api.is_valid_schema(schema)
$py$;
    comment on function public.jsonschema_is_valid(json) is
        'True when the schema is a valid JSON Schema (checked against its meta-schema); '
        'otherwise false with a NOTICE saying why (pg_jsonschema-compatible).';

    create or replace function public.jsonschema_validation_errors(schema json, instance json)
    returns text[]
    language plpython3u immutable strict parallel safe
    as $py$
api = GD.get("stepledger.jsonschema/1")
if api is None:
    plpy.execute("select public._jsonschema_boot()")
    api = GD["stepledger.jsonschema/1"]
return api.validation_errors(schema, instance)
$py$;
    comment on function public.jsonschema_validation_errors(json, json) is
        'Messages of every validation error of instance against schema, empty when valid; for '
        'an invalid schema, one message saying why (pg_jsonschema-compatible).';
end
$do$;
