"""Checks that serverless/template.yaml, the SAM template of the AWS Lambda deployment, agrees with
the service: every variable it sets is one the service reads, every variable the service requires
is set or comes from a secret, the HTTP API routes what the service routes (except /metrics), and
the functions are built, logged, permitted and ordered as the README's "Serverless (AWS Lambda)"
section says.

Run by .ci/deploy-check (`pytest kubernetes/tests`), after its cfn-lint steps have validated the
template against CloudFormation's and SAM's schemas. Reads the template with a YAML loader of its
own that turns CloudFormation's short tags (!Ref, !Sub, !GetAtt, ...) into their long forms, and
the service's sources (billing-service/src) with regular expressions; a test below fails if those
stop finding what they look for.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import yaml

from test_manifests import required_variables

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "serverless" / "template.yaml"
SERVICE_SRC = REPO / "billing-service" / "src"
FUNCTIONS = ("ApiFunction", "JobsFunction")
BINARY = "billing-service"
# Read by the binary in Lambda mode only (not in configuration.rs): the secrets to load at cold
# start, the scheduled run's lookback, and the Parameters and Secrets extension's port.
LAMBDA_VARIABLES = {"SECRETS_MANAGER_SECRET_IDS", "SYNC_EVENTS_LOOKBACK", "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"}
# What each secret parameter's secret provides, as the binary maps its keys: an RDS secret's
# username and password (the other keys of such a secret are overridden by the template), the
# Stripe secret's keys by their own names.
SECRET_PROVIDES = {
    "DatabaseSecretArn": {"DATABASE_USERNAME", "DATABASE_PASSWORD"},
    "StripeSecretArn": {"STRIPE_API_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"},
}
NOT_PUBLIC = {("GET", "/metrics")}
API_GATEWAY_TIMEOUT_SECS = 30


# ---------------------------------------------------------------------------------------------
# Reading the template


class CloudFormationLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with CloudFormation's short tags read as their long forms:
    `!Ref X` as {"Ref": "X"}, `!GetAtt A.B` as {"Fn::GetAtt": ["A", "B"]}, `!Sub s` as
    {"Fn::Sub": "s"}, and so on."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node):
    key = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {key: value}


CloudFormationLoader.add_multi_constructor("!", _intrinsic)


@functools.cache
def template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=CloudFormationLoader)


def resources(kind: str) -> dict[str, dict]:
    return {name: r for name, r in template()["Resources"].items() if r["Type"] == kind}


def resource(name: str) -> dict:
    assert name in template()["Resources"], f"no resource {name} in {TEMPLATE.name}"
    return template()["Resources"][name]


def _merge(global_value, local_value):
    """SAM's Globals rules: maps merge (the function's keys win), lists concatenate, anything else
    is the function's."""
    if isinstance(global_value, dict) and isinstance(local_value, dict):
        if any(k == "Ref" or k.startswith("Fn::") for k in {**global_value, **local_value}):
            return local_value
        merged = dict(global_value)
        for key, value in local_value.items():
            merged[key] = _merge(merged[key], value) if key in merged else value
        return merged
    if isinstance(global_value, list) and isinstance(local_value, list):
        return global_value + local_value
    return local_value


@functools.cache
def function(name: str) -> dict:
    """A function's properties with the template's Globals applied, as SAM applies them."""
    fn = resource(name)
    assert fn["Type"] == "AWS::Serverless::Function", name
    return _merge(template().get("Globals", {}).get("Function", {}), fn["Properties"])


def environment(name: str) -> dict:
    return function(name).get("Environment", {}).get("Variables", {})


def ref(value) -> str | None:
    """The name a {"Ref": name} names, else None."""
    return value.get("Ref") if isinstance(value, dict) and set(value) == {"Ref"} else None


def get_att(value) -> list[str] | None:
    return value.get("Fn::GetAtt") if isinstance(value, dict) and set(value) == {"Fn::GetAtt"} else None


def sub_names(value) -> list[str]:
    """The ${...} names of a plain-string !Sub, in order."""
    assert isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str), f"not a !Sub of a string: {value}"
    return re.findall(r"\$\{([^}!]+)\}", value["Fn::Sub"])


def if_branches(value) -> list:
    """[value] for a plain value; both branches, flattened, for an !If."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        _, yes, no = value["Fn::If"]
        return if_branches(yes) + if_branches(no)
    return [value]


# ---------------------------------------------------------------------------------------------
# Reading the service


def _without_tests(source: str) -> str:
    return source.split("#[cfg(test)]", 1)[0]


@functools.cache
def service_variables() -> set[str]:
    """Every variable billing-service reads through its configuration, by the names written in
    configuration.rs, auth/ and telemetry.rs (outside their tests): the first argument of each
    read (`reader.optional("X")`, `secs("X", ...)`, `env.get("X")`, ...), the database parts the
    URL is built from, and SERVER_PORT's fallback PORT."""
    names: set[str] = set()
    files = [SERVICE_SRC / "configuration.rs", SERVICE_SRC / "telemetry.rs", *sorted((SERVICE_SRC / "auth").glob("*.rs"))]
    for path in files:
        source = _without_tests(path.read_text())
        names.update(re.findall(r'\(\s*"([A-Z][A-Z0-9_]*)"', source))
        for parts in re.findall(r"const PARTS: \[&str; \d+\] = \[(.*?)\];", source, re.S):
            names.update(re.findall(r'"([A-Z][A-Z0-9_]*)"', parts))
        names.update(re.findall(r'=> "([A-Z][A-Z0-9_]*)"', source))
    return names


def rust_sources() -> list[Path]:
    return sorted(SERVICE_SRC.rglob("*.rs"))


@functools.cache
def service_routes() -> set[tuple[str, str]]:
    """(method, path) of every `.route(Method::X, "/path", ...)` in billing-service/src/routes."""
    routes = set()
    for path in sorted((SERVICE_SRC / "routes").glob("*.rs")):
        routes.update(re.findall(r'\.route\(\s*Method::([A-Z]+),\s*"([^"]+)"', _without_tests(path.read_text())))
    return routes


def required_with_jwt() -> set[str]:
    """Variables the README's configuration table marks `required with `jwt``."""
    names = set()
    for line in (REPO / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`") and re.fullmatch(r"required with `jwt`", cells[1]):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0]))
    return names


def test_sources_are_read_as_expected():
    variables = service_variables()
    expected = {
        "STRIPE_API_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "DATABASE_URL", "DATABASE_ENGINE", "DATABASE_HOST",
        "DATABASE_PORT", "DATABASE_NAME", "DATABASE_USERNAME", "DATABASE_PASSWORD", "DATABASE_SSLMODE",
        "DATABASE_CONNECT_RETRY_SECS", "FRONTEND_URL", "BACKEND_URL", "AUTH_MODE", "AUTH_JWKS_URL",
        "AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_USER_CLAIM", "LOG_FORMAT", "HTTP_REQUEST_TIMEOUT_SECS",
        "WEBHOOK_HANDLER_TIMEOUT_SECS", "SERVER_PORT", "PORT",
    }
    assert expected <= variables, f"not found in the sources any more: {sorted(expected - variables)}"
    assert {("GET", "/metrics"), ("POST", "/webhook/stripe"), ("GET", "/status/ready")} <= service_routes()
    assert {"AUTH_JWKS_URL", "AUTH_ISSUER", "AUTH_AUDIENCE"} <= required_with_jwt()
    assert set(FUNCTIONS) == set(resources("AWS::Serverless::Function")), "the functions are not the ones this module checks"


# ---------------------------------------------------------------------------------------------
# Environment: only what the service reads, everything it requires


def test_every_variable_the_template_sets_is_read_by_the_service():
    known = service_variables() | LAMBDA_VARIABLES
    for name in FUNCTIONS:
        unknown = sorted(set(environment(name)) - known)
        assert not unknown, f"{name} sets {unknown}, which billing-service does not read"


def test_lambda_variables_are_read_by_the_binary():
    """The Lambda-only names are in billing-service/src, so renaming one there fails here."""
    sources = "\n".join(_without_tests(p.read_text()) for p in rust_sources())
    missing = sorted(v for v in LAMBDA_VARIABLES if f'"{v}"' not in sources)
    assert not missing, f"billing-service/src never names {missing}, which the template sets"


def test_secrets_come_from_the_two_secret_parameters():
    for name in FUNCTIONS:
        ids = environment(name)["SECRETS_MANAGER_SECRET_IDS"]
        assert ids == {"Fn::Sub": ",".join(f"${{{p}}}" for p in SECRET_PROVIDES)}, f"{name}: {ids}"
        for parameter in SECRET_PROVIDES:
            definition = template()["Parameters"][parameter]
            assert definition["Type"] == "String" and "Default" not in definition, parameter
            assert definition["AllowedPattern"].startswith("^arn:aws[a-z-]*:secretsmanager:"), parameter
    stripe = template()["Parameters"]["StripeSecretArn"]["Description"]
    for key in SECRET_PROVIDES["StripeSecretArn"]:
        assert key in stripe, f"StripeSecretArn's description does not name the key {key}"


def test_required_variables_are_provided_by_the_template_or_the_secrets():
    required = required_variables() | required_with_jwt()
    for name in FUNCTIONS:
        secrets = set(sub_names(environment(name)["SECRETS_MANAGER_SECRET_IDS"]))
        provided = set(environment(name)).union(*(SECRET_PROVIDES[s] for s in secrets))
        missing = sorted(required - provided)
        assert not missing, f"{name}: {missing} set neither by the template nor by a secret"


def test_secrets_are_not_in_the_template():
    for name in FUNCTIONS:
        leaked = sorted(set(environment(name)) & set().union(*SECRET_PROVIDES.values()))
        assert not leaked, f"{name} sets {leaked} in plain text; they come from Secrets Manager"


def test_users_are_identified_by_jwt():
    for name in FUNCTIONS:
        env = environment(name)
        assert env["AUTH_MODE"] == "jwt", f"{name}: AUTH_MODE={env['AUTH_MODE']!r}; the binary refuses anything else on Lambda"
        for variable, parameter in [("AUTH_JWKS_URL", "AuthJwksUrl"), ("AUTH_ISSUER", "AuthIssuer"), ("AUTH_AUDIENCE", "AuthAudience")]:
            assert ref(env[variable]) == parameter, f"{name}: {variable}"
            assert "Default" not in template()["Parameters"][parameter], f"{parameter} must be given"
    assert template()["Parameters"]["AuthJwksUrl"]["AllowedPattern"].startswith("^https://")


def test_database_is_reached_through_the_proxy_over_verified_tls():
    proxy = resource("DatabaseProxy")["Properties"]
    assert proxy["RequireTLS"] is True
    engines = template()["Parameters"]["DatabaseEngine"]["AllowedValues"]
    assert set(engines) <= {"postgres", "mysql"}, engines
    proxy_ports = {str(p) for p in if_branches(resource("FunctionToProxyEgress")["Properties"]["FromPort"])}
    assert proxy_ports == {"5432", "3306"}
    for name in FUNCTIONS:
        env = environment(name)
        assert get_att(env["DATABASE_HOST"]) == ["DatabaseProxy", "Endpoint"], name
        assert ref(env["DATABASE_ENGINE"]) == "DatabaseEngine", name
        # The proxy listens on its engine's port whatever the database's: the secret's port
        # (the database's) must not be used.
        assert {str(p) for p in if_branches(env["DATABASE_PORT"])} == proxy_ports, name
        assert env["DATABASE_SSLMODE"] == "verify-full", name
        assert "DATABASE_URL" not in env, f"{name}: DATABASE_URL would override the proxy and the secret"


def test_log_format_is_json():
    for name in FUNCTIONS:
        assert environment(name)["LOG_FORMAT"] == "json", name
        assert function(name)["LoggingConfig"].get("LogFormat", "Text") == "Text", f"{name}: the service writes JSON itself"


# ---------------------------------------------------------------------------------------------
# The HTTP API


def routes() -> dict[str, tuple[str, str]]:
    """Route resource name -> (method, path)."""
    out = {}
    for name, route in resources("AWS::ApiGatewayV2::Route").items():
        method, _, path = route["Properties"]["RouteKey"].partition(" ")
        out[name] = (method, path)
    return out


def test_http_api_routes_are_the_services_routes_except_metrics():
    served = {route for route in routes().values() if route[0] != "OPTIONS"}
    expected = service_routes() - NOT_PUBLIC
    assert served == expected, f"missing: {sorted(expected - served)}; not served by billing-service: {sorted(served - expected)}"
    assert not served & NOT_PUBLIC
    assert not resources("AWS::Serverless::HttpApi") and not resources("AWS::Serverless::Api"), (
        "a SAM API would add routes of its own"
    )
    for name, (method, path) in routes().items():
        # A named parameter matches one segment under its own prefix; a greedy one (`{proxy+}`)
        # or ANY would reach /metrics.
        assert method != "ANY" and "+}" not in path and path != "$default", f"{name} would route /metrics too"


def test_preflight_routes_reach_the_services_cors():
    """The service answers CORS preflights itself: an OPTIONS route for what the frontend fetches,
    on a path the service routes."""
    # The service's CORS wraps its /billing/* routes (routes/mod.rs), the only ones a browser calls.
    routes_module = (SERVICE_SRC / "routes" / "mod.rs").read_text()
    assert "CorsLayer" in routes_module, "the service no longer answers CORS: configure it on the HTTP API instead"
    paths = {path for method, path in service_routes() if method != "OPTIONS"}
    preflight = {path for method, path in routes().values() if method == "OPTIONS"}
    assert preflight, "no OPTIONS route: browsers' preflights would get API Gateway's 404"
    assert preflight <= paths and all(p.startswith("/billing/") for p in preflight), sorted(preflight)
    for path in ("/billing/checkout", "/billing/portal", "/billing/subscription", "/billing/entitlements"):
        assert path in preflight, f"{path} is fetched with a bearer token or JSON, hence preflighted"
    assert "CorsConfiguration" not in resource("HttpApi")["Properties"], "API Gateway's CORS would replace the service's"


def test_every_route_reaches_the_api_function():
    integration = resource("ApiIntegration")["Properties"]
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert integration["PayloadFormatVersion"] == "2.0"
    assert get_att(integration["IntegrationUri"]) == ["ApiFunction", "Arn"]
    for name, route in resources("AWS::ApiGatewayV2::Route").items():
        assert ref(route["Properties"]["ApiId"]) == "HttpApi", name
        assert sub_names(route["Properties"]["Target"]) == ["ApiIntegration"], name
        assert route["Properties"].get("AuthorizationType", "NONE") == "NONE", f"{name}: the service checks tokens itself"
    stage = resource("ApiStage")["Properties"]
    assert stage["StageName"] == "$default" and stage["AutoDeploy"] is True
    for name in FUNCTIONS:
        assert sub_names(if_branches(environment(name)["BACKEND_URL"])[-1]) == ["HttpApi", "AWS::Region", "AWS::URLSuffix"]


def test_api_function_answers_before_api_gateway_gives_up():
    api = function("ApiFunction")
    env = environment("ApiFunction")
    assert api["Timeout"] < API_GATEWAY_TIMEOUT_SECS
    assert int(env["HTTP_REQUEST_TIMEOUT_SECS"]) < api["Timeout"]
    assert int(env["WEBHOOK_HANDLER_TIMEOUT_SECS"]) < int(env["HTTP_REQUEST_TIMEOUT_SECS"])
    assert resource("ApiIntegration")["Properties"]["TimeoutInMillis"] <= API_GATEWAY_TIMEOUT_SECS * 1000


# ---------------------------------------------------------------------------------------------
# The functions: built alike, logged, scheduled, migrating


def test_functions_are_the_billing_service_binary_on_arm64():
    for name in FUNCTIONS:
        fn = function(name)
        assert fn["Runtime"] == "provided.al2023", name
        assert fn["Architectures"] == ["arm64"], name
        assert fn["Handler"] == "bootstrap", name
        metadata = resource(name).get("Metadata", {})
        assert metadata.get("BuildMethod") == "rust-cargolambda", name
        assert metadata.get("BuildProperties", {}).get("Binary") == BINARY, name
        code = (TEMPLATE.parent / fn["CodeUri"]).resolve()
        assert code == REPO, f"{name}: CodeUri is {code}, not the workspace root"
    assert re.search(rf'^name = "{BINARY}"$', (REPO / BINARY / "Cargo.toml").read_text(), re.M)


def test_secrets_extension_layer_is_the_arm64_one():
    for name in FUNCTIONS:
        (layer,) = function(name)["Layers"]
        for choice in if_branches(layer):
            text = choice if isinstance(choice, str) else template()["Parameters"][ref(choice)]["AllowedPattern"]
            assert re.search(r"(?i)arm64", text), f"{name}: {choice} is not the ARM64 extension"


def test_every_function_logs_to_a_group_of_its_own_with_retention():
    groups = {}
    for name in FUNCTIONS:
        group = ref(function(name)["LoggingConfig"]["LogGroup"])
        assert group and resource(group)["Type"] == "AWS::Logs::LogGroup", name
        groups[name] = group
    assert len(set(groups.values())) == len(FUNCTIONS), groups
    for name, group in resources("AWS::Logs::LogGroup").items():
        assert "RetentionInDays" in group["Properties"], f"{name} keeps logs for ever"


def role_of(function_name: str) -> tuple[str, dict]:
    role = get_att(function(function_name)["Role"])
    assert role and role[1] == "Arn", f"{function_name} has no role of this template's"
    return role[0], resource(role[0])["Properties"]


def statements(role: dict) -> list[dict]:
    out = []
    for policy in role.get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            out.extend(s for s in if_branches(statement) if isinstance(s, dict) and "Effect" in s)
    return out


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_each_function_writes_only_its_own_logs():
    for name in FUNCTIONS:
        role_name, role = role_of(name)
        group = ref(function(name)["LoggingConfig"]["LogGroup"])
        logs = [s for s in statements(role) if any(a.startswith("logs:") for a in as_list(s["Action"]))]
        assert logs, f"{role_name} cannot write logs"
        for statement in logs:
            assert [get_att(r) for r in as_list(statement["Resource"])] == [[group, "Arn"]], f"{role_name}: {statement}"
            assert "logs:CreateLogGroup" not in as_list(statement["Action"]), role_name
        managed = " ".join(str(p) for p in role.get("ManagedPolicyArns", []))
        assert "AWSLambdaBasicExecutionRole" not in managed and "AWSLambdaVPCAccessExecutionRole" not in managed, (
            f"{role_name}: those managed policies allow logs to every group"
        )


def test_secrets_manager_permissions_name_the_secrets():
    for role_name, role in resources("AWS::IAM::Role").items():
        for statement in statements(role["Properties"]):
            actions = as_list(statement["Action"])
            assert "*" not in actions and not any(a.endswith(":*") for a in actions), f"{role_name}: {actions}"
            if not any(a.startswith("secretsmanager:") for a in actions):
                continue
            assert actions == ["secretsmanager:GetSecretValue"], f"{role_name}: {actions}"
            for target in as_list(statement["Resource"]):
                assert ref(target) in SECRET_PROVIDES, f"{role_name}: GetSecretValue on {target}, not on a secret parameter"
    for name in FUNCTIONS:
        role_name, role = role_of(name)
        granted = {
            ref(r)
            for s in statements(role)
            if "secretsmanager:GetSecretValue" in as_list(s["Action"])
            for r in as_list(s["Resource"])
        }
        assert granted == set(sub_names(environment(name)["SECRETS_MANAGER_SECRET_IDS"])), f"{role_name}: {granted}"


def test_kms_decrypt_only_for_the_given_key_through_secrets_manager():
    for role_name, role in resources("AWS::IAM::Role").items():
        for statement in statements(role["Properties"]):
            if "kms:Decrypt" in as_list(statement["Action"]):
                assert ref(statement["Resource"]) == "SecretsKmsKeyArn", role_name
                assert "kms:ViaService" in statement["Condition"]["StringEquals"], role_name


def test_jobs_run_every_minute_one_at_a_time():
    jobs = function("JobsFunction")
    schedules = [e for e in jobs["Events"].values() if e["Type"] == "Schedule"]
    assert [e["Properties"]["Schedule"] for e in schedules] == ["rate(1 minute)"]
    assert jobs["ReservedConcurrentExecutions"] == 1
    assert "SYNC_EVENTS_LOOKBACK" in environment("JobsFunction")
    assert not function("ApiFunction").get("Events"), "the API function is reached through the HTTP API only"


def test_every_new_version_is_migrated_before_the_api_serves_it():
    migrations = resource("DatabaseMigrations")
    assert migrations["Type"] == "Custom::DatabaseMigrations"
    properties = migrations["Properties"]
    assert get_att(properties["ServiceToken"]) == ["JobsFunction", "Arn"]
    alias = function("JobsFunction").get("AutoPublishAlias")
    assert alias, "without AutoPublishAlias JobsFunction has no version to migrate on"
    assert {"Ref": "JobsFunction.Version"} in properties.values(), "no property changes with the code: new code would not migrate"
    depends = as_list(resource("ApiFunction").get("DependsOn", []))
    assert "DatabaseMigrations" in depends, "the API function (and so its routes) must wait for the migrations"
    assert "DatabaseProxyTargetGroup" in as_list(migrations.get("DependsOn", [])), "migrations need the proxy's target"


# ---------------------------------------------------------------------------------------------
# Network: functions -> proxy -> database, nothing else in


def ingress_sources(group: str) -> list:
    """What each ingress rule of a security group (by resource name or parameter) admits."""
    sources = []
    for name, rule in resources("AWS::EC2::SecurityGroupIngress").items():
        if ref(rule["Properties"]["GroupId"]) == group:
            sources.append(ref(rule["Properties"].get("SourceSecurityGroupId")) or rule["Properties"])
    for inline in resource(group)["Properties"].get("SecurityGroupIngress", []) if group in template()["Resources"] else []:
        sources.append(inline)
    return sources


def test_only_the_functions_reach_the_proxy_and_only_the_proxy_the_database():
    for name in FUNCTIONS:
        assert function(name)["VpcConfig"]["SecurityGroupIds"] == [{"Ref": "FunctionSecurityGroup"}], name
    assert resource("DatabaseProxy")["Properties"]["VpcSecurityGroupIds"] == [{"Ref": "ProxySecurityGroup"}]
    assert ingress_sources("FunctionSecurityGroup") == []
    assert ingress_sources("ProxySecurityGroup") == ["FunctionSecurityGroup"]
    assert ingress_sources("DatabaseSecurityGroupId") == ["ProxySecurityGroup"]
