"""Deletion requests: the schema (pydantic), parsing with specific errors, resolution to sample IDs.

A request names a registered model and what to forget:

    {"request_id": "req-0001", "model": "fmnist-classifier", "kind": "subject", "subject_id": "subj-00042",
     "requester": "...", "reason": "...", "received_at": "2026-11-29T10:00:00Z"}

`kind` is `samples` (with `sample_ids`), `subject` (with `subject_id`), `class` (with
`class_label`, an index or a class name) or `concept` (with `concept`, an entity of the model's
store, e.g. a movie name: every training sample about it; the store's `groups.csv`, see
`unlearn_ops.data.text_store`). `request_id` and `received_at` are filled in when absent.

IDs name files, ledger rows and certificate lines, so each is restricted to a plain-ASCII set
(`ID_PATTERNS`): a look-alike (Cyrillic `е` for `e`, fullwidth digits) or invisible character is
rejected with its name, never silently matched. `concept` names an entity of the data and may be
any Unicode text: it is NFKC-normalised (fullwidth `ｅｎｉｇｍａ` reads `enigma`) and must hold no
control or invisible character. Parsing itself (size, depth, encodings, …) is `request_parsing`.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from unlearn_ops.data.store import SampleStore, StoreError
from unlearn_ops.data.text_store import GROUPS_FILE, group_ids
from unlearn_ops.request_parsing import (
    Document,
    IntakeLimits,
    RequestError,
    bad_char,
    char_name,
    nfkc,
    parse_document,
    quote,
)

KINDS = ("samples", "subject", "class", "concept")
# the field that names what to forget, per kind
TARGET_FIELD = {"samples": "sample_ids", "subject": "subject_id", "class": "class_label", "concept": "concept"}


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:12]}"


# What a request ID may look like: it names files and ledger rows, so plain ASCII only.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# The safe character set and length of every other ID (class names hold spaces: "Ankle boot").
ID_RULES = {"request_id": (r"A-Za-z0-9._\-", 64), "model": (r"A-Za-z0-9._\-", 128), "subject_id": (r"A-Za-z0-9._:/\-", 128),
            "sample_ids": (r"A-Za-z0-9._:/\-", 128), "class_label": (r"A-Za-z0-9 ._/()+\-", 64)}


def _check_id(field: str, value: str) -> str:
    """`value` when it is a safe ID (an ASCII letter or digit, then the field's characters);
    else ValueError naming the first character outside the set."""
    chars, longest = ID_RULES[field]
    if re.fullmatch(f"[A-Za-z0-9][{chars}]{{0,{longest - 1}}}", value):
        return value
    odd = next((c for c in value if not re.fullmatch(f"[{chars}]", c)), None)
    problem = (f"the character {char_name(odd)}" if odd else
               "no characters" if not value else f"more than {longest} characters" if len(value) > longest
               else "a first character that is not an ASCII letter or digit")
    allowed = chars.replace("\\", "").replace(" ", "space ")
    raise ValueError(f"{quote(value, 40)} has {problem}: IDs use [{allowed}] only "
                     "(look-alike and invisible characters are refused)")


class DeletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str = Field(default_factory=new_request_id)
    model: str = Field(min_length=1, max_length=128)
    kind: Literal["samples", "subject", "class", "concept"]
    sample_ids: list[str] | None = None
    subject_id: str | None = None
    class_label: int | str | None = None
    concept: str | None = None
    requester: str = ""
    reason: str = ""
    received_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("request_id", "model", "subject_id")
    @classmethod
    def _safe_id(cls, v: str | None, info) -> str | None:
        return v if v is None else _check_id(info.field_name, v)

    @field_validator("sample_ids")
    @classmethod
    def _safe_sample_ids(cls, v: list[str] | None) -> list[str] | None:
        return v if v is None else [_check_id("sample_ids", i) for i in v]

    @field_validator("class_label")
    @classmethod
    def _safe_class(cls, v: int | str | None) -> int | str | None:
        return _check_id("class_label", v) if isinstance(v, str) else v

    @field_validator("concept")
    @classmethod
    def _normal_concept(cls, v: str | None) -> str | None:
        if v is None:
            return v
        bad = bad_char(v)
        if bad:
            raise ValueError(f"{quote(v, 40)} holds the control or invisible character {bad}")
        return nfkc(v)

    @field_validator("received_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return v if v.tzinfo else v.replace(tzinfo=UTC)

    @model_validator(mode="after")
    def _target_matches_kind(self) -> DeletionRequest:
        given = {f: getattr(self, f) is not None for f in TARGET_FIELD.values()}
        needed = TARGET_FIELD[self.kind]
        if not given[needed]:
            raise ValueError(f"kind '{self.kind}' needs '{needed}'")
        extra = [k for k, v in given.items() if v and k != needed]
        if extra:
            raise ValueError(f"kind '{self.kind}' takes only '{needed}', not {extra}")
        if self.kind == "samples":
            if not self.sample_ids or any(not isinstance(i, str) or not i for i in self.sample_ids):
                raise ValueError("'sample_ids' must be a non-empty list of sample IDs")
            if len(set(self.sample_ids)) != len(self.sample_ids):
                raise ValueError("'sample_ids' lists an ID twice")
        if self.kind == "subject" and not self.subject_id:
            raise ValueError("'subject_id' must not be empty")
        if self.kind == "concept" and not self.concept.strip():  # type: ignore[union-attr]
            raise ValueError("'concept' must not be empty")
        return self

    def to_json(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json(exclude_none=True))


def _format(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        where = ".".join(quote(p, 30) if isinstance(p, str) and not p.isidentifier() else str(p)
                         for p in err["loc"]) or "request"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts) + (f"; and {e.error_count() - 5} more" if e.error_count() > 5 else "")


def claimed_id(data: Any) -> str | None:
    """The request_id a document claims, when it is a well-formed one."""
    rid = data.get("request_id") if isinstance(data, dict) else None
    return rid if isinstance(rid, str) and re.fullmatch(REQUEST_ID_PATTERN, rid) else None


def to_request(data: Any) -> DeletionRequest:
    """Checked plain data (see `parse_document`) → a request, or RequestError naming what is wrong."""
    if not isinstance(data, dict):
        raise RequestError(f"a request must be a JSON/YAML object, got {type(data).__name__}")
    try:
        return DeletionRequest.model_validate(data)
    except ValidationError as e:
        raise RequestError(f"invalid request: {_format(e)}") from e
    except (TypeError, ValueError) as e:  # pydantic wraps most, but not every, conversion error
        raise RequestError(f"invalid request: {quote(str(e), 200)}") from e


def parse_request(document: Document, limits: IntakeLimits | None = None) -> DeletionRequest:
    """Parse one JSON/YAML document (bytes, text or already-decoded data) within `limits` into a
    request, or raise RequestError."""
    return to_request(parse_document(document, limits))


def resolve(request: DeletionRequest, store: SampleStore) -> list[str]:
    """The training sample IDs a request asks to forget, or RequestError naming the problem."""
    active = set(store.active_ids())
    if request.kind == "samples":
        ids = list(request.sample_ids or [])
        unknown = store.unknown_ids(ids)
        if unknown:
            raise RequestError(f"unknown sample IDs: {unknown[:5]}" + (" …" if len(unknown) > 5 else ""))
        gone = [i for i in ids if i not in active and store.index.loc[i, "purged"]]
        if gone:
            raise RequestError(f"already forgotten: {gone[:5]}")
        not_train = [i for i in ids if i not in active]
        if not_train:
            raise RequestError(f"not in the active training manifest (never trained on): {not_train[:5]}")
        return ids
    if request.kind == "subject":
        owned = store.subject_ids(request.subject_id or "")
        if not owned:
            raise RequestError(f"unknown data subject {request.subject_id!r}")
        return _still_active(owned, active, f"data subject {request.subject_id!r}")
    if request.kind == "concept":
        try:
            about = group_ids(store, request.concept or "")
        except StoreError as e:
            raise RequestError(f"this model's data has no entities to forget by concept (no {GROUPS_FILE})") from e
        if not about:
            raise RequestError(f"unknown concept {request.concept!r}: no training sample is about it")
        return _still_active(about, active, f"concept {request.concept!r}")
    try:
        label = store.class_index(request.class_label)  # type: ignore[arg-type]
    except StoreError as e:
        raise RequestError(str(e)) from e
    return _still_active(store.class_ids(label), active, f"class {store.classes[label]!r} ({label})")


def _still_active(ids: list[str], active: set[str], what: str) -> list[str]:
    """The IDs still in the active manifest, or RequestError: `what` was forgotten already."""
    live = [i for i in ids if i in active]
    if not live:
        raise RequestError(f"{what} is already forgotten")
    return live
