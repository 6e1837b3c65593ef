"""Reading one untrusted request document, in isolation and within limits.

Everything a document can do to a parser is bounded before the parser runs or while it runs:
its size in bytes, its encoding, its nesting depth (pre-scanned for JSON, counted by the YAML
composer, walked iteratively after: nothing recurses deeper than `max_depth`), the length of its
strings, keys per object, items per list, values in all (YAML aliases expanded), the size and
range of its numbers, YAML tags (none), aliases (few, never recursive) and duplicate keys (none).
A document that breaks a limit raises `RequestError` with the limit it broke; the limits live in
`request_limits.IntakeLimits` (params.yaml `intake:` overrides the defaults).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import date
from typing import Any

import yaml
from yaml.events import AliasEvent, ScalarEvent
from yaml.nodes import MappingNode, ScalarNode

from unlearn_ops.request_limits import (
    RAW_CONTROLS,
    Document,
    IntakeLimits,
    RawDocument,
    RequestError,
    bad_char,
    char_name,
    nfkc,
    quote,
)

# ------------------------------------------------------------------ bytes → text
_BOMS = ((b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\xef\xbb\xbf", "utf-8-sig"),
         (b"\xfe\xff", "utf-16"), (b"\xff\xfe", "utf-16"))


def decode(data: bytes) -> str:
    """UTF-8 (with or without BOM), or UTF-16/UTF-32 with their BOM; anything else is refused."""
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    # ASCII text in UTF-16 has a NUL in every other byte: name it rather than its first NUL
    if encoding == "utf-8" and max(data[:200:2].count(0), data[1:200:2].count(0)) > len(data[:200]) // 4:
        raise RequestError("not UTF-8 text: looks like UTF-16 without a byte-order mark "
                           "(send UTF-8, or UTF-16 with a BOM)")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise RequestError(f"not {encoding.upper().removesuffix('-SIG')} text: {e.reason} "
                           f"(byte 0x{data[e.start]:02x} at offset {e.start})") from e


# ------------------------------------------------------------------ JSON
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.S)


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than `limit` (a scan, no recursion)."""
    depth = 0
    for m in _JSON_TOKENS.finditer(text):
        token = m.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                return True
        elif token in "]}":
            depth = max(depth - 1, 0)
    return False


def _load_json(text: str, limits: IntakeLimits) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise RequestError(f"duplicate key {quote(k)} in an object")
            out[k] = v
        return out

    def number(literal: str, convert):
        if len(literal) > limits.max_number_chars:
            raise RequestError(f"number literal of {len(literal)} characters (limit {limits.max_number_chars})")
        return convert(literal)

    def constant(name: str):
        raise RequestError(f"{name} is not a number a request may hold")

    return json.loads(text, object_pairs_hook=no_duplicates, parse_int=lambda s: number(s, int),
                      parse_float=lambda s: number(s, float), parse_constant=constant)


# ------------------------------------------------------------------ YAML
class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded: no tags, few and never recursive aliases, no duplicate
    keys, depth counted while composing (the composer recurses once per level)."""

    def __init__(self, text: str, limits: IntakeLimits):
        super().__init__(text)
        self.limits, self.depth, self.nodes, self.aliases, self.open_anchors = limits, 0, 0, 0, []

    def compose_node(self, parent, index):
        event = self.peek_event()
        self.nodes += 1  # stops a slow pure-Python parse of a huge flow list early
        if self.nodes > self.limits.max_nodes:
            raise RequestError(f"more than {self.limits.max_nodes} values in the document")
        if isinstance(event, AliasEvent):
            self.aliases += 1
            if self.aliases > self.limits.max_aliases:
                raise RequestError(f"more than {self.limits.max_aliases} YAML aliases")
            if event.anchor in self.open_anchors:
                raise RequestError(f"YAML alias *{quote(event.anchor, 30)[1:-1]} refers to a node that contains it")
            return super().compose_node(parent, index)
        if event.tag is not None:
            raise RequestError(f"YAML tag {quote(event.tag, 40)} is not allowed (requests are plain data)")
        if isinstance(event, ScalarEvent):
            return super().compose_node(parent, index)
        self.depth += 1  # lists and objects count, as in `json_depth_exceeds` and `check_values`
        if self.depth > self.limits.max_depth:
            raise RequestError(f"nested deeper than {self.limits.max_depth} levels")
        self.open_anchors.append(event.anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1
            self.open_anchors.pop()

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                if not isinstance(key_node, ScalarNode):
                    raise RequestError("an object key is itself a list or an object")
                key = self.construct_object(key_node)
                if key in seen:
                    raise RequestError(f"duplicate key {quote(key)} in an object")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def _number(self, node, construct):
        if len(node.value) > self.limits.max_number_chars:
            raise RequestError(f"number literal of {len(node.value)} characters (limit {self.limits.max_number_chars})")
        return construct(self, node)


_Loader.add_constructor("tag:yaml.org,2002:int", lambda s, n: s._number(n, yaml.SafeLoader.construct_yaml_int))
_Loader.add_constructor("tag:yaml.org,2002:float", lambda s, n: s._number(n, yaml.SafeLoader.construct_yaml_float))


def _load_yaml(text: str, limits: IntakeLimits) -> Any:
    loader = _Loader(text, limits)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        where = f" (line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1})" if e.problem_mark else ""
        what = ", ".join(x for x in (e.context, e.problem) if x)
        raise RequestError(f"not valid JSON or YAML: {what}{where}") from e
    except yaml.YAMLError as e:
        raise RequestError(f"not valid JSON or YAML: {quote(str(e).splitlines()[0], 120)}") from e
    finally:
        loader.dispose()


# ------------------------------------------------------------------ the walk
def check_values(data: Any, limits: IntakeLimits) -> None:
    """Walk parsed data iteratively (aliases and shared references are visited every time) and
    refuse the first value out of bounds."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise RequestError(f"more than {limits.max_nodes} values in the document")
        if isinstance(value, str):
            _check_string(value, limits.max_string, "a string")
        elif isinstance(value, bool) or value is None or isinstance(value, date):
            continue
        elif isinstance(value, int | float):
            if isinstance(value, float) and not math.isfinite(value):
                raise RequestError(f"{value} is not a number a request may hold")
            if abs(value) > limits.max_abs_number:
                raise RequestError(f"number {quote(value, 30)} out of range (|x| ≤ 2^{limits.max_abs_number.bit_length() - 1})")
        elif isinstance(value, Mapping | list | tuple):
            if depth > limits.max_depth:
                raise RequestError(f"nested deeper than {limits.max_depth} levels")
            if isinstance(value, Mapping):
                if len(value) > limits.max_keys:
                    raise RequestError(f"an object with {len(value)} keys (limit {limits.max_keys})")
                for k in value:
                    if not isinstance(k, str):
                        raise RequestError(f"object key {quote(k)} is not a string")
                    _check_string(k, limits.max_key_chars, "a key")
                children = value.values()
            else:
                if len(value) > limits.max_items:
                    raise RequestError(f"a list of {len(value)} items (limit {limits.max_items})")
                children = value
            stack.extend((c, depth + 1) for c in children)
        else:
            raise RequestError(f"a value of type {type(value).__name__} is not allowed in a request")


def _check_string(text: str, limit: int, what: str) -> None:
    if len(text) > limit:
        raise RequestError(f"{what} of {len(text)} characters (limit {limit}): {quote(text, 40)}")
    bad = bad_char(text)
    if bad:
        raise RequestError(f"{what} holds the control or invisible character {bad}: {quote(text, 40)}")


# ------------------------------------------------------------------ documents
def parse_document(document: Document, limits: IntakeLimits | None = None) -> Any:
    """Bytes, text or already-decoded data → checked plain data (any JSON/YAML value), or
    RequestError naming the first limit the document breaks."""
    limits = limits or IntakeLimits()
    if isinstance(document, Mapping):
        check_values(document, limits)
        size = len(json.dumps(document, default=str).encode())
        if size > limits.max_bytes:
            raise RequestError(f"document of {size} bytes (limit {limits.max_bytes})")
        return document
    if isinstance(document, str):
        document = RawDocument.of(document.encode("utf-8", "surrogatepass"))
    elif isinstance(document, bytes):
        document = RawDocument.of(document)
    elif not isinstance(document, RawDocument):
        raise RequestError(f"a request must be a JSON/YAML object, got {type(document).__name__}")
    if document.size > limits.max_bytes:
        raise RequestError(f"document of {document.size} bytes (limit {limits.max_bytes})")
    text = decode(document.data)
    if not text.strip():
        raise RequestError("empty document")
    m = RAW_CONTROLS.search(text)
    if m:
        line = text.count("\n", 0, m.start()) + 1
        raise RequestError(f"control character {char_name(m.group())} in the text (line {line})")
    stripped = text.lstrip()
    data: Any
    if stripped[:1] in ("{", "["):
        if json_depth_exceeds(stripped, limits.max_depth):
            raise RequestError(f"nested deeper than {limits.max_depth} levels")
        try:
            data = _load_json(stripped, limits)
        except json.JSONDecodeError:
            data = _load_yaml(text, limits)  # a YAML flow mapping (`{model: x}`) is not JSON
    else:
        data = _load_yaml(text, limits)
    check_values(data, limits)
    return data


def kept_text(document: Document, limits: IntakeLimits) -> str:
    """What the ledger keeps of a rejected document: its size, sha256 and at most `keep_bytes`
    of it (as text where it decodes), as JSON — never an unbounded hostile blob."""
    if not isinstance(document, RawDocument | bytes | str):  # data passed as a flow parameter
        try:
            document = json.dumps(document, default=str, ensure_ascii=False)
        except (ValueError, RecursionError):  # a cyclic or absurdly deep object
            document = f"<unserialisable {type(document).__name__}>"
    if isinstance(document, str):
        document = RawDocument.of(document.encode("utf-8", "surrogatepass"))
    elif isinstance(document, bytes):
        document = RawDocument.of(document)
    head = document.data[:limits.keep_bytes]
    try:
        text = decode(head)
    except RequestError:
        text = head.decode("utf-8", "backslashreplace")
    kept = {"sha256": document.sha256, "size_bytes": document.size, "kept_bytes": len(head),
            "text": text.encode("utf-8", "backslashreplace").decode("utf-8")}  # lone surrogates → escapes
    return json.dumps({"rejected_document": kept})


__all__ = ["Document", "IntakeLimits", "RawDocument", "RequestError", "bad_char", "char_name", "check_values",
           "decode", "json_depth_exceeds", "kept_text", "nfkc", "parse_document", "quote"]
