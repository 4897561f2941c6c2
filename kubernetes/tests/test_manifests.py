"""Checks that the rendered Kubernetes manifests agree with each other, with the image, with
the CI workflow and with the service itself, that the NetworkPolicies confine every billing pod,
and that what the build pulls in (actions, base images) is pinned.

Run by .ci/deploy-check (`pytest kubernetes/tests`), which puts kubectl on PATH and sets
BILLING_SERVICE_BIN to a built `billing-service` so the probe paths are requested from the real
service. Without BILLING_SERVICE_BIN that one test is skipped, except under CI=true, where it fails.

The README's configuration table is read for the variables the service requires. The
supply-chain tests read .github/workflows, .github/dependabot.yml and the Dockerfile.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "kubernetes"
ENVIRONMENTS = ("staging", "production")
PROJECT = "billing"
# What the ExternalSecret must put in the Secret; the rest of the configuration is not secret.
SECRET_KEYS = {"STRIPE_API_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "DATABASE_USERNAME", "DATABASE_PASSWORD"}
WORKLOAD_KINDS = ("Deployment", "Job", "CronJob")
IN_CI = os.environ.get("CI", "").lower() == "true"


# ---------------------------------------------------------------------------------------------
# Rendering and reading


def kubectl() -> str:
    path = shutil.which("kubectl")
    if not path:
        pytest.fail("kubectl is not on PATH (.ci/deploy-check installs it)")
    return path


@functools.cache
def rendered_text(env: str) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(KUBERNETES / "overlays" / env)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize overlays/{env} failed:\n{result.stderr}")
    return result.stdout


def load_all(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


class Manifests:
    """One overlay's rendered resources, with lookups by kind."""

    def __init__(self, docs: list[dict]):
        self.docs = docs

    def all(self, kind: str) -> list[dict]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str) -> dict:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, found {[d['metadata']['name'] for d in found]}"
        return found[0]

    def workloads(self) -> list[tuple[str, dict]]:
        """(kind/name, pod template) of everything that runs the image."""
        out = []
        for doc in self.docs:
            if doc["kind"] in ("Deployment", "Job"):
                template = doc["spec"]["template"]
            elif doc["kind"] == "CronJob":
                template = doc["spec"]["jobTemplate"]["spec"]["template"]
            else:
                continue
            out.append((f"{doc['kind']}/{doc['metadata']['name']}", template))
        return out

    def configmap(self, name: str) -> dict:
        found = [cm for cm in self.all("ConfigMap") if cm["metadata"]["name"] == name]
        assert found, f"no ConfigMap {name} in the rendered output"
        return found[0]

    def generated(self, name: str) -> dict:
        """The ConfigMap a configMapGenerator named `name` (its rendered name has a hash suffix)."""
        found = [
            cm for cm in self.all("ConfigMap") if re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", cm["metadata"]["name"])
        ]
        assert len(found) == 1, f"expected one ConfigMap generated as {name}, found {[c['metadata']['name'] for c in found]}"
        return found[0]

    def config(self) -> dict:
        """The configuration every workload reads (billing-config)."""
        return self.generated("billing-config")["data"]

    def secret_keys(self, name: str) -> set[str]:
        """Keys of the Secret `name`, as the ExternalSecret that writes it declares them."""
        writers = [
            es
            for es in self.all("ExternalSecret")
            if es["spec"].get("target", {}).get("name", es["metadata"]["name"]) == name
        ]
        assert len(writers) == 1, f"expected one ExternalSecret writing Secret {name}, found {len(writers)}"
        return {item["secretKey"] for item in writers[0]["spec"]["data"]}


@functools.cache
def _manifests(env: str) -> Manifests:
    return Manifests(load_all(rendered_text(env)))


@pytest.fixture(params=ENVIRONMENTS)
def env(request) -> str:
    return request.param


@pytest.fixture
def manifests(env) -> Manifests:
    return _manifests(env)


def containers(template: dict) -> list[dict]:
    """Init containers, then containers."""
    return template["spec"].get("initContainers", []) + template["spec"]["containers"]


def provided_env(manifests: Manifests, container: dict) -> set[str]:
    """Every variable the container gets: envFrom ConfigMaps and Secrets, and env entries."""
    names = {item["name"] for item in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(manifests.configmap(source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            names |= manifests.secret_keys(source["secretRef"]["name"])
    return names


def selects(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) or a Service's plain selector map."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# The README: the variables the service requires


def required_variables() -> set[str]:
    """Variables the README's configuration table marks `required`, plus, for Kubernetes (no
    DATABASE_URL), the DATABASE_* parts the URL is built from (the row naming DATABASE_HOST)."""
    required, database_parts = set(), set()
    for line in (REPO / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        if cells[1].lower() == "required":
            required.update(names)
        if "DATABASE_HOST" in names:
            database_parts.update(n for n in names if n.startswith("DATABASE_"))
    assert required, "the README's configuration table marks no variable `required`: has its format changed?"
    assert database_parts, "the README names no DATABASE_* parts of the URL: has its format changed?"
    return required | database_parts


def test_readme_is_read_as_expected():
    required = required_variables()
    assert {"STRIPE_API_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "DATABASE_HOST", "DATABASE_PASSWORD"} <= required


# ---------------------------------------------------------------------------------------------
# The Deployment and the migration Job run the same thing


def test_every_workload_runs_the_same_image(manifests):
    images = {
        name: {c["image"] for c in containers(template)} for name, template in manifests.workloads()
    }
    kinds = {name.split("/")[0] for name in images}
    assert set(WORKLOAD_KINDS) <= kinds, f"missing workloads: {images}"
    all_images = set().union(*images.values())
    assert len(all_images) == 1, f"workloads disagree on the image: {images}"
    deployment = manifests.one("Deployment")
    job = manifests.one("Job")
    assert {c["image"] for c in containers(deployment["spec"]["template"])} == {
        c["image"] for c in containers(job["spec"]["template"])
    }
    (image,) = all_images
    assert not image.endswith(":latest") and image.split("/")[-1] != PROJECT, f"unpinned image {image}"


def test_every_workload_reads_the_same_configmap(manifests):
    """billing-config reaches every workload; billing-auth (AUTH_*) the server alone."""
    shared = manifests.generated("billing-config")["metadata"]["name"]
    auth = manifests.generated("billing-auth")["metadata"]["name"]
    for name, template in manifests.workloads():
        for container in containers(template):
            refs = [s["configMapRef"]["name"] for s in container.get("envFrom", []) if "configMapRef" in s]
            expected = [shared, auth] if name.startswith("Deployment/") else [shared]
            assert refs == expected, f"{name}/{container['name']} reads the ConfigMaps {refs}, not {expected}"


def secrets_reaching(manifests: Manifests, container: dict) -> set[str]:
    """The Secret keys a container gets, whole Secrets (envFrom) or single keys (env)."""
    keys = set()
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            keys |= manifests.secret_keys(source["secretRef"]["name"])
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            keys.add(ref["key"])
    return keys


def test_stripe_secrets_reach_only_what_calls_stripe(manifests):
    """The server gets both Stripe secrets; the CronJob's `sync events` the API key alone; the
    migration Job and every other container only the database's credentials."""
    database = {"DATABASE_USERNAME", "DATABASE_PASSWORD"}
    for name, template in manifests.workloads():
        for container in containers(template):
            keys = secrets_reaching(manifests, container)
            if name.startswith("Deployment/"):
                assert {"STRIPE_API_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"} <= keys, name
            elif container.get("args", [])[:2] == ["sync", "events"]:
                assert keys == database | {"STRIPE_API_SECRET_KEY"}, f"{name}: {sorted(keys)}"
            else:
                assert keys == database, f"{name}/{container['name']}: {sorted(keys)}"


def test_migration_job(manifests):
    job = manifests.one("Job")
    assert job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert isinstance(spec.get("backoffLimit"), int)
    assert isinstance(spec.get("ttlSecondsAfterFinished"), int)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container.get("command") is None, "the image's entrypoint is billing-service"
    assert container["args"] == ["migrate"]


def test_cronjob_is_suspended_and_recovers_then_replays(manifests):
    cronjob = manifests.one("CronJob")
    assert cronjob["apiVersion"] == "batch/v1"
    assert cronjob["spec"]["suspend"] is True
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (sync,) = pod["initContainers"]
    (replay,) = pod["containers"]
    for container in (sync, replay):
        assert container.get("command") is None
    # Stripe retries a delivery for three days: what is older than that was lost.
    assert sync["args"] == ["sync", "events", "--since", "3d"]
    assert replay["args"] == ["events", "replay", "--failed"]


# ---------------------------------------------------------------------------------------------
# Configuration: every required variable reaches every workload, secrets only from the Secret


def test_required_variables_are_provided_to_every_workload(manifests):
    required = required_variables()
    for name, template in manifests.workloads():
        # `migrate` and `events` read the database settings only.
        needed = required if name.startswith("Deployment/") else {
            v for v in required if v.startswith("DATABASE_")
        }
        for container in containers(template):
            missing = needed - provided_env(manifests, container)
            assert not missing, f"{name}: {sorted(missing)} provided by neither the ConfigMap nor the Secret"


def test_pod_name_comes_from_the_downward_api(manifests):
    for name, template in manifests.workloads():
        for container in containers(template):
            pod_name = [e for e in container.get("env", []) if e["name"] == "POD_NAME"]
            assert pod_name == [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
            ], name


def test_secrets_only_in_the_secret(manifests):
    for configmap in manifests.all("ConfigMap"):
        name = configmap["metadata"]["name"]
        assert not SECRET_KEYS & set(configmap["data"]), f"a secret value is in the ConfigMap {name}"
        assert not {k for k in configmap["data"] if re.search(r"SECRET|PASSWORD|TOKEN", k)}, name
    assert manifests.secret_keys("billing-secrets") == SECRET_KEYS


def test_configuration_values_suit_the_service(manifests, env):
    data = manifests.config()
    assert data["DATABASE_ENGINE"] == "postgres"
    assert int(data["DATABASE_PORT"]) > 0
    assert data["LOG_FORMAT"] == "json"
    for key in ("FRONTEND_URL", "BACKEND_URL"):
        assert data[key].startswith("https://"), f"{key} should be https in {env}"
    assert ".invalid" not in rendered_text(env), f"overlays/{env} leaves a base placeholder unset"
    (container,) = containers(manifests.one("Deployment")["spec"]["template"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(data["SERVER_PORT"]) == ports["http"], "SERVER_PORT and the `http` containerPort differ"


def test_database_tls_is_verified_in_production_with_the_ca_mounted_everywhere(manifests, env):
    data = manifests.config()
    if env == "production":
        assert data.get("DATABASE_SSLMODE") == "verify-full", "production must verify the database"
    root = data.get("DATABASE_SSL_ROOT_CERT")
    if root is None:
        return
    folder = root.rsplit("/", 1)[0]
    for name, template in manifests.workloads():
        for container in containers(template):
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert folder in mounts, f"{name}/{container['name']} does not mount {folder}, where DATABASE_SSL_ROOT_CERT is"
            volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
            volume = volumes[mounts[folder]]
            assert volume.get("configMap", {}).get("name") == "rds-ca-bundle", f"{name}: {volume}"


def test_external_secret(manifests, env):
    external_secret = manifests.one("ExternalSecret")
    assert external_secret["apiVersion"] == "external-secrets.io/v1"  # v1beta1: not served since ESO 0.17
    spec = external_secret["spec"]
    assert spec["refreshInterval"] == "15s"
    assert spec["secretStoreRef"]["kind"] == "ClusterSecretStore"
    key = f"{PROJECT}/application/{env}/{PROJECT}"
    for item in spec["data"]:
        assert item["remoteRef"]["key"] == key, item
        # The JSON key in Secrets Manager is the variable's own name (the README, "Deploying").
        assert item["remoteRef"]["property"] == item["secretKey"], item


def test_environments_do_not_collide():
    namespaces = {env: {d["metadata"].get("namespace") for d in _manifests(env).docs} for env in ENVIRONMENTS}
    for env, found in namespaces.items():
        assert len(found) == 1 and None not in found, f"{env}: resources in {found}"
    assert len({next(iter(ns)) for ns in namespaces.values()}) == len(ENVIRONMENTS)


def test_external_secret_schema_is_not_vacuous():
    """The schema .ci/deploy-check applies accepts ours and rejects what it is there to catch."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((KUBERNETES / "schemas" / "external-secret.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = _manifests("staging").one("ExternalSecret")
    assert not list(validator.iter_errors(good))

    def broken(change) -> dict:
        doc = copy.deepcopy(good)
        change(doc)
        return doc

    bad = {
        "v1beta1": broken(lambda d: d.update(apiVersion="external-secrets.io/v1beta1")),
        "no refresh": broken(lambda d: d["spec"].pop("refreshInterval")),
        "bad refresh": broken(lambda d: d["spec"].update(refreshInterval="15 seconds")),
        "typo": broken(lambda d: d["spec"].update(refreshIntervall="15s")),
        "other key": broken(lambda d: d["spec"]["data"][0]["remoteRef"].update(key="billing/prod/billing")),
        "store kind": broken(lambda d: d["spec"]["secretStoreRef"].update(kind="Vault")),
    }
    for what, doc in bad.items():
        assert list(validator.iter_errors(doc)), f"the schema accepts an ExternalSecret with {what}"


# ---------------------------------------------------------------------------------------------
# Identity: every overlay says how the server learns who is asking; only the server is told

AUTH_MODES = {"jwt", "trusted-headers"}
JWT_SETTINGS = ("AUTH_JWKS_URL", "AUTH_ISSUER", "AUTH_AUDIENCE")
# Environments exposed to the internet: the service checks the tokens itself.
JWT_ENVIRONMENTS = {"staging", "production"}


def env_values(manifests: Manifests, container: dict) -> dict[str, str | None]:
    """Every variable the container gets, with its value (None when it comes from a Secret or
    from a reference the manifests do not resolve)."""
    values: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            values.update(manifests.configmap(source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            values.update(dict.fromkeys(manifests.secret_keys(source["secretRef"]["name"])))
    for item in container.get("env", []):
        values[item["name"]] = item.get("value")
    return values


def test_every_overlay_sets_the_auth_mode(manifests, env):
    (container,) = containers(manifests.one("Deployment")["spec"]["template"])
    values = env_values(manifests, container)
    mode = values.get("AUTH_MODE")
    assert mode in AUTH_MODES, f"overlays/{env} sets AUTH_MODE={mode!r}, not one of {sorted(AUTH_MODES)}"
    if env in JWT_ENVIRONMENTS:
        assert mode == "jwt", f"overlays/{env} must check tokens itself (AUTH_MODE=jwt), not {mode!r}"
    if mode == "jwt":
        missing = [key for key in JWT_SETTINGS if not values.get(key)]
        assert not missing, f"overlays/{env}: AUTH_MODE=jwt without {missing}"
        assert values["AUTH_JWKS_URL"].startswith("https://"), f"{env}: AUTH_JWKS_URL must be https"


def test_only_the_server_gets_the_auth_settings(manifests):
    """The migration Job and the CronJob authenticate nobody: no AUTH_* reaches them."""
    for name, template in manifests.workloads():
        if name.startswith("Deployment/"):
            continue
        for container in containers(template):
            auth = sorted(key for key in env_values(manifests, container) if key.startswith("AUTH_"))
            assert not auth, f"{name} gets {auth}"


# ---------------------------------------------------------------------------------------------
# Selectors: the PDB, the Service and the HPA find the server pods, and only them


def test_pdb_selects_the_server_pods_only(manifests):
    pdb = manifests.one("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    selector = pdb["spec"]["selector"]
    assert selector.get("matchLabels") or selector.get("matchExpressions"), "an empty PDB selector"
    deployment = manifests.one("Deployment")
    assert selects(selector, deployment["spec"]["template"]["metadata"]["labels"]), (
        f"PDB selector {selector} matches none of the Deployment's pods"
    )
    for name, template in manifests.workloads():
        if not name.startswith("Deployment/"):
            assert not selects(selector, template["metadata"]["labels"]), f"the PDB also selects {name}'s pods"


def test_pdb_leaves_room_for_a_drain(manifests):
    pdb = manifests.one("PodDisruptionBudget")["spec"]
    min_replicas = manifests.one("HorizontalPodAutoscaler")["spec"]["minReplicas"]
    if "minAvailable" in pdb:
        assert isinstance(pdb["minAvailable"], int) and pdb["minAvailable"] < min_replicas
    else:
        assert pdb["maxUnavailable"] not in (0, "0%")


def test_service_and_deployment_selectors(manifests):
    deployment = manifests.one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"], pod_labels)
    service = manifests.one("Service")
    assert selects(service["spec"]["selector"], pod_labels), "the Service selects none of the server pods"
    for name, template in manifests.workloads():
        if not name.startswith("Deployment/"):
            assert not selects(service["spec"]["selector"], template["metadata"]["labels"]), (
                f"the Service would route traffic to {name}'s pods"
            )
    (container,) = containers(deployment["spec"]["template"])
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_hpa_scales_the_deployment(manifests):
    deployment = manifests.one("Deployment")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    hpa = manifests.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


# ---------------------------------------------------------------------------------------------
# Security and shutdown


def test_workloads_run_unprivileged(manifests):
    for name, template in manifests.workloads():
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{name}: {kind}"


def grace_budget(pod: dict) -> int:
    """Seconds the process has between SIGTERM and SIGKILL: the grace period less the preStop sleep."""
    (container,) = pod["containers"]
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    return pod["terminationGracePeriodSeconds"] - pre_stop


def test_grace_period_covers_the_graceful_shutdown(manifests):
    # The service finishes in-flight requests and stops its worker within about 20 s of SIGTERM.
    assert grace_budget(manifests.one("Deployment")["spec"]["template"]["spec"]) >= 20


def test_image_agrees_with_the_manifests(manifests):
    dockerfile = (REPO / "Dockerfile").read_text()
    final_stage = dockerfile.split("\nFROM ")[-1]
    user = re.search(r"^USER (\d+)(?::(\d+))?$", final_stage, re.M)
    assert user, "the final stage must set a numeric USER (runAsNonRoot needs one)"
    expose = {int(p) for p in re.findall(r"^EXPOSE (\d+)", final_stage, re.M)}
    assert not re.search(r"^HEALTHCHECK", final_stage, re.M), "Kubernetes probes do the health checks"
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", final_stage, re.M).group(1))
    assert entrypoint == ["/usr/local/bin/billing-service"]
    deployment = manifests.one("Deployment")["spec"]["template"]["spec"]
    assert deployment["securityContext"]["runAsUser"] == int(user.group(1))
    (container,) = deployment["containers"]
    assert {p["containerPort"] for p in container["ports"]} == expose


# ---------------------------------------------------------------------------------------------
# The probes point at routes the service really serves


def probe_paths(container: dict) -> list[str]:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    paths = []
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe not in container:
            continue
        http_get = container[probe]["httpGet"]
        assert http_get["port"] in ports or http_get["port"] in ports.values(), (
            f"{probe} port {http_get['port']} is not a container port"
        )
        paths.append(http_get["path"])
    return paths


def test_probes_use_the_status_routes(manifests):
    (container,) = containers(manifests.one("Deployment")["spec"]["template"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/status/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/status/alive"
    assert probe_paths(container)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


def billing_service_bin() -> str:
    binary = os.environ.get("BILLING_SERVICE_BIN")
    if not binary:
        message = "BILLING_SERVICE_BIN is unset: the manifests were not tried against the service"
        if IN_CI:
            pytest.fail(message + " (CI=true: .ci/deploy-check sets it to target/debug/billing-service)")
        pytest.skip(message)
    assert os.access(binary, os.X_OK), f"BILLING_SERVICE_BIN={binary} is not an executable file"
    return binary


def test_workload_commands_exist(env):
    """Each workload's args name a command the binary knows (`--help` after them exits 0)."""
    binary = billing_service_bin()
    for name, template in _manifests(env).workloads():
        for container in containers(template):
            args = container.get("args", [])
            result = subprocess.run(
                [binary, *args, "--help"], capture_output=True, text=True, timeout=30, check=False, env={"PATH": "/usr/bin:/bin"}
            )
            assert result.returncode == 0, f"{name}: billing-service {' '.join(args)} is not a command:\n{result.stderr}"


def test_probes_are_served_by_the_service(tmp_path):
    binary = billing_service_bin()
    pod = _manifests("staging").one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    paths = probe_paths(container)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "SERVER_PORT": str(port),
        "DATABASE_URL": f"sqlite://{tmp_path}/t.db",
        "STRIPE_API_SECRET_KEY": "sk_test_x",
        "STRIPE_WEBHOOK_SECRET": "whsec_x",
        # The probes need no user: the mode that needs no identity provider.
        "AUTH_MODE": "trusted-headers",
        "LOG_FORMAT": "json",
        "RUST_LOG": "info",
    }
    log_path = tmp_path / "service.log"
    # The Deployment's own args, from a directory with no .env in it.
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [binary, *container.get("args", [])], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def log_tail() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while http_status(base + paths[0]) != 200:
            if process.poll() is not None:
                pytest.fail(f"billing-service exited with {process.returncode} before serving:\n{log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"billing-service did not answer {paths[0]} within 60 s:\n{log_tail()}")
            time.sleep(0.2)
        for path in paths:
            assert http_status(base + path) == 200, f"GET {path} is not 200:\n{log_tail()}"

        # SIGTERM, as the kubelet sends it: the service must be gone before the SIGKILL.
        budget = grace_budget(pod)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            pytest.fail(f"billing-service still running {budget} s after SIGTERM (then SIGKILL):\n{log_tail()}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------------------
# kubernetes/deploy.sh: pins the image everywhere, and migrates before it rolls


DIGEST_IMAGE = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/billing@sha256:" + "ab" * 32


def test_deploy_script_pins_one_image_everywhere(env):
    result = subprocess.run(
        [str(KUBERNETES / "deploy.sh"), "--render-only", env, DIGEST_IMAGE],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    pinned = Manifests(load_all(result.stdout))
    for name, template in pinned.workloads():
        assert {c["image"] for c in containers(template)} == {DIGEST_IMAGE}, name
    # Only the image changed.
    unpinned = _manifests(env)
    assert len(pinned.docs) == len(unpinned.docs)
    assert pinned.all("ConfigMap") == unpinned.all("ConfigMap")


FAKE_KUBECTL = r'''#!{python}
"""Stands in for kubectl against a cluster: logs each call, answers from the manifests."""
import json, os, re, subprocess, sys
import yaml

args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:1] == ["kustomize"]:
    sys.exit(subprocess.call([os.environ["REAL_KUBECTL"], *args]))
while args[:1] == ["--namespace"]:
    args = args[2:]
if args[:2] == ["config", "current-context"]:
    print("fake")
elif args[:1] == ["apply"]:
    docs = [d for d in yaml.safe_load_all(open(args[args.index("-f") + 1])) if d]
    selector = args[args.index("--selector") + 1]
    key, op, values = re.match(r"(\S+?)\s*(=|\snotin\s)\s*\(?([^)]*)\)?$", selector).groups()
    values = values.split(",")
    for d in docs:
        label = d["metadata"].get("labels", {{}}).get(key)
        if (label in values) == (op == "="):
            group = d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else ""
            print(d["kind"].lower() + ("." + group if group else "") + "/" + d["metadata"]["name"])
elif args[:1] == ["get"]:
    failing = os.environ.get("FAKE_JOB") == "fail"
    if "succeeded" in args[-1]:
        print("" if failing else "1")
    else:
        print("True" if failing else "")
'''


def run_deploy_with_fake_kubectl(tmp_path, job: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    fake = tmp_path / "kubectl"
    fake.write_text(FAKE_KUBECTL.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = {**os.environ, "KUBECTL": str(fake), "REAL_KUBECTL": kubectl(), "FAKE_LOG": str(log), "FAKE_JOB": job}
    result = subprocess.run(
        [str(KUBERNETES / "deploy.sh"), "staging", DIGEST_IMAGE], env=env, capture_output=True, text=True, check=False
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    calls = [c[2:] if c[:1] == ["--namespace"] else c for c in calls if c[:1] != ["kustomize"]]
    return result, calls


def index_of(calls: list[list[str]], *words: str) -> int:
    for i, call in enumerate(calls):
        if all(any(word == arg or word in arg for arg in call) for word in words):
            return i
    raise AssertionError(f"no kubectl call with {words} in {calls}")


def test_deploy_script_migrates_before_the_rollout(tmp_path):
    result, calls = run_deploy_with_fake_kubectl(tmp_path, job="ok")
    assert result.returncode == 0, result.stderr
    config = index_of(calls, "apply", "app.kubernetes.io/component=config")
    synced = index_of(calls, "wait", "condition=Ready", "externalsecret")
    delete_old_job = index_of(calls, "delete", "app.kubernetes.io/component=migration")
    migrate = index_of(calls, "apply", "app.kubernetes.io/component=migration")
    job_done = index_of(calls, "get", "job.batch/billing-migrate")
    rest = index_of(calls, "apply", "notin (config,migration)")
    rollout = index_of(calls, "rollout", "status", "deployment.apps/billing")
    assert config < synced < delete_old_job < migrate < job_done < rest < rollout


def test_deploy_script_stops_when_the_migration_fails(tmp_path):
    result, calls = run_deploy_with_fake_kubectl(tmp_path, job="fail")
    assert result.returncode != 0
    assert "did not complete" in result.stderr
    assert not [c for c in calls if "notin (config,migration)" in " ".join(c) or c[:1] == ["rollout"]]


# ---------------------------------------------------------------------------------------------
# The workflow deploys through these manifests, staging first, production behind an approval


def workflow() -> dict:
    return yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())


def test_workflow_deploys_staging_then_production_with_approval():
    jobs = workflow()["jobs"]
    staging, production = jobs["deploy-staging"], jobs["deploy-production"]
    assert staging["environment"]["name"] == "staging"
    assert production["environment"]["name"] == "production"
    assert "deploy-staging" in production["needs"]
    for env, job in (("staging", staging), ("production", production)):
        runs = [step.get("run", "") for step in job["steps"]]
        assert any(run.startswith(f"kubernetes/deploy.sh {env} ") for run in runs), env
        assert any(run.startswith(f"kubernetes/smoke-test.sh {env}") for run in runs), env


def test_workflow_uses_oidc_not_static_keys():
    text = (REPO / ".github" / "workflows" / "ci.yml").read_text()
    assert "aws-access-key-id" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    for name, job in workflow()["jobs"].items():
        uses_aws = any("configure-aws-credentials" in step.get("uses", "") for step in job["steps"])
        if uses_aws:
            assert job.get("permissions", {}).get("id-token") == "write", name


# ---------------------------------------------------------------------------------------------
# NetworkPolicies: every billing pod is confined; egress only to DNS, the database and HTTPS out

# Every port a billing pod may open a connection to (kubernetes/network-policy).
ALLOWED_EGRESS = {(53, "UDP"), (53, "TCP"), (5432, "TCP"), (443, "TCP")}
PRIVATE_RANGES = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
ANY = ("*", "*")


def policy_types(policy: dict) -> set[str]:
    spec = policy["spec"]
    if spec.get("policyTypes"):
        return set(spec["policyTypes"])
    # The API's default: Ingress, and Egress when the policy has egress rules.
    return {"Ingress"} | ({"Egress"} if "egress" in spec else set())


def policies_selecting(manifests: Manifests, labels: dict, kind: str) -> list[dict]:
    return [
        policy
        for policy in manifests.all("NetworkPolicy")
        if kind in policy_types(policy) and selects(policy["spec"]["podSelector"], labels)
    ]


def rule_ports(rule: dict) -> set[tuple]:
    """(port, protocol) pairs a rule admits; ANY when it names no port (every port)."""
    if not rule.get("ports"):
        return {ANY}
    out = set()
    for port in rule["ports"]:
        if "port" not in port or "endPort" in port:
            out.add(ANY)
        else:
            out.add((port["port"], port.get("protocol", "TCP")))
    return out


def egress_of(manifests: Manifests, labels: dict) -> set[tuple]:
    """Every (port, protocol) a pod with these labels may connect to, over all its policies."""
    ports = set()
    for policy in policies_selecting(manifests, labels, "Egress"):
        for rule in policy["spec"].get("egress") or []:
            ports |= rule_ports(rule) if rule.get("to") else {ANY}
    return ports


def ingress_rules_of(manifests: Manifests, labels: dict) -> list[dict]:
    return [
        rule
        for policy in policies_selecting(manifests, labels, "Ingress")
        for rule in policy["spec"].get("ingress") or []
    ]


def pod_labels(template: dict) -> dict:
    return template["metadata"]["labels"]


def http_port(manifests: Manifests) -> int:
    (container,) = containers(manifests.one("Deployment")["spec"]["template"])
    return {p["name"]: p["containerPort"] for p in container["ports"]}["http"]


def test_network_policies_confine_every_pod(manifests):
    """A pod no policy of a type selects is open in that direction: every billing pod is
    selected for both, so it is default-deny and only the rules below let traffic through."""
    assert manifests.all("NetworkPolicy"), "no NetworkPolicy in the rendered overlay"
    for name, template in manifests.workloads():
        for kind in ("Ingress", "Egress"):
            assert policies_selecting(manifests, pod_labels(template), kind), (
                f"no NetworkPolicy of type {kind} selects {name}'s pods {pod_labels(template)}: "
                f"they accept or open any connection"
            )


def test_network_policies_are_applied_with_the_configuration(manifests):
    """kubernetes/deploy.sh applies `component=config` first: the policies are in place before
    the migration Job and the new pods start."""
    for policy in manifests.all("NetworkPolicy"):
        labels = policy["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/component") == "config", policy["metadata"]["name"]
        assert labels.get("app.kubernetes.io/name") == PROJECT, policy["metadata"]["name"]


def covers_private_ranges(block: dict) -> bool:
    """True when an ipBlock admits no address of the private (RFC 1918) ranges."""
    cidr = ipaddress.ip_network(block["cidr"])
    excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
    for private in PRIVATE_RANGES:
        if private.version != cidr.version or not cidr.overlaps(private):
            continue
        inside = private if private.subnet_of(cidr) else cidr
        if not any(inside.subnet_of(e) for e in excepted):
            return False
    return True


def test_egress_is_only_dns_the_database_and_https_out(manifests, env):
    database_port = int(manifests.config()["DATABASE_PORT"])
    assert database_port == 5432, "DATABASE_PORT changed: change the NetworkPolicy and ALLOWED_EGRESS with it"
    for policy in manifests.all("NetworkPolicy"):
        name = policy["metadata"]["name"]
        for rule in policy["spec"].get("egress") or []:
            assert rule.get("to"), f"{name}: an egress rule without `to` admits every destination"
            ports = rule_ports(rule)
            assert ports <= ALLOWED_EGRESS, f"{name}: egress to {sorted(map(str, ports - ALLOWED_EGRESS))}"
            for peer in rule["to"]:
                block = peer.get("ipBlock")
                if (53, "UDP") in ports or (53, "TCP") in ports:
                    assert peer.get("namespaceSelector", {}).get("matchLabels") == {
                        "kubernetes.io/metadata.name": "kube-system"
                    }, f"{name}: DNS to something other than kube-system: {peer}"
                if (5432, "TCP") in ports:
                    assert block, f"{name}: the database is an address range (ipBlock), not {peer}"
                    cidr = ipaddress.ip_network(block["cidr"])
                    assert any(cidr.subnet_of(p) for p in PRIVATE_RANGES if p.version == cidr.version), (
                        f"{name}: the database range {cidr} in overlays/{env} is not a private one"
                    )
                if (443, "TCP") in ports:
                    assert block, f"{name}: HTTPS out must be an ipBlock, not {peer}"
                    assert covers_private_ranges(block), (
                        f"{name}: HTTPS to {block} reaches the cluster's or the VPC's private addresses"
                    )


def test_every_pod_reaches_dns_and_the_database(manifests):
    for name, template in manifests.workloads():
        ports = egress_of(manifests, pod_labels(template))
        missing = {(53, "UDP"), (53, "TCP"), (5432, "TCP")} - ports
        assert not missing, f"{name}'s pods cannot reach {sorted(missing)}"


def test_only_the_pods_that_call_stripe_get_https_out(manifests):
    """The server calls Stripe (and, with AUTH_MODE=jwt, fetches the JWKS), and so does the
    CronJob's `sync events`. The migration Job holds no Stripe key and gets no port 443."""
    for name, template in manifests.workloads():
        ports = egress_of(manifests, pod_labels(template))
        assert ANY not in ports, f"{name}'s pods may connect anywhere"
        calls_stripe = any(
            "STRIPE_API_SECRET_KEY" in secrets_reaching(manifests, container)
            for container in containers(template)
        )
        if calls_stripe:
            assert (443, "TCP") in ports, f"{name} holds the Stripe key but cannot reach Stripe (443)"
        else:
            assert (443, "TCP") not in ports, f"{name}'s pods may open HTTPS connections: {sorted(ports)}"


def test_ingress_admits_only_named_pods_on_the_service_port(manifests):
    """No rule admits everyone: each names its peers (a namespace and a pod label, or a private
    address range) and the `http` port. The Job's and the CronJob's pods accept nothing."""
    port = http_port(manifests)
    for policy in manifests.all("NetworkPolicy"):
        name = policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress") or []:
            assert rule.get("from"), f"{name}: an ingress rule without `from` admits everyone"
            assert rule_ports(rule) == {(port, "TCP")}, f"{name}: ingress on {rule.get('ports')}, not {port}/TCP"
            for peer in rule["from"]:
                if "ipBlock" in peer:
                    cidr = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                    assert any(cidr.subnet_of(p) for p in PRIVATE_RANGES if p.version == cidr.version), (
                        f"{name}: ingress from {cidr}"
                    )
                    continue
                for selector in ("namespaceSelector", "podSelector"):
                    chosen = peer.get(selector) or {}
                    assert chosen.get("matchLabels") or chosen.get("matchExpressions"), (
                        f"{name}: a peer without a {selector} admits every "
                        f"{'namespace' if selector == 'namespaceSelector' else 'pod'}: {peer}"
                    )
    for name, template in manifests.workloads():
        rules = ingress_rules_of(manifests, pod_labels(template))
        if name.startswith("Deployment/"):
            assert rules, f"nothing may reach {name}'s pods: the proxy and Prometheus need a rule"
        else:
            assert not rules, f"{name}'s pods serve nothing, yet accept {rules}"


# ---------------------------------------------------------------------------------------------
# Supply chain: actions pinned by commit, base images by digest, Dependabot moving both

WORKFLOWS = REPO / ".github" / "workflows"
USES_LINE = re.compile(r"""^\s*(?:-\s+)?uses:\s*["']?([^\s"'#]+)["']?\s*(#.*)?$""")


def yaml_uses(node) -> list[str]:
    """Every `uses:` value in a parsed workflow, wherever it is (steps, reusable-workflow jobs)."""
    if isinstance(node, dict):
        found = [node["uses"]] if isinstance(node.get("uses"), str) else []
        return found + [u for value in node.values() for u in yaml_uses(value)]
    if isinstance(node, list):
        return [u for value in node for u in yaml_uses(value)]
    return []


def test_workflow_actions_are_pinned_by_commit_sha():
    files = sorted(WORKFLOWS.glob("*.y*ml"))
    assert files, "no workflow in .github/workflows"
    pinned = 0
    for path in files:
        lines = {}
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = USES_LINE.match(line)
            if match:
                lines[match.group(1)] = (number, match.group(2) or "")
        # Every `uses:` the YAML holds is on a line of its own, so none escapes the checks below.
        assert sorted(set(yaml_uses(yaml.safe_load(path.read_text())))) == sorted(lines), path.name
        for ref, (number, comment) in lines.items():
            where = f"{path.name}:{number}: {ref}"
            if ref.startswith("./"):
                continue  # an action of this repository, pinned by the commit itself
            if ref.startswith("docker://"):
                assert re.search(r"@sha256:[0-9a-f]{64}$", ref), f"{where} is not pinned by digest"
                continue
            assert re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}", ref), (
                f"{where} is not pinned by a commit SHA (a tag or branch can be moved)"
            )
            assert re.fullmatch(r"#\s*v\d+(\.\d+){0,2}\S*", comment.strip()), (
                f"{where}: name the release after the SHA (`# vX.Y.Z`), as Dependabot keeps it"
            )
            pinned += 1
    assert pinned, "no action found: has the workflow's format changed?"


def dockerfile_froms() -> list[tuple[str, str | None]]:
    """(image as built with the default build arguments, stage name) of each FROM, in order."""
    defaults, froms = {}, []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        words = line.split()
        if not words or words[0].upper() not in ("ARG", "FROM"):
            continue
        if words[0].upper() == "ARG" and not froms:
            name, _, value = words[1].partition("=")
            defaults[name] = value
        elif words[0].upper() == "FROM":
            words = [w for w in words[1:] if not w.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), words[0])
            stage = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            froms.append((image, stage))
    return froms


def test_dockerfile_base_images_are_pinned_by_digest():
    froms = dockerfile_froms()
    stages, images = set(), []
    for image, stage in froms:
        if image != "scratch" and image not in stages:
            assert re.fullmatch(r"[^@\s]+:[^@\s]+@sha256:[0-9a-f]{64}", image), (
                f"FROM {image}: pin the base image as image:tag@sha256:<digest>"
            )
            images.append(image)
        if stage:
            stages.add(stage)
    assert froms[-1][0] in stages or froms[-1][0] in images
    assert any(i.startswith("rust:") for i in images), f"no rust build image among {images}"
    assert any(i.startswith("gcr.io/distroless/cc-debian12:") for i in images), f"no distroless runtime among {images}"


def test_build_image_uses_the_ci_toolchain():
    """The image is compiled with the Rust CI tests with, and no older than the workspace allows."""
    (rust,) = [image for image, _ in dockerfile_froms() if image.startswith("rust:")]
    version = re.match(r"rust:(\d+\.\d+)", rust).group(1)
    assert version == str(workflow()["env"]["RUST_TOOLCHAIN"]), f"{rust} but ci.yml tests with RUST_TOOLCHAIN"
    minimum = re.search(r'^rust-version\s*=\s*"(\d+)\.(\d+)', (REPO / "Cargo.toml").read_text(), re.M)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.groups())), "older than rust-version"


def test_dependabot_updates_actions_cargo_and_the_base_images():
    config = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())
    assert config["version"] == 2
    updates = {u["package-ecosystem"]: u for u in config["updates"]}
    for ecosystem, manifest in (("github-actions", ".github/workflows"), ("cargo", "Cargo.lock"), ("docker", "Dockerfile")):
        assert ecosystem in updates, f"Dependabot does not update {ecosystem}"
        update = updates[ecosystem]
        directories = update.get("directories") or [update.get("directory")]
        assert "/" in directories, f"{ecosystem}: {directories}"
        assert (REPO / manifest).exists()
        assert update["schedule"]["interval"] in ("daily", "weekly"), ecosystem
