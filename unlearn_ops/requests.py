"""Deletion requests: the schema (pydantic), parsing with specific errors, resolution to sample IDs.

A request names a registered model and what to forget:

    {"request_id": "req-0001", "model": "fmnist-classifier", "kind": "subject", "subject_id": "subj-00042",
     "requester": "...", "reason": "...", "received_at": "2026-11-29T10:00:00Z"}

`kind` is `samples` (with `sample_ids`), `subject` (with `subject_id`), `class` (with
`class_label`, an index or a class name) or `concept` (with `concept`, an entity of the model's
store, e.g. a movie name: every training sample about it; the store's `groups.csv`, see
`unlearn_ops.data.text_store`). `request_id` and `received_at` are filled in when absent.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from unlearn_ops.data.store import SampleStore, StoreError
from unlearn_ops.data.text_store import GROUPS_FILE, group_ids

KINDS = ("samples", "subject", "class", "concept")
# the field that names what to forget, per kind
TARGET_FIELD = {"samples": "sample_ids", "subject": "subject_id", "class": "class_label", "concept": "concept"}


class RequestError(ValueError):
    """A request that cannot be accepted; the message is the reason kept in the ledger."""


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:12]}"


# What a request ID may look like: it names files and ledger rows, so plain ASCII only.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class DeletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str = Field(default_factory=new_request_id, pattern=REQUEST_ID_PATTERN)
    model: str = Field(min_length=1, max_length=128)
    kind: Literal["samples", "subject", "class", "concept"]
    sample_ids: list[str] | None = None
    subject_id: str | None = None
    class_label: int | str | None = None
    concept: str | None = None
    requester: str = ""
    reason: str = ""
    received_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

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
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "request"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_request(document: str | bytes | dict[str, Any]) -> DeletionRequest:
    """Parse one JSON/YAML document (text or already-decoded) into a request, or raise RequestError."""
    data: Any = document
    if isinstance(document, bytes):
        try:
            document = document.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(f"not UTF-8 text: {e}") from e
    if isinstance(document, str):
        if not document.strip():
            raise RequestError("empty document")
        try:
            data = yaml.safe_load(document)  # YAML is a superset of JSON
        except yaml.YAMLError as e:
            raise RequestError(f"not valid JSON or YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise RequestError(f"a request must be a JSON/YAML object, got {type(data).__name__}")
    try:
        return DeletionRequest.model_validate(data)
    except ValidationError as e:
        raise RequestError(f"invalid request: {_format(e)}") from e
    except (TypeError, ValueError) as e:  # pydantic wraps most, but not every, conversion error
        raise RequestError(f"invalid request: {e}") from e


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
