"""Checks that the rendered Kubernetes manifests agree with each other, with the image, with
the CI workflow and with the service itself.

Run by .ci/deploy-check (`pytest kubernetes/tests`), which puts kubectl on PATH and sets
BILLING_SERVICE_BIN to a built `billing-service` so the probe paths are requested from the real
service. Without BILLING_SERVICE_BIN that one test is skipped, except under CI=true, where it fails.

The README's configuration table is read for the variables the service requires.
"""

from __future__ import annotations

import copy
import functools
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
    return template["spec"]["containers"]


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
    sources = {}
    for name, template in manifests.workloads():
        for container in containers(template):
            refs = [s["configMapRef"] for s in container.get("envFrom", []) if "configMapRef" in s]
            sources[f"{name}/{container['name']}"] = json.dumps(refs, sort_keys=True)
    assert len(set(sources.values())) == 1, f"the ConfigMaps differ between workloads: {sources}"


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


def test_only_the_server_gets_the_stripe_secrets(manifests):
    """The migration Job and the maintenance CronJob only talk to the database."""
    for name, template in manifests.workloads():
        for container in containers(template):
            keys = secrets_reaching(manifests, container)
            if name.startswith("Deployment/"):
                assert {"STRIPE_API_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"} <= keys, name
            else:
                assert keys == {"DATABASE_USERNAME", "DATABASE_PASSWORD"}, f"{name}: {sorted(keys)}"


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


def test_cronjob_is_suspended_and_runs_a_service_command(manifests):
    cronjob = manifests.one("CronJob")
    assert cronjob["apiVersion"] == "batch/v1"
    assert cronjob["spec"]["suspend"] is True
    (container,) = containers(cronjob["spec"]["jobTemplate"]["spec"]["template"])
    assert container.get("command") is None
    assert container["args"] == ["events", "replay", "--failed"]


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
    configmap = manifests.one("ConfigMap")
    assert not SECRET_KEYS & set(configmap["data"]), "a secret value is in the ConfigMap"
    assert not {k for k in configmap["data"] if re.search(r"SECRET|PASSWORD|TOKEN", k)}
    assert manifests.secret_keys("billing-secrets") == SECRET_KEYS


def test_configuration_values_suit_the_service(manifests, env):
    data = manifests.one("ConfigMap")["data"]
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
    data = manifests.one("ConfigMap")["data"]
    if env == "production":
        assert data.get("DATABASE_SSLMODE") == "verify-full", "production must verify the database"
    root = data.get("DATABASE_SSL_ROOT_CERT")
    if root is None:
        return
    folder = root.rsplit("/", 1)[0]
    for name, template in manifests.workloads():
        (container,) = containers(template)
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert folder in mounts, f"{name} does not mount {folder}, where DATABASE_SSL_ROOT_CERT is"
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
        (container,) = containers(template)
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
    assert pinned.one("ConfigMap") == unpinned.one("ConfigMap")


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
