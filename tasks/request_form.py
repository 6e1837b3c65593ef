"""The `requests` parameter of the deletion_batch flow as the Prefect UI draws it: one form per
request (Custom run → requests → Add item) with the kind to choose, the model, the field that
names what to forget, and a description under each.

The form checks the shape only (kind, model, types). What makes a request valid — ID character
sets, the target field matching the kind, the target existing in the model's data — is checked
by the intake (unlearn_ops.requests.DeletionRequest, then Great Expectations), which records a
failing request in the ledger as `rejected` with its reason, like an inbox file."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from unlearn_ops.requests import KINDS


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # a `null` default would be posted, and fail the field's own type


def optional(description: str) -> Any:
    """An optional field: absent unless filled in (the UI leaves a field without a default out)."""
    return Field(None, description=description, json_schema_extra=_no_default)


def _positions(schema: dict[str, Any]) -> None:
    """The form's field order: a server on PostgreSQL stores the schema as JSONB, which reorders
    keys, and the UI orders a form's fields by `position` when they have one."""
    for i, prop in enumerate(schema.get("properties", {}).values()):
        prop["position"] = i


class RequestForm(BaseModel):
    """A deletion request: kind + model + the one field its kind needs."""

    model_config = ConfigDict(extra="forbid", title="Deletion request", json_schema_extra=_positions)

    kind: Literal[KINDS] = Field(  # type: ignore[valid-type]
        description="What to forget. `class`: every training sample of a class (fill class_label); `subject`: "
                    "a data subject's samples (subject_id); `concept`: every sample about an entity, e.g. a movie "
                    "(concept); `samples`: listed sample IDs (sample_ids).")
    model: str = Field(description="The served model that must forget, by its registered name "
                                   "(params.yaml `models`), e.g. fmnist-classifier.")
    class_label: int | str | SkipJsonSchema[None] = optional(
        "kind `class`: the class, by name (e.g. Dress) or index (e.g. 3).")
    subject_id: str | SkipJsonSchema[None] = optional(
        "kind `subject`: the data subject's ID in the model's sample store, e.g. subj-00042.")
    concept: str | SkipJsonSchema[None] = optional(
        "kind `concept`: the entity every sample about which is forgotten, e.g. a movie's name.")
    sample_ids: list[str] | SkipJsonSchema[None] = optional(
        "kind `samples`: the IDs of the training samples to forget.")
    request_id: str | SkipJsonSchema[None] = optional(
        "Your reference for the request (letters, digits, . _ -); one is made up when empty. "
        "The ledger, the registry and the certificate name it.")
    requester: str = Field("", description="Who asked (recorded in the ledger).")
    reason: str = Field("", description="Why, e.g. consent withdrawn or licence ended (recorded in the ledger).")
    received_at: datetime | SkipJsonSchema[None] = optional(
        "When the request was received (UTC when no zone is given); empty: now.")

    def document(self) -> dict[str, Any]:
        """The request document the intake validates: the fields given, empty ones left out."""
        return {k: v for k, v in self.model_dump(mode="json").items() if v not in (None, "", [])}


def documents(requests: Sequence[Any] | None) -> list[Any]:
    """Request documents from the flow parameter: forms as documents; anything else (a plain dict
    from an in-process caller) as given, for the intake to judge."""
    return [r.document() if isinstance(r, RequestForm) else r for r in requests or []]
