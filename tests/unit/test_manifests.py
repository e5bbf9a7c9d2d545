"""Every manifest in deploy/k8s validated offline against the Kubernetes and KEDA JSON schemas, and the KEDA
ScaledObjects checked against the pipeline's own topics, consumer groups and partition counts.

Kubernetes schemas: the `kubernetes-validate` package (PyPI) ships them; its *strict* variant refuses unknown
fields, so a misspelt key fails too. KEDA's ScaledObject: the CRD's openAPIV3Schema vendored in
tests/fixtures/schemas (origin and licence in the file), made strict the same way here.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from shared.broker import group_id
from shared.events.topics import SERVICE_INPUTS, SERVICES
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
TOPICS = ROOT / "deploy" / "topics.yaml"
KEDA_SCHEMA = ROOT / "tests" / "fixtures" / "schemas" / "keda-scaledobject-v1alpha1.json"
KUBERNETES_VERSION = "1.31"
"""The oldest Kubernetes the manifests must run on (policy/v1 PDBs, autoscaling/v2 HPAs are GA there)."""

KAFKA_TRIGGER_PARAMETERS = frozenset(
    {
        "bootstrapServers",
        "consumerGroup",
        "topic",
        "partitionLimitation",
        "lagThreshold",
        "activationLagThreshold",
        "offsetResetPolicy",
        "allowIdleConsumers",
        "excludePersistentLag",
        "scaleToZeroOnInvalidOffset",
        "limitToPartitionsWithLag",
        "ensureEvenDistributionOfPartitions",
        "version",
        "tls",
        "unsafeSsl",
        "sasl",
        "saslTokenProvider",
    }
)
"""Trigger metadata names KEDA's Kafka scaler reads (pkg/scalers/kafka_scaler.go, kedacore/keda v2.20.2; the
ones that may come from the target's environment also take a `FromEnv` suffix)."""
FROM_ENV = frozenset({"bootstrapServers", "consumerGroup", "topic"})


def _documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, document) for every document the kustomization applies."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        for doc in _documents((K8S / name).read_text()):
            yield name, doc


def _strict(schema: Any) -> Any:
    """A copy in which an object schema listing its properties refuses any other (as kubectl's field validation
    does for a CRD: unknown fields are an error, not silently pruned)."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def keda_validator() -> jsonschema.protocols.Validator:
    """A validator for ScaledObjects from the vendored CRD schema."""
    schema = _strict(json.loads(KEDA_SCHEMA.read_text())["schema"])
    # The CRD schema describes metadata as a bare object (the API server checks it): check what kubectl would.
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": False,
    }
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator_class.check_schema(schema)
    return validator_class(schema)


def validate(doc: dict[str, Any]) -> None:
    """Raise if a document does not match its schema (Kubernetes built-in kinds, KEDA's ScaledObject)."""
    if doc.get("apiVersion") == "keda.sh/v1alpha1" and doc.get("kind") == "ScaledObject":
        keda_validator().validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def scaled_objects() -> dict[str, dict[str, Any]]:
    """The ScaledObjects, by the Deployment each scales."""
    return {
        doc["spec"]["scaleTargetRef"]["name"]: doc for _, doc in manifests() if doc["kind"] == "ScaledObject"
    }


@pytest.mark.parametrize(
    ("name", "doc"),
    [
        pytest.param(name, doc, id=f"{name}:{doc['kind']}/{doc['metadata']['name']}")
        for name, doc in manifests()
    ],
)
def test_manifest_matches_its_schema(name: str, doc: dict[str, Any]) -> None:
    validate(doc)


def test_every_kind_applied_has_a_schema() -> None:
    """No document escapes validation: each kind is a ScaledObject or has a Kubernetes schema."""
    kinds = {(doc["apiVersion"], doc["kind"]) for _, doc in manifests()}
    assert ("keda.sh/v1alpha1", "ScaledObject") in kinds
    for api_version, kind in kinds - {("keda.sh/v1alpha1", "ScaledObject")}:
        try:
            kubernetes_validate.validate(
                {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}, KUBERNETES_VERSION
            )
        except kubernetes_validate.ValidationError:
            pass  # a schema was found (and the bare document is incomplete): what this test asks
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"no schema for {api_version} {kind}: {error.message}")


@pytest.mark.parametrize(
    ("breakage", "path"),
    [
        ("a Deployment's container port as text", ("workers.yaml", "Deployment", "ports")),
        ("a misspelt field in a Deployment", ("workers.yaml", "Deployment", "typo")),
        ("a PodDisruptionBudget with no selector field name", ("pdb.yaml", "PodDisruptionBudget", "typo")),
        ("a ScaledObject without triggers", ("keda.yaml", "ScaledObject", "no-triggers")),
        ("a ScaledObject trigger metadata value as a number", ("keda.yaml", "ScaledObject", "int-lag")),
        ("a misspelt ScaledObject field", ("keda.yaml", "ScaledObject", "typo")),
    ],
)
def test_a_broken_manifest_fails(breakage: str, path: tuple[str, str, str]) -> None:
    """The validation has teeth: each breakage of a real manifest is refused."""
    file, kind, how = path
    doc = copy.deepcopy(next(d for n, d in manifests() if n == file and d["kind"] == kind))
    if kind == "Deployment":
        container = doc["spec"]["template"]["spec"]["containers"][0]
        if how == "ports":
            container["ports"][0]["containerPort"] = "eighty"
        else:
            container["readinesProbe"] = container.pop("readinessProbe")
    elif kind == "PodDisruptionBudget":
        doc["spec"]["selectr"] = doc["spec"].pop("selector")
    elif how == "no-triggers":
        del doc["spec"]["triggers"]
    elif how == "int-lag":
        doc["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 50
    else:
        doc["spec"]["maxReplicas"] = doc["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def test_one_kafka_lag_scaled_object_per_worker() -> None:
    scaled = scaled_objects()
    deployments = {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == "Deployment"}
    assert sorted(scaled) == sorted(f"lmgpa-{service}" for service in SERVICES)
    for target, doc in scaled.items():
        assert doc["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
        assert target in deployments, f"{target} scales no Deployment"
        assert "replicas" not in deployments[target]["spec"], f"{target}: KEDA owns the replica count"


def test_triggers_name_each_worker_group_and_topic() -> None:
    """A trigger per subscription, with the group the worker really joins (shared.broker.group_id)."""
    settings = Settings(consumer_group_prefix=_configured_prefix())
    for service, inputs in SERVICE_INPUTS.items():
        doc = scaled_objects()[f"lmgpa-{service}"]
        triggers = doc["spec"]["triggers"]
        assert all(trigger["type"] == "kafka" for trigger in triggers), service
        pairs = {(t["metadata"]["consumerGroup"], t["metadata"]["topic"]) for t in triggers}
        wanted = {(group_id(settings, service=service, topic=topic), topic) for topic in inputs}
        assert pairs == wanted, (
            f"{service}: triggers {sorted(pairs)} but the worker consumes {sorted(wanted)}"
        )
        for trigger in triggers:
            metadata = trigger["metadata"]
            for key in metadata:
                base = key.removesuffix("FromEnv")
                assert base in KAFKA_TRIGGER_PARAMETERS, f"{service}: {key} is no Kafka scaler parameter"
                assert key == base or base in FROM_ENV, f"{service}: {key} cannot come from the environment"
            assert "bootstrapServers" in metadata or "bootstrapServersFromEnv" in metadata, service
            assert int(metadata["lagThreshold"]) > 0
            # The workers start a new group at the earliest offset (shared.broker.consumer_options).
            assert metadata.get("offsetResetPolicy") == "earliest", service


def test_bootstrap_servers_from_env_is_in_the_workers_environment() -> None:
    config = next(doc for _, doc in manifests() if doc["kind"] == "ConfigMap")["data"]
    for trigger in (t for doc in scaled_objects().values() for t in doc["spec"]["triggers"]):
        name = trigger["metadata"].get("bootstrapServersFromEnv")
        if name is not None:
            assert name in config, f"{name} is not in the ConfigMap the workers load"


def test_max_replicas_at_most_the_partition_count() -> None:
    """A consumer beyond its topic's partition count sits idle: no ScaledObject scales past it."""
    partitions = {t["name"]: int(t["partitions"]) for t in yaml.safe_load(TOPICS.read_text())["topics"]}
    for target, doc in scaled_objects().items():
        topics = [t["metadata"]["topic"] for t in doc["spec"]["triggers"]]
        bound = min(partitions[topic] for topic in topics)
        spec = doc["spec"]
        assert 1 <= spec.get("minReplicaCount", 0) <= spec["maxReplicaCount"] <= bound, (
            f"{target}: {spec.get('minReplicaCount')}..{spec['maxReplicaCount']} replicas for {bound} partitions"
        )


def test_no_cpu_autoscaler_on_a_worker() -> None:
    """KEDA creates each worker's HPA: a second one on the same Deployment would fight it."""
    scaled = set(scaled_objects())
    for _, doc in manifests():
        if doc["kind"] == "HorizontalPodAutoscaler":
            assert doc["spec"]["scaleTargetRef"]["name"] not in scaled, doc["metadata"]["name"]


def test_a_disruption_budget_per_deployment() -> None:
    documents = [doc for _, doc in manifests()]
    budgets = [doc for doc in documents if doc["kind"] == "PodDisruptionBudget"]
    for deployment in (doc for doc in documents if doc["kind"] == "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, f"{deployment['metadata']['name']}: {len(covering)} disruption budgets"


def _configured_prefix() -> str:
    config = next(doc for _, doc in manifests() if doc["kind"] == "ConfigMap")["data"]
    prefix: str = config.get("LMGPA_CONSUMER_GROUP_PREFIX", Settings().consumer_group_prefix)
    return prefix
