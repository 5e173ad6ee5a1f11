"""The connection patterns of a user's own Steampipe aggregators, read from their `.spc` file
with a real HCL2 parser (python-hcl2).

An aggregator is a `connection` block with `type = "aggregator"`; its `connections` list names
the connections it covers, with `*` wildcards (`connections = ["aws_prod_*"]`). Only aggregators
of the AWS plugin are read: patterns of other plugins' aggregators name connections Canopy does
not make. Every entry counts, plain names too: a rename silently drops a plain name from an
aggregator as surely as it empties a wildcard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
from hcl2.utils import SerializationOptions
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from canopy_cli.client import CliError


class SpcError(CliError):
    """A user `.spc` file that cannot be read or does not parse: `file:line:column: what`."""

    exit_code = 2


@dataclass(frozen=True)
class Aggregator:
    """One of the user's AWS aggregators and the patterns it lists."""

    name: str
    patterns: tuple[str, ...]


def _position(text: str, offset: int) -> tuple[int, int]:
    """Line and column (from 1) of a character offset."""
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _describe(error: UnexpectedInput, text: str) -> tuple[int, int, str]:
    line, column = getattr(error, "line", -1), getattr(error, "column", -1)
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END":
            what = "unexpected end of file"
        else:
            shown = str(token.value).split("\n", 1)[0][:20]
            what = f"unexpected {shown!r}" if shown else "unexpected line break"
    elif isinstance(error, UnexpectedCharacters):
        what = f"unexpected {error.char!r}"
    elif isinstance(error, UnexpectedEOF):
        what = "unexpected end of file"
    else:
        what = "does not parse"
    if not isinstance(line, int) or line < 1:
        line, column = _position(text, len(text))
    return line, column, what


def _is_aws(plugin: object) -> bool:
    """`aws`, `turbot/aws`, `hub.steampipe.io/plugins/turbot/aws@latest`, …"""
    return isinstance(plugin, str) and plugin.split("@", 1)[0].rsplit("/", 1)[-1] == "aws"


def parse_aggregators(text: str, source: str) -> list[Aggregator]:
    """The AWS aggregators of a `.spc` file's text, in file order."""
    try:
        parsed: dict[str, Any] = hcl2.loads(
            text,
            serialization_options=SerializationOptions(
                strip_string_quotes=True, explicit_blocks=False, with_comments=False
            ),
        )
    except UnexpectedInput as error:
        line, column, what = _describe(error, text)
        raise SpcError(f"{source}:{line}:{column}: {what}") from None
    except Exception as error:  # the parser's own checks (duplicate attributes, …)
        line, column = _position(text, len(text))
        detail = " ".join(str(error).split())[:200] or type(error).__name__
        raise SpcError(f"{source}:{line}:{column}: {detail}") from None
    found: list[Aggregator] = []
    for block in parsed.get("connection", []):
        for name, body in block.items():
            if not isinstance(body, dict) or body.get("type") != "aggregator":
                continue
            if not _is_aws(body.get("plugin")):
                continue
            listed = body.get("connections", [])
            if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
                raise SpcError(
                    f"{source}: connection {name!r}: connections must be a list of strings"
                )
            found.append(Aggregator(str(name), tuple(listed)))
    return found


def read_patterns(path: Path) -> list[str]:
    """Every connection pattern of the file's AWS aggregators, once each, in file order."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SpcError(f"cannot read {path}: {error.strerror}") from None
    try:
        text = data.decode()
    except UnicodeDecodeError as error:
        line, column = _position(data[: error.start].decode(errors="replace"), error.start)
        raise SpcError(f"{path}:{line}:{column}: not UTF-8") from None
    patterns: list[str] = []
    for aggregator in parse_aggregators(text, str(path)):
        patterns.extend(p for p in aggregator.patterns if p not in patterns)
    return patterns
