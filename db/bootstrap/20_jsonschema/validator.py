"""The JSON Schema validator's Python: the body of public._jsonschema_boot() (10_functions.sql),
which the migration runner puts in place of that function's `# include:` line. It runs inside
PostgreSQL (plpython3u), where `plpy` and `GD` are given; it installs the implementation into GD
once per backend, and every SQL entry point fetches it from there."""
# ruff: noqa: F821
# (plpy and GD are the globals plpython3u gives a function body.)

import json
import math
import re
import signal
import sys
import time
from contextlib import contextmanager
from operator import methodcaller
from urllib.parse import urldefrag, urljoin

import fastjsonschema
import regex
from fastjsonschema.exceptions import JsonSchemaValueException
from jsonschema import exceptions as js_exceptions
from jsonschema import validators as js_validators
from jsonschema._legacy_validators import ignore_ref_siblings

GD_KEY = "stepledger.jsonschema/1"
MAX_ENTRIES = 256
MEMO_ENTRIES = 4096  # recent instance results kept per schema (see make_match)
INVALID = "22023"  # invalid_parameter_value
# One call (compiling a schema it has not seen, then validating) may take this long; past it the
# instance counts as invalid (docs/adr/0004-bounded-validation.md). PostgreSQL cannot interrupt
# Python code, so a CPU-time timer (SIGPROF) stops the Python code every TICK_SECONDS of CPU to
# check the deadline and let PostgreSQL process a cancel or statement_timeout.
TIME_LIMIT_SECONDS = 1.0
TICK_SECONDS = 0.005
TIMEOUTS_KEPT = 1024  # instance texts per schema remembered as having hit the limit

loads = json.loads
# Keywords whose values are data, not schemas: an "$id" or "pattern" inside them is no keyword.
DATA_KEYWORDS = frozenset(("enum", "const", "default", "examples"))
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


# ---- the time limit and cancellation ---------------------------------------------------------

class ValidationTimeout(Exception):
    """One call ran past TIME_LIMIT_SECONDS."""


# CHECK_FOR_INTERRUPTS from Python: pg_sleep(0) checks for interrupts and returns at once, so a
# pending cancel, statement_timeout or terminate is raised (as plpy.SPIError, or the backend exits).
interrupts_plan = plpy.prepare("select pg_catalog.pg_sleep(0)")


class Bound:
    """Bounds the Python code of one call in time and keeps it cancellable.

    The regex engine (sre) checks Python's pending signals every few thousand steps and the
    interpreter between bytecodes, so the handler runs inside a backtracking match too. Any
    exception it raises may be swallowed by library code (`except Exception`): `run` re-raises
    what was recorded when the guarded code returns or fails in any other way."""

    def __init__(self):
        self.deadline = None
        self.timed_out = False
        self.interrupt = None
        signal.signal(signal.SIGPROF, self.on_tick)
        signal.siginterrupt(signal.SIGPROF, False)  # restart system calls (SA_RESTART)

    def on_tick(self, signum, frame):
        if self.deadline is None:
            return  # a tick delivered after the call ended
        if self.interrupt is not None:
            raise self.interrupt
        try:
            interrupts_plan.execute()
        except plpy.SPIError as exc:
            self.interrupt = exc
            raise
        if time.monotonic() > self.deadline:
            self.timed_out = True
            raise ValidationTimeout()

    def check(self):
        """Re-raise what a tick recorded, if library code swallowed it."""
        if self.interrupt is not None:
            raise self.interrupt
        if self.timed_out:
            raise ValidationTimeout()

    @contextmanager
    def run(self):
        if self.deadline is not None:  # nested (a registry lookup that validates): one bound
            yield
            return
        self.deadline = time.monotonic() + TIME_LIMIT_SECONDS
        self.timed_out = False
        self.interrupt = None
        signal.setitimer(signal.ITIMER_PROF, TICK_SECONDS, TICK_SECONDS)
        try:
            yield
            self.check()
        except BaseException:
            self.check()
            raise
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
            self.deadline = None


BOUND = Bound()


def passes_through(exc):
    """Exceptions that must never be turned into a validation result."""
    return isinstance(exc, (ValidationTimeout, plpy.SPIError)) or BOUND.timed_out \
        or BOUND.interrupt is not None


# ---- fixes over jsonschema 4.10.3 -------------------------------------------------------------

def json_equal(a, b):
    """Equality as JSON defines it: true is not 1, 1 is 1.0, recursively."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
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
REGEX_ERRORS = (re.error, regex.error)


def compile_pattern(pattern):
    """Every pattern of both paths, compiled once: the `regex` module (re-compatible syntax,
    plus ECMA-262's \\p{...} property escapes; it resists most nested-quantifier blow-ups and,
    like re, lets the Bound's signal handler run during a match), with ECMA-262's `$`."""
    compiled = PATTERNS.get(pattern)
    if compiled is None:
        compiled = PATTERNS[pattern] = regex.compile(ecma_pattern(pattern))
    return compiled


def pattern_fixed(validator, pattern, instance, schema):
    if not validator.is_type(instance, "string"):
        return
    if not compile_pattern(pattern).search(instance):
        yield js_exceptions.ValidationError(f"{instance!r} does not match {pattern!r}")


def pattern_properties_fixed(validator, pattern_properties, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        compiled = compile_pattern(pattern)
        for key, value in instance.items():
            if compiled.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def additional_properties_of(instance, schema):
    properties = schema.get("properties", {})
    patterns = [compile_pattern(p) for p in schema.get("patternProperties", {})]
    return [key for key in instance
            if key not in properties and not any(p.search(key) for p in patterns)]


def additional_properties_fixed(validator, additional, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    extras = additional_properties_of(instance, schema)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        yield js_exceptions.ValidationError(
            "Additional properties are not allowed "
            f"({', '.join(repr(each) for each in sorted(extras))} unexpected)")


def schema_patterns(node):
    """Every regular expression a schema holds (pattern values, patternProperties keys)."""
    if isinstance(node, list):
        for item in node:
            yield from schema_patterns(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            elif key == "patternProperties" and isinstance(value, dict):
                yield from value
            if key not in DATA_KEYWORDS:
                yield from schema_patterns(value)


def recursive_ref(validator, recursive_ref, instance, schema):
    """Draft 2019-09 $recursiveRef (4.10.3 resolves it but never validates against it): "#"
    against the current base URI; if that schema has $recursiveAnchor: true, the outermost of
    the enclosing resources in the dynamic scope that also have it, walking outwards."""
    resolver = validator.resolver
    url, target = resolve_recursive(resolver, recursive_ref)
    resolver.push_scope(url)
    try:
        yield from validator.descend(instance, target)
    finally:
        resolver.pop_scope()


def evaluated_indexes_2019(validator, instance, schema, top=False):
    """Indexes of `instance` that `schema` evaluates successfully, by draft 2019-09's rules:
    array-form items and additionalItems (4.10.3 applies 2020-12's prefixItems here)."""
    if not isinstance(schema, dict):
        return set()
    everything = set(range(len(instance)))
    if "unevaluatedItems" in schema and not top:
        return everything  # a passing subschema's own unevaluatedItems took the rest
    items = schema.get("items")
    if "items" in schema:
        if not isinstance(items, list) or "additionalItems" in schema:
            return everything
        found = set(range(min(len(items), len(instance))))
    else:
        found = set()
    for subschema in applied_subschemas(validator, instance, schema):
        found |= evaluated_indexes_2019(validator, instance, subschema)
    return found


def applied_subschemas(validator, instance, schema):
    """The subschemas in place of `schema` whose evaluations count for `instance`: the targets of
    $ref and $recursiveRef (yielded while their scope is pushed), the branch of if/then/else taken,
    and every allOf, anyOf and oneOf subschema that passes."""
    resolver = validator.resolver
    for keyword in ("$ref", "$recursiveRef"):
        if keyword not in schema or not isinstance(schema[keyword], str):
            continue
        if keyword == "$ref":
            url, target = resolver.resolve(schema["$ref"])
        else:
            url, target = resolve_recursive(resolver, schema["$recursiveRef"])
        resolver.push_scope(url)
        try:
            yield target
        finally:
            resolver.pop_scope()
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            yield schema["if"]
            yield schema.get("then", True)
        else:
            yield schema.get("else", True)
    for keyword in ("allOf", "anyOf", "oneOf"):
        for subschema in schema.get(keyword, ()):
            if validator.evolve(schema=subschema).is_valid(instance):
                yield subschema


def resolve_recursive(resolver, recursive_ref):
    url, target = resolver.resolve(recursive_ref)
    if isinstance(target, dict) and target.get("$recursiveAnchor") is True:
        for scope in reversed(resolver._scopes_stack[:-1]):
            outer = resolver.resolve_from_url(scope)
            if not (isinstance(outer, dict) and outer.get("$recursiveAnchor") is True):
                break
            url, target = scope, outer
    return url, target


def evaluated_keys(validator, instance, schema, top=False):
    """Properties of `instance` that `schema` evaluates (2019-09 and 2020-12): 4.10.3 treats a
    schema-valued additionalProperties as a properties map and misses $recursiveRef."""
    if not isinstance(schema, dict):
        return set()
    if "unevaluatedProperties" in schema and not top:
        return set(instance)  # a passing subschema's own unevaluatedProperties took the rest
    if "additionalProperties" in schema:
        return set(instance)  # with properties and patternProperties it covers every key
    found = {key for key in schema.get("properties", ()) if key in instance}
    patterns = [compile_pattern(p) for p in schema.get("patternProperties", ())]
    found |= {key for key in instance if any(p.search(key) for p in patterns)}
    for key, subschema in schema.get("dependentSchemas", {}).items():
        if key in instance:
            found |= evaluated_keys(validator, instance, subschema)
    for subschema in applied_subschemas(validator, instance, schema):
        found |= evaluated_keys(validator, instance, subschema)
    return found


def unevaluated_properties_fixed(validator, unevaluated, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    evaluated = evaluated_keys(validator, instance, schema, top=True)
    extras = [key for key in instance if key not in evaluated]
    if unevaluated is False:
        if extras:
            yield js_exceptions.ValidationError(
                "Unevaluated properties are not allowed "
                f"({', '.join(repr(each) for each in sorted(extras))} unexpected)")
        return
    for key in extras:
        yield from validator.descend(instance[key], unevaluated, path=key)


def unevaluated_items_2019(validator, unevaluated, instance, schema):
    if not validator.is_type(instance, "array"):
        return
    evaluated = evaluated_indexes_2019(validator, instance, schema, top=True)
    for index, item in enumerate(instance):
        if index not in evaluated:
            yield from validator.descend(item, unevaluated, path=index)


FIXES = {"enum": enum_fixed, "const": const_fixed, "uniqueItems": unique_fixed,
         "multipleOf": multiple_of_fixed, "pattern": pattern_fixed,
         "patternProperties": pattern_properties_fixed,
         "additionalProperties": additional_properties_fixed}
FIXES_2019 = {"$recursiveRef": recursive_ref, "unevaluatedItems": unevaluated_items_2019}
FIXES_2019_2020 = {"unevaluatedProperties": unevaluated_properties_fixed}


def guarded(keyword, check):
    """A keyword's check that cannot abort the statement: a library error inside it (4.10.3 has
    TypeErrors on some valid schemas) makes that subschema fail, with the reason, instead of
    raising out of the SQL function. Timeouts and PostgreSQL errors pass through."""
    def run(validator, value, instance, schema):
        try:
            found = check(validator, value, instance, schema)
            if found:
                yield from found
        except Exception as exc:
            if passes_through(exc) or isinstance(exc, REGEX_ERRORS):
                raise
            if isinstance(exc, js_exceptions.RefResolutionError):
                message = f"cannot resolve {keyword} here: {exc}"
            elif isinstance(exc, RecursionError):
                message = f"{keyword} recurses without end here"
            else:
                message = (f"{keyword} could not be evaluated here "
                           f"({type(exc).__name__}: {exc}); the instance is treated as invalid")
            yield js_exceptions.ValidationError(message)
    return run


def fixed_class(cls):
    old = cls in (D4, D6, D7)
    base_id_of = cls.ID_OF

    def legacy_id_of(schema):
        # Drafts 4-7 ignore every keyword beside $ref, $id included (4.10.3 still uses it).
        if isinstance(schema, dict) and "$ref" in schema:
            return ""
        return base_id_of(schema)

    checks = {**cls.VALIDATORS, **{k: v for k, v in FIXES.items() if k in cls.VALIDATORS}}
    if cls is js_validators.Draft201909Validator:
        checks.update(FIXES_2019)
    if cls not in OLD:
        checks.update(FIXES_2019_2020)
    return js_validators.create(
        meta_schema=cls.META_SCHEMA,
        validators={keyword: guarded(keyword, check) for keyword, check in checks.items()},
        type_checker=cls.TYPE_CHECKER,
        format_checker=cls.FORMAT_CHECKER,
        id_of=legacy_id_of if old else base_id_of,
        applicable_validators=ignore_ref_siblings if old else methodcaller("items"),
    )


FIXED = {cls: fixed_class(cls) for cls in set(DRAFTS.values())}


def evolve_fixed(self, **changes):
    """4.10.3's evolve picks the library's own class for a subschema that declares $schema (a
    registry document, the root reached again through "$ref": "#"), which would bypass every fix
    here: pick our class of that draft instead (of the current one for an unknown $schema)."""
    schema = changes.setdefault("schema", self.schema)
    cls = type(self)
    if isinstance(schema, dict) and isinstance(schema.get("$schema"), str):
        declared = DRAFTS.get(schema["$schema"].split("://", 1)[-1].rstrip("#"))
        cls = FIXED.get(declared, cls)
    changes.setdefault("resolver", self.resolver)
    changes.setdefault("format_checker", self.format_checker)
    return cls(**changes)


for fixed in FIXED.values():
    fixed.evolve = evolve_fixed

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
            if isinstance(value, float) and not math.isfinite(value):
                raise NotFast  # 1e400 reads as inf, which fastjsonschema's code cannot spell
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


# Two places where fastjsonschema 2.16.3's generated code differs from the general path, patched
# in its source: it applies minimum, maximum, exclusive* and multipleOf to booleans (True is 1
# in Python; JSON Schema applies them to numbers only), and divides in floating point for
# multipleOf (wrong for integers above 2**53; multiple_of_fixed is exact for two integers).
NUMBER_GUARD = re.compile(r"^(\s*)if isinstance\((\w+), \(int, float\)\):$", re.M)
MULTIPLE_OF = re.compile(
    r"^(\s*)quotient = (\w+) / (\w+)\n\s*if int\(quotient\) != quotient:$", re.M)


def compile_fast(form):
    """fastjsonschema.compile, with the two differences above removed."""
    resolver, generator = fastjsonschema._factory(form, {}, {}, False)
    code = NUMBER_GUARD.sub(
        r"\1if isinstance(\2, (int, float)) and not isinstance(\2, bool):", generator.func_code)
    code = MULTIPLE_OF.sub(
        r"\1quotient = None if isinstance(\2, int) else \2 / \3\n"
        r"\1if (\2 % \3 != 0) if quotient is None else (int(quotient) != quotient):", code)
    state = generator.global_state
    exec(code, state)
    return state[resolver.get_scope_name()]


def fast_form(schema, cls):
    """The schema as fastjsonschema should compile it, or None for the general path."""
    if cls is not D7 and cls is not D2020:
        return None
    try:
        return fast_copy(schema, cls is D7, True)
    except NotFast:
        return None




def embedded_resources(node, base, cls):
    """(absolute URI, subschema) for every subschema with its own $id (draft 4: id), resolved
    against the nearest enclosing base URI."""
    if isinstance(node, list):
        for item in node:
            yield from embedded_resources(item, base, cls)
        return
    if not isinstance(node, dict):
        return
    old_draft = cls in OLD
    ident = node.get("id" if cls is D4 else "$id")
    # In drafts 4-7, $ref makes siblings (including $id) ignored, and "#name" is an anchor.
    if isinstance(ident, str) and not ident.startswith("#") and not (old_draft and "$ref" in node):
        base = urldefrag(urljoin(base, ident))[0]
        if base:
            yield base, node
    for key, value in node.items():
        if key not in DATA_KEYWORDS:
            yield from embedded_resources(value, base, cls)


# ---- registry-backed $ref resolution ----------------------------------------------------------

class Resolver(js_validators.RefResolver):
    """Resolves non-local $refs from public.jsonschema_registry, never from the network."""

    def __init__(self, *args, compiled, **kwargs):
        super().__init__(*args, **kwargs)
        self.compiled = compiled

    def resolve(self, ref):
        # 4.10.3 strips trailing slashes from the whole URL, which drops empty JSON Pointer tokens
        # ("#/$defs//$defs/" would resolve to "#/$defs//$defs"); strip only a fragment-less URL.
        url = self._urljoin_cache(self.resolution_scope, ref)
        if "#" not in url:
            url = url.rstrip("/")
        match = self._find_in_subschemas(url)
        if match is not None:
            return match
        return url, self._remote_cache(url)

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
        for inner, resource in embedded_resources(document, base, draft_of(document)):
            self.store.setdefault(inner, resource)
        if self.cache_remote:
            self.store[uri] = document
        return document


# ---- compiled schemas ------------------------------------------------------------------------

class Compiled:
    __slots__ = ("fast", "schema", "uses_registry", "validator", "version")

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
        for pattern in schema_patterns(schema):
            try:
                compile_pattern(pattern)
            except REGEX_ERRORS as exc:
                raise InvalidSchema(
                    f"invalid regular expression in schema: {pattern!r}: {exc}") from None
        self.schema = schema
        self.uses_registry = False
        self.version = registry_version()
        fixed = FIXED[cls]
        resolver = Resolver.from_schema(schema, id_of=fixed.ID_OF, compiled=self)
        # jsonschema 4.10 finds an embedded $id only relative to its immediate parent; register
        # every embedded resource under its absolute URI so refs to it resolve locally.
        root = fixed.ID_OF(schema) if isinstance(schema, dict) else None
        for uri, resource in embedded_resources(schema, root or "", cls):
            resolver.store.setdefault(uri, resource)
        self.validator = fixed(schema, resolver=resolver)
        self.fast = None
        form = fast_form(schema, cls)
        if form is not None:
            try:
                self.fast = compile_fast(form)
            except Exception:
                # fastjsonschema cannot compile some valid schemas (refs into dropped
                # annotations, NUL in patterns, some boolean subschemas); the general path,
                # which already accepted the schema, is authoritative.
                self.fast = None
        if self.fast is not None:
            # Same regex engine and `$` as the general path (fastjsonschema compiles with re and
            # rewrites `$` even inside [...], and not at all in patternProperties).
            patterns = self.fast.__globals__.get("REGEX_PATTERNS")
            for pattern in patterns or ():
                patterns[pattern] = compile_pattern(pattern)

    def stale(self):
        return self.uses_registry and registry_version() != self.version

    def is_valid(self, instance):
        return not self.iter_errors(instance, first_only=True)

    def iter_errors(self, instance, found=None, first_only=False):
        """The errors of instance, appended to `found` as they come (a timeout keeps them).
        Keyword checks cannot raise (`guarded`); what fails outside them is reported at the root.
        """
        found = [] if found is None else found
        try:
            for error in self.validator.iter_errors(instance):
                found.append(error)
                if first_only:
                    break
        except Exception as exc:
            if passes_through(exc):
                raise
            if isinstance(exc, REGEX_ERRORS):
                raise InvalidSchema(f"invalid regular expression in schema: {exc}") from None
            found.append(js_exceptions.ValidationError(
                f"the schema could not be evaluated ({type(exc).__name__}: {exc}); the instance "
                "is treated as invalid"))
        return found


def make_match(compiled, cache, key):
    """The per-schema hot path: instance text -> bool.

    Results are memoised per schema for the most recent instances: ingest classifies an event and
    then stores it in a table whose CHECK constraint validates the same text again; the second
    call is a dict lookup. Validation is a pure function of (schema, instance), so this is safe.
    """
    fast = compiled.fast
    if fast is not None:
        def match(text, fast=fast, loads=loads, invalid=JsonSchemaValueException, memo={}):  # noqa: B006 (memo per closure)
            known = memo.get(text)
            if known is not None:
                return known
            instance = loads(text)
            try:
                fast(instance)
                valid = True
            except invalid:
                valid = False
            except Exception as exc:
                if passes_through(exc):
                    raise
                valid = compiled.is_valid(instance)  # the general path is the reference
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            memo[text] = valid
            return valid
    else:
        def match(text, compiled=compiled, loads=loads, memo={}):  # noqa: B006 (memo per closure)
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
                return [entry([*path, name], error.message, keyword, schema_path)]
    if keyword == "additionalProperties" and value is False and isinstance(inst, dict):
        allowed = ", ".join(sorted(error.schema.get("properties", {}))) or "none"
        return [
            entry([*path, extra], f"property {extra!r} is not allowed here "
                  f"(additional properties are forbidden; allowed: {allowed})",
                  keyword, schema_path)
            for extra in sorted(additional_properties_of(inst, error.schema))
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


TIMEOUT_MESSAGE = (
    f"validation took longer than {TIME_LIMIT_SECONDS:g} s, the limit of one validation: the "
    "instance counts as invalid (simplify the schema's patterns or send a smaller instance)"
)
COMPILE_TIMEOUT = (
    f"the schema could not be compiled within {TIME_LIMIT_SECONDS:g} s, the limit of one "
    "validation call"
)


class Api:
    """The SQL functions' entry points. Each call runs under BOUND (one deadline, cancellable);
    a valid schema always gives an answer; only an invalid schema raises (22023)."""

    def __init__(self):
        self.cache = Cache()
        self.timeouts = {}  # (schema, instance) texts that hit the limit: answered at once

    def timed_out(self, schema, instance):
        if schema not in self.cache:
            fail(InvalidSchema(COMPILE_TIMEOUT))
        if len(self.timeouts) >= TIMEOUTS_KEPT:
            del self.timeouts[next(iter(self.timeouts))]
        self.timeouts[schema, instance] = True

    def matches(self, schema, instance):
        if self.timeouts and (schema, instance) in self.timeouts:
            return False
        try:
            with BOUND.run():
                return self.cache[schema](instance)
        except ValidationTimeout:
            self.timed_out(schema, instance)
            return False
        except InvalidSchema as exc:
            fail(exc)

    def matches_on(self, schema, instance, path):
        """Tests only: the answer of one path ("fast" or "general"), whichever the schema takes."""
        try:
            with BOUND.run():
                compiled = self.cache.compiled(schema)
                if path == "general":
                    return compiled.is_valid(loads(instance))
                if compiled.fast is None:
                    return None
                try:
                    compiled.fast(loads(instance))
                    return True
                except JsonSchemaValueException:
                    return False
                except Exception as exc:
                    if passes_through(exc):
                        raise
                    # A fast validator's own error ({"propertyNames": false} on a non-object):
                    # no answer from this path; match() takes the general path's.
                    return None
        except InvalidSchema as exc:
            fail(exc)

    def is_valid_schema(self, schema):
        try:
            with BOUND.run():
                self.cache[schema]
        except ValidationTimeout:
            plpy.notice(f"Invalid JSON schema: {COMPILE_TIMEOUT}")
            return False
        except InvalidSchema as exc:
            plpy.notice(f"Invalid JSON schema: {exc}")
            return False
        return True

    def collect(self, schema, instance):
        """(errors found, whether the limit stopped the search)."""
        if self.timeouts and (schema, instance) in self.timeouts:
            return [], True
        found = []
        try:
            with BOUND.run():
                self.cache.compiled(schema).iter_errors(loads(instance), found)
        except ValidationTimeout:
            self.timed_out(schema, instance)
            return found, True
        return found, False

    def validation_errors(self, schema, instance):
        try:
            found, stopped = self.collect(schema, instance)
        except InvalidSchema as exc:
            return [str(exc)]
        return [e.message for e in found] + ([TIMEOUT_MESSAGE] if stopped else [])

    def errors(self, schema, instance):
        try:
            found, stopped = self.collect(schema, instance)
        except InvalidSchema as exc:
            fail(exc)
        report = [item for error in found for item in describe(error)]
        if stopped:
            report.append(entry([], TIMEOUT_MESSAGE, None, ""))
        report.sort(key=lambda e: (e["path"], e["schema_path"], e["message"]))
        return json.dumps(report, ensure_ascii=False)

    def path_of(self, schema):
        try:
            with BOUND.run():
                return "fast" if self.cache[schema].compiled.fast is not None else "general"
        except ValidationTimeout:
            fail(InvalidSchema(COMPILE_TIMEOUT))
        except InvalidSchema as exc:
            fail(exc)


GD[GD_KEY] = Api()
