"""Local development: kubernetes/dev.sh (run with --dry-run, and against stand-ins for kubectl,
Telepresence and mirrord), and compose.yaml agreeing with itself, the Dockerfile, the service
and CI. `docker-compose config` itself runs in .ci/deploy-check.

Run by .ci/deploy-check (`pytest kubernetes/tests`), which puts kubectl on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEV = REPO / "kubernetes" / "dev.sh"
DEFAULT_COMMAND = "env -u POD_NAME SERVER_HOST=127.0.0.1 LOG_FORMAT=pretty cargo run -p billing-service"


def dev(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(DEV), *args], capture_output=True, text=True, check=False, env=env)


def kubectl() -> str:
    path = shutil.which("kubectl")
    if not path:
        pytest.fail("kubectl is not on PATH (.ci/deploy-check installs it)")
    return path


def rendered(env: str) -> list[dict]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(REPO / "kubernetes" / "overlays" / env)], capture_output=True, text=True, check=True
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(docs: list[dict], kind: str, name: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


# ---------------------------------------------------------------------------------------------
# kubernetes/dev.sh --dry-run: what it would run


def test_dry_run_intercepts_staging_with_telepresence():
    result = dev("--dry-run", "staging")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "+ telepresence connect --namespace billing-staging",
        f"+ telepresence intercept billing --port 8080:http --mount=false -- {DEFAULT_COMMAND}",
    ]
    assert "migrations" in result.stderr, "the warning that serve migrates the environment's database"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--mode", "replace"],
            f"+ telepresence replace billing --container billing --port 8080:http --mount=false -- {DEFAULT_COMMAND}",
        ),
        (
            ["--tool", "mirrord"],
            "+ mirrord exec --target deployment/billing/container/billing --target-namespace billing-staging --steal "
            f"--override-env-vars-exclude 'POD_NAME;SERVER_HOST;LOG_FORMAT' -- {DEFAULT_COMMAND}",
        ),
        (
            ["--tool=mirrord", "--mode=mirror"],
            "+ mirrord exec --target deployment/billing/container/billing --target-namespace billing-staging "
            f"--override-env-vars-exclude 'POD_NAME;SERVER_HOST;LOG_FORMAT' -- {DEFAULT_COMMAND}",
        ),
    ],
)
def test_dry_run_tools_and_modes(args, expected):
    result = dev("--dry-run", *args, "staging")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == expected


def test_dry_run_with_the_environment_from_kubectl():
    result = dev("--dry-run", "--tool", "mirrord", "--env-from", "kubectl", "staging")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("+ kubectl --namespace billing-staging get deployment billing -o 'go-template=")
    assert lines[1].startswith("+ kubectl --namespace billing-staging get configmap ")
    assert lines[2].startswith("+ kubectl --namespace billing-staging get secret ")
    assert "base64decode" in lines[2]
    assert "0600" in lines[3]
    assert lines[4].endswith(f"--steal --override-env-vars-exclude '*' -- {DEFAULT_COMMAND}")


def test_dry_run_with_a_command_of_ones_own():
    result = dev("--dry-run", "staging", "--", "cargo", "run", "--release", "-p", "billing-service", "--", "serve")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].endswith(
        "-- env -u POD_NAME SERVER_HOST=127.0.0.1 LOG_FORMAT=pretty cargo run --release -p billing-service -- serve"
    )


@pytest.mark.parametrize("environment", ["production", "prod", "live"])
def test_production_is_refused(environment):
    for args in (["--dry-run", environment], [environment], ["--tool", "mirrord", environment]):
        result = dev(*args)
        assert result.returncode == 1, result
        assert "refusing" in result.stderr
        assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--dry-run"],
        ["--tool"],
        ["--tool", "--dry-run", "staging"],
        ["--tool", "docker", "staging"],
        ["--mode", "swap", "staging"],
        ["--env-from", "vault", "staging"],
        ["--tool", "mirrord", "--mode", "replace", "staging"],
        ["--mode", "mirror", "staging"],
        ["--bogus", "staging"],
        ["staging", "qa"],
        ["qa"],
        ["../overlays/staging"],
    ],
)
def test_bad_arguments_print_the_usage_and_exit_2(args):
    result = dev(*args)
    assert result.returncode == 2, result
    assert "usage: kubernetes/dev.sh" in result.stderr
    assert result.stdout == ""


def test_help():
    result = dev("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: kubernetes/dev.sh")


def test_the_names_dev_uses_are_the_manifests():
    script = DEV.read_text()
    names = dict(re.findall(r"^([A-Z_]+)=(\w+)$", script, re.M))
    docs = rendered("staging")
    deployment = one(docs, "Deployment", names["DEPLOYMENT"])
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == names["CONTAINER"]]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {names["PORT_NAME"]: int(names["LOCAL_PORT"])}
    service = one(docs, "Service", names["DEPLOYMENT"])
    assert names["PORT_NAME"] in {p["name"] for p in service["spec"]["ports"]}
    # The namespace dev.sh reads from the overlay's kustomization.yml is the rendered one.
    assert {d["metadata"].get("namespace") for d in docs} == {"billing-staging"}


# ---------------------------------------------------------------------------------------------
# kubernetes/dev.sh against stand-ins: the environment reaches the command, never the terminal

SECRETS = {
    "STRIPE_API_SECRET_KEY": "sk_test_0nlyInTheCommand'\"$HOME `x`",
    "STRIPE_WEBHOOK_SECRET": "whsec_0nlyInTheCommand",
    "DATABASE_USERNAME": "u0nlyInTheCommand",
    "DATABASE_PASSWORD": "pa ss\nw0rd=with;everything#",
}

# kubectl against the cluster, answered by the real kubectl from the rendered staging overlay
# (so the script's go-templates are run for real): the Deployment and ConfigMaps with
# `label --local`, the Secret (an ExternalSecret's output, not in the overlay) with
# `create secret --dry-run=client`. It also notes the mode of the file it is writing into.
FAKE_KUBECTL = r'''#!{python}
import json, os, stat, subprocess, sys
args = sys.argv[1:]
real, docs = os.environ["REAL_KUBECTL"], os.environ["FAKE_DOCS"]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(["kubectl", *args]) + "\n")
if args[:2] == ["config", "current-context"]:
    print("fake")
    sys.exit(0)
assert args[:2] == ["--namespace", "billing-staging"] and args[2] == "get", args
kind, name, template = args[3], args[4], args[args.index("-o") + 1]
if kind == "secret":
    out = os.fstat(1)
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write(json.dumps(["stdout", os.readlink("/proc/self/fd/1"), stat.S_IMODE(out.st_mode)]) + "\n")
    secrets = json.loads(os.environ["FAKE_SECRETS"])
    literals = [f"--from-literal={{k}}={{v}}" for k, v in secrets.items()]
    command = [real, "create", "secret", "generic", name, *literals, "--dry-run=client", "-o", template]
else:
    command = [real, "label", "-f", os.path.join(docs, f"{{kind}}-{{name}}.yml"), "--local", "fake=1", "-o", template]
sys.exit(subprocess.call(command, env={{**os.environ, "KUBECONFIG": "/nonexistent"}}))
'''

# Telepresence and mirrord: log the call, then run what follows `--` as they would, with some of
# the pod's environment on top (which dev.sh's `env` must override).
FAKE_TOOL = r'''#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *args]) + "\n")
if "--" in args:
    command = args[args.index("--") + 1:]
    os.execvpe(command[0], command, {{**os.environ, "POD_NAME": "billing-7d9f-x", "LOG_FORMAT": "json"}})
'''


@pytest.fixture
def stand_ins(tmp_path):
    bin_dir, docs_dir = tmp_path / "bin", tmp_path / "docs"
    bin_dir.mkdir()
    docs_dir.mkdir()
    for doc in rendered("staging"):
        if doc["kind"] in ("Deployment", "ConfigMap"):
            (docs_dir / f"{doc['kind'].lower()}-{doc['metadata']['name']}.yml").write_text(yaml.safe_dump(doc))
    for name, text in (("kubectl", FAKE_KUBECTL), ("telepresence", FAKE_TOOL), ("mirrord", FAKE_TOOL)):
        (bin_dir / name).write_text(text.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    log, dump = tmp_path / "calls.jsonl", tmp_path / "env.json"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "REAL_KUBECTL": kubectl(),
        "FAKE_DOCS": str(docs_dir),
        "FAKE_LOG": str(log),
        "FAKE_SECRETS": json.dumps(SECRETS),
        "TMPDIR": str(tmp_path),
        "DUMP": str(dump),
    }
    command = ["--", sys.executable, "-c", "import json, os; json.dump(dict(os.environ), open(os.environ['DUMP'], 'w'))"]

    def run(*args: str) -> tuple[subprocess.CompletedProcess, list[list], dict]:
        result = dev(*args, *command, env=env)
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        environment = json.loads(dump.read_text()) if dump.exists() else {}
        return result, calls, environment

    return run


@pytest.mark.parametrize("tool", ["telepresence", "mirrord"])
def test_the_cluster_environment_reaches_the_command_only(stand_ins, tool):
    result, calls, environment = stand_ins("--tool", tool, "--env-from", "kubectl", "staging")
    assert result.returncode == 0, result.stderr
    # The command got the Secret's values (byte for byte) and the ConfigMaps' ...
    for key, value in SECRETS.items():
        assert environment.get(key) == value, key
    staging = one(rendered("staging"), "Deployment", "billing")
    assert environment["DATABASE_HOST"].endswith(".rds.amazonaws.com")
    assert environment["AUTH_MODE"] == "jwt"
    assert environment["DATABASE_ENGINE"] == "postgres"
    # ... with the local settings over the pod's.
    assert environment["LOG_FORMAT"] == "pretty"
    assert environment["SERVER_HOST"] == "127.0.0.1"
    assert "POD_NAME" not in environment
    # Never printed.
    for value in SECRETS.values():
        for line in value.splitlines():
            assert line not in result.stdout + result.stderr
    # Written only into a file of mode 0600, gone once read.
    (written,) = [c for c in calls if c[0] == "stdout"]
    assert written[2] == 0o600
    assert not Path(written[1]).exists()
    # Read from the sources the Deployment names.
    envfrom = staging["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    named = {(k.removesuffix("Ref").lower(), v["name"]) for source in envfrom for k, v in source.items()}
    got = {(c[4], c[5]) for c in calls if c[0] == "kubectl" and c[3:4] == ["get"] and c[4] != "deployment"}
    assert got == named
    tool_calls = [c for c in calls if c[0] == tool]
    if tool == "telepresence":
        assert [c[1] for c in tool_calls] == ["connect", "intercept"]
        # The daemons `connect` starts are started before the values are read.
        assert calls.index(tool_calls[0]) < min(i for i, c in enumerate(calls) if c[0] == "kubectl")
    else:
        assert "--override-env-vars-exclude" in tool_calls[0] and "*" in tool_calls[0]


def test_the_tool_gives_the_environment_by_default(stand_ins):
    result, calls, environment = stand_ins("staging")
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if c[0] == "kubectl"], "kubectl is not needed"
    assert environment["LOG_FORMAT"] == "pretty" and "POD_NAME" not in environment
    intercept = [c for c in calls if c[:2] == ["telepresence", "intercept"]]
    assert intercept and intercept[0][2] == "billing"


def test_a_missing_tool_is_named(tmp_path):
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    if shutil.which("telepresence", path=env["PATH"]):
        pytest.skip("telepresence is installed in /usr/bin or /bin")
    result = dev("staging", env=env)
    assert result.returncode == 1
    assert "telepresence is not installed" in result.stderr


# ---------------------------------------------------------------------------------------------
# compose.yaml


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_local_stripe_signs_with_the_secret_the_service_checks(compose):
    services = compose["services"]
    secret = flag(services["stripe"]["command"], "--webhook-secret")
    assert secret.startswith("whsec_") and len(secret) > len("whsec_")
    assert services["billing"]["environment"]["STRIPE_WEBHOOK_SECRET"] == secret
    # The service and stripe-setup talk to the local Stripe with a test key.
    listen_port = flag(services["stripe"]["command"], "--listen").rsplit(":", 1)[1]
    for name in ("setup", "billing"):
        environment = services[name]["environment"]
        assert environment["STRIPE_API_BASE"] == f"http://stripe:{listen_port}", name
        assert environment["STRIPE_API_SECRET_KEY"].startswith("sk_test_"), name


def test_the_webhook_endpoint_reaches_the_service(compose):
    services = compose["services"]
    setup = services["setup"]
    assert setup["entrypoint"] == ["/usr/local/bin/stripe-setup"]
    assert setup["command"][0] == "init"
    url = urlsplit(flag(setup["command"], "--webhook-url"))
    # stripe-setup accepts plain http on loopback only; the service is on the local Stripe's
    # loopback because it shares its network namespace, on the image's SERVER_PORT.
    assert url.scheme == "http" and url.hostname == "localhost" and url.path == "/webhook/stripe"
    assert services["billing"]["network_mode"] == "service:stripe"
    assert url.port == dockerfile_local_port()
    assert f"127.0.0.1:{url.port}:{url.port}" in services["stripe"]["ports"]
    assert "/webhook/stripe" in (REPO / "README.md").read_text()


def test_the_service_starts_migrated_and_provisioned(compose):
    services = compose["services"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("billing", "billing-stripe-cli"):
        service = services[name]
        assert service["entrypoint"] == ["/usr/local/bin/billing-service"] and service["command"] == ["serve"], name
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        assert service["environment"]["DATABASE_URL"] == services["migrate"]["environment"]["DATABASE_URL"], name
        assert service["environment"]["AUTH_MODE"] == "trusted-headers", name
    assert services["billing"]["depends_on"]["setup"]["condition"] == "service_completed_successfully"


def test_every_port_is_published_on_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_the_local_image_is_the_dockerfiles_local_target(compose):
    dockerfile = (REPO / "Dockerfile").read_text()
    stage = dockerfile.split("\nFROM distroless AS local\n")[1].split("\nFROM ")[0]
    binaries = {"billing-local", "billing-service", "stripe-setup"}
    assert binaries <= set(re.findall(r"/out/([\w-]+)", stage))
    ours = [s for s in compose["services"].values() if "build" in s]
    assert len(ours) == 5
    for service in ours:
        assert service["build"] == {"context": ".", "target": "local"}
        assert service["image"] == ours[0]["image"]
        command = service.get("entrypoint", ["/usr/local/bin/billing-local"])[0]
        assert command.startswith("/usr/local/bin/") and command.removeprefix("/usr/local/bin/") in binaries


def test_postgres_is_the_version_ci_tests_with(compose):
    ci = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    assert compose["services"]["postgres"]["image"] == ci["jobs"]["checks"]["services"]["postgres"]["image"]


def test_the_stripe_cli_profile(compose):
    services = compose["services"]
    profiled = {name for name, s in services.items() if "stripe-cli" in s.get("profiles", [])}
    assert profiled == {"billing-stripe-cli", "stripe-cli"}
    cli = services["stripe-cli"]
    assert cli["image"].startswith("stripe/stripe-cli:v")
    assert cli["command"][0] == "listen"
    url = urlsplit(flag(cli["command"], "--forward-to"))
    assert url.hostname == "billing-stripe-cli" and url.path == "/webhook/stripe"
    assert url.port == dockerfile_local_port()
    # The key comes from the environment, never the command line.
    assert not [arg for arg in cli["command"] if "sk_" in arg or "api-key" in arg]
    assert cli["environment"]["STRIPE_API_KEY"] == "${STRIPE_API_SECRET_KEY:-}"
    billing = services["billing-stripe-cli"]["environment"]
    assert "STRIPE_API_BASE" not in billing, "Stripe's own API"
    assert billing["STRIPE_WEBHOOK_SECRET"] == "${STRIPE_WEBHOOK_SECRET:-}"


def dockerfile_local_port() -> int:
    dockerfile = (REPO / "Dockerfile").read_text()
    stage = dockerfile.split("\nFROM distroless AS local\n")[1].split("\nFROM ")[0]
    return int(re.search(r"SERVER_PORT=(\d+)", stage).group(1))
