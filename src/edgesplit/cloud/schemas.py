"""OpenAPI descriptions of the request bodies the routes read by hand (JSON or binary)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from edgesplit.cloud.decoding import OffloadRequest
from edgesplit.wire.protocol import InferenceRequest


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` inlined, as OpenAPI request bodies need."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined


INFER_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": inline_schema(InferenceRequest)},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
OFFLOAD_BODY_SCHEMA = {
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": inline_schema(OffloadRequest)}}}
}
