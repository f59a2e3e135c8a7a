"""Just enough of HCL's native syntax to find blocks and attributes, not to evaluate them.

`blocks()` splits a `.tf` file into its top-level blocks and `items()` a block's body into
its attributes and nested blocks, each with its raw text. Strings (with `${...}` and
`%{...}` templates nested to any depth), heredocs, comments and brackets are skipped as
units, so a `}` or a newline inside them never ends anything. What this cannot read raises
`HclError`: callers then treat the file as opaque instead of guessing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_IDENTIFIER = re.compile(r"[^\W\d][\w-]*")  # Unicode letters too, as HCL allows
_HEREDOC = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_-]*)[ \t]*\r?\n")
_CLOSING = {"(": ")", "[": "]", "{": "}"}


class HclError(ValueError):
    """Text this reader does not understand."""


@dataclass(frozen=True)
class Block:
    kind: str
    labels: tuple[str, ...]
    body: str


@dataclass(frozen=True)
class Attribute:
    name: str
    expression: str


def blocks(text: str) -> list[Block]:
    """The top-level blocks of a file (`resource "a" "b" { ... }`), in order."""
    found: list[Block] = []
    for item in items(text):
        if isinstance(item, Attribute):
            raise HclError(f"attribute {item.name!r} outside any block")
        found.append(item)
    return found


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
            yield Attribute(name.group(), body[i + 1 : end].strip())
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
        yield Block(name.group(), tuple(labels), body[i + 1 : end])
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
