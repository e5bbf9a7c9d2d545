"""The contract as files: a JSON Schema per event and one AsyncAPI 3.0 document, generated from the models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.events import topics
from shared.events.models import MODEL_OF_TOPIC, SCHEMA_VERSION

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def event_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of each topic's event, keyed by file name."""
    out = {}
    for topic, model in MODEL_OF_TOPIC.items():
        schema = model.model_json_schema(mode="serialization")
        schema["$id"] = f"https://schemas.littlemonstergpa.dev/events/{topic}.json"
        schema["x-topic"] = topic
        schema["x-kafka-key"] = "the source id (UUID as text)"
        out[f"events/{topic}.json"] = schema
    return out


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document: channels are topics; each service's operations receive or send."""
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic, model in MODEL_OF_TOPIC.items():
        name = model.__name__
        channel_id = topic.replace(".", "_")
        schema = model.model_json_schema(mode="serialization", ref_template="#/components/schemas/{model}")
        for def_name, definition in schema.pop("$defs", {}).items():
            messages.setdefault("__schemas__", {})[def_name] = definition
        messages.setdefault("__schemas__", {})[name] = schema
        messages[name] = {
            "name": name,
            "title": name,
            "summary": (model.__doc__ or "").strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{name}"},
            "bindings": {"kafka": {"key": {"type": "string", "format": "uuid", "description": "source id"}}},
        }
        channels[channel_id] = {
            "address": topic,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        for service in topics.PRODUCERS.get(topic, ()):
            operations[f"{service}_sends_{channel_id}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "summary": f"{service} publishes {name}",
            }
    for service, inputs in topics.SERVICE_INPUTS.items():
        for topic in inputs:
            channel_id = topic.replace(".", "_")
            operations[f"{service}_receives_{channel_id}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "summary": f"{service} consumes it (group lmgpa.{service})",
            }
    schemas = messages.pop("__schemas__")
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Little Monster GPA ingestion pipeline",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Events between the backend and the upload, transcription, OCR, chunking, "
            "embedding and indexing workers. Every message is keyed by its source id.",
        },
        "defaultContentType": "application/json",
        "servers": {"kafka": {"host": "kafka:9092", "protocol": "kafka"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def rendered() -> dict[str, str]:
    """Every generated file's relative path and text."""
    files = {path: _dump(schema) for path, schema in event_schemas().items()}
    files["asyncapi.json"] = _dump(asyncapi_document())
    return files


def write_schemas(directory: Path = SCHEMAS_DIR) -> list[Path]:
    """Write the generated files; returns their paths."""
    written = []
    for relative, text in rendered().items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def stale_schemas(directory: Path = SCHEMAS_DIR) -> list[str]:
    """Generated files that are missing or differ from the models."""
    return [
        rel
        for rel, text in rendered().items()
        if not (directory / rel).exists() or (directory / rel).read_text() != text
    ]
