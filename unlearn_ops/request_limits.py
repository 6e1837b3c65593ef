"""What a request document may be: the limits (`IntakeLimits`, params.yaml `intake:`), the
document as received (`RawDocument`: bounded bytes + size + sha256), and how reasons name the
characters and values they refuse. The parsing that enforces the limits is `request_parsing`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


class RequestError(ValueError):
    """A request that cannot be accepted; the message is the reason kept in the ledger."""


@dataclass(frozen=True)
class IntakeLimits:
    """What one request document may hold. A request is a flat object of ~10 fields, two levels
    deep with its `sample_ids` list, well under 1 KB; the defaults leave wide room for long
    sample-ID lists and free-text reasons while keeping every parse in milliseconds."""

    max_bytes: int = 256 * 1024     # the raw document (≈ 8 000 sample IDs of 30 characters)
    max_depth: int = 8              # nesting of objects/lists (a request needs 2)
    max_string: int = 4096          # characters of one string value (free-text `reason` included)
    max_key_chars: int = 64         # characters of one object key (field names are ≤ 12)
    max_keys: int = 64              # keys of one object (a request has 10 fields)
    max_items: int = 10_000         # items of one list (`sample_ids`)
    max_nodes: int = 20_000         # values in the whole document, YAML aliases counted every time they are used
    max_aliases: int = 16           # YAML alias uses (`*name`, merge keys included) in one document
    max_number_chars: int = 40      # characters of one number literal, checked before it is converted
    max_abs_number: int = 2 ** 53   # |number| above this is rejected (the range JSON keeps exact)
    keep_bytes: int = 4096          # raw bytes of a rejected document kept in the ledger (with its size and sha256)

    @classmethod
    def from_params(cls, section: Mapping[str, Any] | None) -> IntakeLimits:
        """The limits from params.yaml's `intake:` section (missing keys keep their default)."""
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"params.yaml intake: unknown keys {unknown}; known are {sorted(known)}")
        bad = [k for k, v in section.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad:
            raise ValueError(f"params.yaml intake: {bad} must be positive integers")
        return cls(**section)


@dataclass(frozen=True)
class RawDocument:
    """A document as received: at most `max_bytes + 1` of its bytes (enough to tell it is too
    big), with the size and sha256 of all of them."""

    data: bytes
    size: int
    sha256: str

    @classmethod
    def of(cls, data: bytes) -> RawDocument:
        return cls(data, len(data), hashlib.sha256(data).hexdigest())

    @classmethod
    def read(cls, path: Path, limits: IntakeLimits) -> RawDocument:
        """Read a regular file; a huge one is hashed in chunks, never held in memory."""
        if not path.is_file():
            raise RequestError(f"{path.name} is not a regular file")
        digest, head, size = hashlib.sha256(), bytearray(), 0
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                if len(head) <= limits.max_bytes:
                    head += chunk[:limits.max_bytes + 1 - len(head)]
        return cls(bytes(head), size, digest.hexdigest())


Document = RawDocument | bytes | str | Mapping[str, Any]

# ------------------------------------------------------------------ characters
# C0/C1 controls (tab, newline, carriage return aside), surrogates, zero-width and bidi controls
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\u200b-\u200f\u202a-\u202e"
                        "\u2060-\u2064\u2066-\u2069\ufeff]")
RAW_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # never in the text of a JSON/YAML request


def char_name(c: str) -> str:
    """`U+202E RIGHT-TO-LEFT OVERRIDE`: how a reason names a character it refuses."""
    kinds = {"Cc": "a control character", "Cs": "a lone surrogate", "Cn": "unassigned", "Co": "private use"}
    return f"U+{ord(c):04X} {unicodedata.name(c, '') or '(' + kinds.get(unicodedata.category(c), 'unnamed') + ')'}"


def quote(value: Any, width: int = 60) -> str:
    """A value as a reason may show it: repr (escapes controls), at most `width` characters."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def bad_char(text: str) -> str | None:
    """The first control or invisible formatting character in `text`, named; None when clean."""
    m = _BAD_CHARS.search(text)
    return char_name(m.group()) if m else None


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)
