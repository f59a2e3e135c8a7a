"""Just enough of HCL's native syntax to find blocks and attributes, and literal values.

`blocks()` splits a `.tf` file into its top-level blocks and `items()` a block's body into
its attributes and nested blocks, each with its raw text. Strings (with `${...}` and
`%{...}` templates nested to any depth), heredocs, comments and brackets are skipped as
units, so a `}` or a newline inside them never ends anything. What this cannot read raises
`HclError`: callers then treat the file as opaque instead of guessing.

`literal()` gives the value of an expression made only of literals (strings without
interpolation, heredocs, numbers, `true`, `false`, `null`, lists and objects of them), and
`UNKNOWN` for any other (references, function calls, operators, templates): never a guess.
What the files of a module say is asked of `pytest_iac.tfconfig`, which reads them with this.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

_IDENTIFIER = re.compile(r"[^\W\d][\w-]*")  # Unicode letters too, as HCL allows
_HEREDOC = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_-]*)[ \t]*\r?\n")
_CLOSING = {"(": ")", "[": "]", "{": "}"}
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
_KEYWORDS = {"true": True, "false": False, "null": None}


class HclError(ValueError):
    """Text this reader does not understand."""


class _Unknown:
    """The value of an expression that is not a literal: known only when Terraform runs."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


@dataclass(frozen=True)
class Block:
    kind: str
    labels: tuple[str, ...]
    body: str
    body_start: int = field(default=0, compare=False)  # where `body` begins in the text read


@dataclass(frozen=True)
class Attribute:
    name: str
    expression: str
    # Where it is in the text read: from its name to the end of its (last) line.
    span: tuple[int, int] = field(default=(0, 0), compare=False)


@functools.lru_cache(maxsize=256)
def blocks(text: str) -> tuple[Block, ...]:
    """The top-level blocks of a file (`resource "a" "b" { ... }`), in order.

    Cached on the text: a drift check asks the same file for what init reads and for what
    the module declares."""
    found: list[Block] = []
    for item in items(text):
        if isinstance(item, Attribute):
            raise HclError(f"attribute {item.name!r} outside any block")
        found.append(item)
    return tuple(found)


def items(body: str) -> Iterator[Block | Attribute]:
    """The attributes and blocks directly in `body`, in order."""
    try:
        yield from _items(body)
    except RecursionError:
        raise HclError("brackets nested too deeply") from None


def _items(body: str) -> Iterator[Block | Attribute]:
    i = _skip_blank(body, 0)
    while i < len(body):
        name = _IDENTIFIER.match(body, i)
        if name is None:
            raise HclError(f"unexpected {body[i : i + 20]!r}")
        i = _skip_spaces(body, name.end())
        if body.startswith("=", i) and not body.startswith("==", i):
            end = _scan(body, i + 1, "\n", eof_ok=True)
            yield Attribute(name.group(), body[i + 1 : end].strip(), (name.start(), end))
            i = _skip_blank(body, end)
            continue
        labels: list[str] = []
        i = _skip_inline(body, i)
        while not body.startswith("{", i):
            if body.startswith('"', i):
                end = _skip_string(body, i)
                labels.append(body[i + 1 : end - 1])
            elif label := _IDENTIFIER.match(body, i):
                end = label.end()
                labels.append(label.group())
            else:
                raise HclError(f"unexpected {body[i : i + 20]!r} in the header of {name.group()}")
            i = _skip_inline(body, end)
        end = _scan(body, i + 1, "}")
        yield Block(name.group(), tuple(labels), body[i + 1 : end], i + 1)
        i = _skip_blank(body, end + 1)


def _skip_spaces(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def _skip_inline(text: str, i: int) -> int:
    """Past spaces and one-line `/* */` comments: what may sit between a block's labels."""
    i = _skip_spaces(text, i)
    while text.startswith("/*", i) and "\n" not in text[i : _comment_end(text, i)]:
        i = _skip_spaces(text, _comment_end(text, i))
    return i


def _skip_blank(text: str, i: int) -> int:
    """Past whitespace, newlines and comments."""
    while i < len(text):
        if text[i] in " \t\r\n":
            i += 1
        elif text[i] == "#" or text.startswith("//", i):
            i = _line_end(text, i)
        elif text.startswith("/*", i):
            i = _comment_end(text, i)
        else:
            break
    return i


def _line_end(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _comment_end(text: str, i: int) -> int:
    end = text.find("*/", i + 2)
    if end < 0:
        raise HclError("unterminated /* comment")
    return end + 2


def _scan(text: str, i: int, stop: str, *, eof_ok: bool = False) -> int:
    """The index of the first `stop` character at this nesting level, from `i`."""
    while i < len(text):
        char = text[i]
        if char in stop:
            return i
        if char == '"':
            i = _skip_string(text, i)
        elif char == "#" or text.startswith("//", i):
            i = _line_end(text, i)
        elif text.startswith("/*", i):
            i = _comment_end(text, i)
        elif heredoc := _HEREDOC.match(text, i):
            i = _skip_heredoc(text, heredoc)
        elif char in _CLOSING:
            i = _scan(text, i + 1, _CLOSING[char]) + 1
        elif char in ")]}":
            raise HclError(f"unbalanced {char!r}")
        else:
            i += 1
    if eof_ok:
        return i
    raise HclError(f"missing {stop!r}")


def _skip_string(text: str, i: int) -> int:
    """Past the quoted template starting at `i` (templates inside included)."""
    i += 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
        elif char == '"':
            return i + 1
        elif char == "\n":
            raise HclError("newline in a quoted string")
        elif text.startswith(("$${", "%%{"), i):
            i += 3  # an escaped, literal `${` or `%{`
        elif text.startswith(("${", "%{"), i):
            i = _scan(text, i + 2, "}") + 1
        else:
            i += 1
    raise HclError("unterminated string")


def _skip_heredoc(text: str, opening: re.Match[str]) -> int:
    """Past the line that ends the heredoc `opening` starts."""
    marker = opening.group(2)
    i = opening.end()
    while i < len(text):
        end = _line_end(text, i)
        if text[i:end].strip() == marker:
            return end
        i = end + 1
    raise HclError(f"unterminated heredoc {marker}")


# A string literal as init keeps it: printable ASCII (nothing to normalise), no escape, no
# template.
_PLAIN_STRING = re.compile(r'"[ !#&-\[\]-~]*"')


def plain_string(expression: str) -> str | None:
    """The value of `expression` if it is a plain string literal (see `_PLAIN_STRING`)."""
    return expression[1:-1] if _PLAIN_STRING.fullmatch(expression) else None


# Names code uses

# A root name, `provider::NAME::FUNCTION` included, and its first attribute (`var.region`).
_ROOT = re.compile(r"(?<![\w.:-])([^\W\d][\w-]*(?:::[^\W\d][\w-]*)*)(\.[^\W\d][\w-]*)?")


@functools.lru_cache(maxsize=1024)
def names(text: str) -> frozenset[str]:
    """The names the code in `text` starts from, with their first attribute: `var.region`,
    `local.x`, `aws_s3_bucket.b`, `provider::aws::arn_parse`, `length`. Comments and the
    literal parts of strings and heredocs are not code; template interpolations are.
    Raises `HclError` where the text cannot be read."""
    code = list(text)
    try:
        _code(text, 0, code, None)
    except RecursionError:
        raise HclError("brackets nested too deeply") from None
    return frozenset(m.group(1) + (m.group(2) or "") for m in _ROOT.finditer("".join(code)))


def _blank(code: list[str], start: int, end: int) -> None:
    for i in range(start, end):
        if code[i] != "\n":
            code[i] = " "


def _code(text: str, i: int, code: list[str], stop: str | None) -> int:
    """Blank out, in `code`, what is not code from `i` up to `stop` at this level."""
    while i < len(text):
        char = text[i]
        if char == stop:
            return i
        if char == '"':
            i = _template(text, i + 1, code, '"')
        elif char == "#" or text.startswith("//", i):
            _blank(code, i, end := _line_end(text, i))
            i = end
        elif text.startswith("/*", i):
            _blank(code, i, end := _comment_end(text, i))
            i = end
        elif heredoc := _HEREDOC.match(text, i):
            end = _skip_heredoc(text, heredoc)
            closing = text.rfind("\n", heredoc.end(), end) + 1 or end
            _blank(code, i, heredoc.end())
            _template(text[:closing], heredoc.end(), code, None)
            _blank(code, closing, end)
            i = end
        elif char in _CLOSING:
            i = _code(text, i + 1, code, _CLOSING[char]) + 1
        else:
            i += 1
    if stop is not None:
        raise HclError(f"missing {stop!r}")
    return i


def _template(text: str, i: int, code: list[str], quote: str | None) -> int:
    """Blank the literal parts of a template from `i` (after its opening quote) to its end."""
    while i < len(text):
        if quote is not None and text[i] == quote:
            _blank(code, i, i + 1)
            return i + 1
        if text[i] == "\\" and quote is not None:
            _blank(code, i, i + 2)
            i += 2
        elif text.startswith(("$${", "%%{"), i):
            _blank(code, i, i + 3)
            i += 3
        elif text.startswith(("${", "%{"), i):
            _blank(code, i, i + 2)
            i = _code(text, i + 2, code, "}")
            _blank(code, i, i + 1)
            i += 1
        elif quote is not None and text[i] == "\n":
            raise HclError("newline in a quoted string")
        else:
            _blank(code, i, i + 1)
            i += 1
    if quote is not None:
        raise HclError("unterminated string")
    return i


# Literal values


class _NotLiteral(Exception):
    pass


def literal(expression: str) -> Any:
    """The value of `expression` if it is a literal (see the module documentation), else
    `UNKNOWN`. Numbers with a fraction or exponent are floats, others ints."""
    try:
        value, end = _literal(expression, _skip_blank(expression, 0))
        if _skip_blank(expression, end) != len(expression):
            return UNKNOWN  # an operator, an index, a call... follows
    except (_NotLiteral, HclError, RecursionError):
        return UNKNOWN
    return value


def _literal(text: str, i: int) -> tuple[Any, int]:
    """The literal value starting at `i`, and where it ends."""
    if text.startswith('"', i):
        return _string_value(text, i)
    if heredoc := _HEREDOC.match(text, i):
        return _heredoc_value(text, heredoc)
    if text.startswith("[", i):
        return _list_value(text, i + 1)
    if text.startswith("{", i):
        return _object_value(text, i + 1)
    if number := _NUMBER.match(text, i):
        if number.group(1) or number.group(2):
            return float(number.group()), number.end()
        return int(number.group()), number.end()
    if (word := _IDENTIFIER.match(text, i)) and word.group() in _KEYWORDS:
        return _KEYWORDS[word.group()], word.end()
    raise _NotLiteral


def _string_value(text: str, i: int) -> tuple[str, int]:
    """A quoted string without interpolations or directives, escapes resolved."""
    end = _skip_string(text, i)
    chars: list[str] = []
    i += 1
    while i < end - 1:
        if text[i] == "\\":
            code = text[i + 1]
            if code in _ESCAPES:
                chars.append(_ESCAPES[code])
                i += 2
            elif code in "uU":
                digits = 4 if code == "u" else 8
                chars.append(chr(int(text[i + 2 : i + 2 + digits], 16)))
                i += 2 + digits
            else:
                raise _NotLiteral
        elif text.startswith(("$${", "%%{"), i):
            chars.append(text[i + 1 : i + 3])
            i += 3
        elif text.startswith(("${", "%{"), i):
            raise _NotLiteral
        else:
            chars.append(text[i])
            i += 1
    return "".join(chars), end


def _heredoc_value(text: str, opening: re.Match[str]) -> tuple[str, int]:
    end = _skip_heredoc(text, opening)
    lines = text[opening.end() : end].split("\n")[:-1]  # the last: the closing marker
    if opening.group(1):  # <<-: the smallest indentation goes
        indents = [len(line) - len(line.lstrip(" \t")) for line in lines if line.strip()]
        lines = [line[min(indents, default=0) :] for line in lines]
    body = "".join(line + "\n" for line in lines)
    unescaped = body.replace("$${", "").replace("%%{", "")
    if "${" in unescaped or "%{" in unescaped:
        raise _NotLiteral
    return body.replace("$${", "${").replace("%%{", "%{"), end


def _list_value(text: str, i: int) -> tuple[list[Any], int]:
    values: list[Any] = []
    i = _skip_blank(text, i)
    while not text.startswith("]", i):
        value, i = _literal(text, i)
        values.append(value)
        i = _skip_blank(text, i)
        if text.startswith(",", i):
            i = _skip_blank(text, i + 1)
        elif not text.startswith("]", i):
            raise _NotLiteral
    return values, i + 1


def _object_value(text: str, i: int) -> tuple[dict[str, Any], int]:
    values: dict[str, Any] = {}
    i = _skip_blank(text, i)
    while not text.startswith("}", i):
        if text.startswith('"', i):
            key, i = _string_value(text, i)
        elif word := _IDENTIFIER.match(text, i):
            key, i = word.group(), word.end()
        else:
            raise _NotLiteral  # a (computed) key
        i = _skip_spaces(text, i)
        if not text.startswith(("=", ":"), i) or text.startswith("==", i):
            raise _NotLiteral
        values[key], i = _literal(text, _skip_blank(text, i + 1))
        i = _skip_blank(text, i)
        if text.startswith(",", i):
            i = _skip_blank(text, i + 1)
    return values, i + 1
