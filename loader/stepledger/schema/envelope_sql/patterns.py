"""Translate a JSON Schema `pattern` into a PostgreSQL advanced regular expression (ARE).

Our validator runs patterns with Python's `re.search`. Only a conservative subset is translated,
one whose meaning is the same in Python, in ECMA-262 and, after translation, in an ARE:
literals, `.`, `^`, `$`, groups `(...)` and `(?:...)`, `|`, bracket classes of literal characters
and ranges, the quantifiers `* + ? {n} {n,} {n,m}` (m <= 255, the ARE limit; lazy forms too:
whether a match exists does not depend on greediness) and escapes of punctuation, `\\n \\t \\r
\\f \\v`, `\\xhh` and `\\uhhhh`. Anything else (`\\d`, `\\w`, `\\s`, `\\b`, back references,
lookaround, flags, possessive quantifiers, `{` that is not a quantifier, ...) raises
`Untranslatable` and the caller falls back to the validator.

The translation is emitted in a canonical form (every group non-capturing, every punctuation
literal escaped), never copied through, so no ARE-only syntax can sneak in. Python's `.` does not
match a newline; an ARE's does, so `.` becomes `[^\\n]`. `$` is the end of the string (ECMA-262,
our fast path, pg_jsonschema) or, with `python_dollar`, also the position before a final newline
(Python's `re`, our general path): `(?=\\n?$)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_BOUND = 255  # RE_DUP_MAX of PostgreSQL's regex engine
CONTROL = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}
PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


class Untranslatable(ValueError):
    """The pattern uses syntax outside the translated subset."""


@dataclass
class _Element:
    """One quantified atom of the top-level sequence."""

    atom: str
    quantifier: str
    single: bool  # the atom matches exactly one character
    anchor: bool


@dataclass
class _Parser:
    src: str
    python_dollar: bool
    pos: int = 0
    depth: int = 0
    bounded: int = 0  # bounded repetitions {n,m} parsed so far
    top: list[list[_Element]] = field(default_factory=list)

    def peek(self, ahead: int = 0) -> str:
        i = self.pos + ahead
        return self.src[i] if i < len(self.src) else ""

    def take(self) -> str:
        ch = self.peek()
        if not ch:
            raise Untranslatable("unexpected end of pattern")
        self.pos += 1
        return ch

    # alternation := sequence ('|' sequence)*
    def alternation(self) -> str:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.sequence())
        return "|".join(branches)

    # sequence := (atom quantifier?)*
    def sequence(self) -> str:
        out = []
        elements = []
        while self.peek() and self.peek() not in "|)":
            start = self.pos
            bounded_before = self.bounded
            atom, quantifiable = self.atom()
            single = quantifiable and self.src[start] != "("
            quantifier = self.quantifier()
            if quantifier.startswith("{") and self.bounded > bounded_before + 1:
                # PostgreSQL expands bounded repetitions: nested ones multiply into an
                # expression "too complex" for its engine.
                raise Untranslatable("bounded repetition inside a repeated group")
            if quantifier and not quantifiable:
                raise Untranslatable("quantifier after an anchor")
            out.append(atom + quantifier)
            elements.append(_Element(atom, quantifier, single, not quantifiable))
        if self.depth == 0:
            self.top.append(elements)
        return "".join(out)

    def atom(self) -> tuple[str, bool]:
        ch = self.take()
        if ch == "(":
            if self.peek() == "?":
                if self.peek(1) != ":":
                    raise Untranslatable("only (?:...) groups are translated")
                self.pos += 2
            self.depth += 1
            inner = self.alternation()
            self.depth -= 1
            if self.take() != ")":
                raise Untranslatable("unbalanced parenthesis")
            return f"(?:{inner})", True
        if ch == "[":
            return self.bracket(), True
        if ch == ".":
            return r"[^\n]", True
        if ch == "^":
            return "^", False
        if ch == "$":
            if self.pos >= 2 and self.src[self.pos - 2] == "\\":
                # fastjsonschema rewrites `$` to `\Z` unless a backslash precedes it, so the
                # meaning of `\\$` differs between our two paths: leave it to the validator.
                raise Untranslatable("`$` after an escaped backslash")
            return (r"(?=\n?$)" if self.python_dollar else "$"), False
        if ch in "*+?{":
            raise Untranslatable(f"nothing to repeat at {self.pos - 1}")
        if ch == ")":
            raise Untranslatable("unbalanced parenthesis")
        if ch == "\\":
            return _literal(self.escape()), True
        return _literal(ch), True

    def escape(self) -> str:
        """The character an escape outside or inside a class stands for."""
        ch = self.take()
        if ch in PUNCTUATION:
            return ch
        if ch in CONTROL:
            return CONTROL[ch]
        if ch in "xu":
            width = 2 if ch == "x" else 4
            digits = self.src[self.pos:self.pos + width]
            if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise Untranslatable(f"malformed \\{ch} escape")
            self.pos += width
            code = int(digits, 16)
            if code == 0 or 0xD800 <= code <= 0xDFFF:
                raise Untranslatable("NUL or surrogate escape")
            return chr(code)
        raise Untranslatable(f"escape \\{ch} is not translated")

    def quantifier(self) -> str:
        ch = self.peek()
        if ch in ("*", "+", "?"):
            self.pos += 1
            out = ch
        elif ch == "{":
            end = self.src.find("}", self.pos)
            body = self.src[self.pos + 1:end] if end > 0 else ""
            lo, comma, hi = body.partition(",")
            if not lo.isdigit() or not (hi.isdigit() or hi == "") or not lo.isascii() \
                    or not hi.isascii():
                raise Untranslatable("`{` that is not a quantifier")
            if int(lo) > MAX_BOUND or (hi and (int(hi) > MAX_BOUND or int(hi) < int(lo))):
                raise Untranslatable("repetition bound above 255 or reversed")
            self.pos = end + 1
            self.bounded += 1
            out = "{" + str(int(lo)) + (comma + (str(int(hi)) if hi else "")) + "}"
        else:
            return ""
        if self.peek() == "?":
            self.pos += 1  # lazy: the same matches exist
        if self.peek() in ("*", "+", "?", "{"):
            raise Untranslatable("possessive or repeated quantifier")
        return out

    def bracket(self) -> str:
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        ranges: list[tuple[str, str]] = []
        first = True
        while True:
            ch = self.take()
            if ch == "]" and not first:
                break
            if ch in "[]":
                raise Untranslatable("`[` or a leading `]` inside a class")
            lo = self.escape() if ch == "\\" else ch
            first = False
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                ch = self.take()
                if ch == "[":
                    raise Untranslatable("`[` inside a class")
                hi = self.escape() if ch == "\\" else ch
                if ord(hi) < ord(lo):
                    raise Untranslatable("reversed range")
                if self.peek() == "-" and self.peek(1) not in ("]", ""):
                    raise Untranslatable("`-` after a range")
                ranges.append((lo, hi))
            else:
                ranges.append((lo, lo))
        items = "".join(_in_class(lo) if lo == hi else f"{_in_class(lo)}-{_in_class(hi)}"
                        for lo, hi in ranges)
        return "[" + ("^" if negated else "") + items + "]"


def _literal(ch: str) -> str:
    if ord(ch) < 0x20 or ch == "\x7f":
        return f"\\u{ord(ch):04x}"
    if ch in PUNCTUATION:
        return "\\" + ch
    return ch


def _in_class(ch: str) -> str:
    # Inside an ARE bracket expression a backslash escapes too; escaping every punctuation
    # character keeps `]`, `^`, `-`, `[` and `\` literal wherever they stand.
    return _literal(ch)


@dataclass(frozen=True)
class Translated:
    """The ARE, and the length in characters every match of the whole string must have."""

    regex: str
    min_length: int = 0
    max_length: int | None = None


def translate(pattern: str, *, python_dollar: bool = False) -> Translated:
    """The ARE matching the same strings as Python's re.search(pattern, s)."""
    if "\x00" in pattern:
        raise Untranslatable("NUL in pattern")
    parser = _Parser(pattern, python_dollar)
    out = parser.alternation()
    if parser.pos != len(pattern):
        raise Untranslatable("unbalanced parenthesis")
    if not python_dollar and len(parser.top) == 1:
        return _with_length(parser.top[0]) or Translated(out)
    return Translated(out)


def _with_length(elements: list[_Element]) -> Translated | None:
    """`^a[b-z]{0,62}$` as `^a[b-z]*$` plus a length of 1 to 63: PostgreSQL's engine expands a
    bounded repetition into that many copies, which costs microseconds per match. Exact when
    the pattern is anchored at both ends and every other atom matches one character once."""
    if len(elements) < 3 or not (elements[0].atom == "^" and elements[-1].atom == "$"):
        return None
    middle = elements[1:-1]
    if not all(e.single for e in middle):
        return None
    ranges = [_repeat(e.quantifier) for e in middle]
    variable = [i for i, (lo, hi) in enumerate(ranges) if lo != hi]
    if len(variable) != 1 or ranges[variable[0]][1] is None:
        return None
    fixed = sum(lo for lo, _ in ranges)
    i = variable[0]
    lo, hi = ranges[i]
    parts = [e.atom + (e.quantifier if j != i else "*") for j, e in enumerate(middle)]
    return Translated("^" + "".join(parts) + "$", fixed, fixed - lo + hi)  # type: ignore[operator]


def _repeat(quantifier: str) -> tuple[int, int | None]:
    if quantifier == "":
        return 1, 1
    if quantifier in ("*", "+", "?"):
        return {"*": (0, None), "+": (1, None), "?": (0, 1)}[quantifier]
    lo, comma, hi = quantifier[1:-1].partition(",")
    if not comma:
        return int(lo), int(lo)
    return int(lo), int(hi) if hi else None
