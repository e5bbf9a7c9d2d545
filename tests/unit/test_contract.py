"""The contract: committed schemas match the models, and every fixture is what it claims to be."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from shared.events.models import MODEL_OF_TOPIC
from shared.events.schemas import SCHEMAS_DIR, asyncapi_document, stale_schemas
from shared.events.topics import ALL_TOPICS, SERVICE_INPUTS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
EXPECTED: dict[str, dict[str, object]] = json.loads((FIXTURES / "expected.json").read_text())


def test_committed_schemas_match_the_models() -> None:
    assert stale_schemas() == [], "run `make schemas` and commit the result"


def test_every_topic_has_a_schema_file_and_an_asyncapi_channel() -> None:
    assert {p.name.removesuffix(".json") for p in (SCHEMAS_DIR / "events").glob("*.json")} == set(ALL_TOPICS)
    doc = asyncapi_document()
    assert {c["address"] for c in doc["channels"].values()} == set(ALL_TOPICS)
    receivers = {op["channel"]["$ref"] for op in doc["operations"].values() if op["action"] == "receive"}
    for inputs in SERVICE_INPUTS.values():
        for topic in inputs:
            assert f"#/channels/{topic.replace('.', '_')}" in receivers


def test_every_fixture_is_listed_with_its_expected_outcome() -> None:
    on_disk = {str(p.relative_to(FIXTURES)) for p in FIXTURES.glob("*/*.json")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_matches_its_model_and_the_committed_schema(name: str) -> None:
    topic = name.split("/")[0]
    model = MODEL_OF_TOPIC[topic]
    raw = (FIXTURES / name).read_text()
    schema = json.loads((SCHEMAS_DIR / "events" / f"{topic}.json").read_text())
    if EXPECTED[name].get("invalid"):
        with pytest.raises(ValidationError):
            model.model_validate_json(raw)
        return
    model.model_validate_json(raw)
    jsonschema.validate(json.loads(raw), schema)


def test_readme_documents_every_setting() -> None:
    from shared.settings import Settings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [
        f"LMGPA_{name.upper()}" for name in Settings.model_fields if f"LMGPA_{name.upper()}" not in readme
    ]
    assert missing == []
    head = "\n".join(readme.splitlines()[:20])
    assert "make demo" in head and "make test" in head
