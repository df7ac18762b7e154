"""Static checks of the deployment: azure.yaml, infra/*.bicep, main.parameters.json.

There is no Bicep compiler or azd here, so the templates are checked three ways:
every .bicep file is parsed (pycep-parser, through scripts/parse_bicep.py), checkov's Bicep
policies run over infra/, and the parsed templates are asserted against what the app and the
design need (role ids and scopes, identity-only access, the full app setting list, the app
registration). Tools run from .venv-infra (scripts/infra-tools.sh), never the app venv.
On a connected machine, also run `az bicep build --file infra/main.bicep` and
`azd provision --preview` (docs/deploy.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.infra

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
INFRA_VENV = REPO / ".venv-infra"
INFRA_PYTHON = INFRA_VENV / "bin" / "python"

# Every app setting the app reads in Azure (shared/base/settings.py) plus the Functions host's own.
# Keep in step with infra/app/appsettings.bicep `settings`; the test demands equality.
EXPECTED_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "ENTRA_CLIENT_ID",
    "ENTRA_TENANT",
    "ENTRA_HOME_TENANT",
    "AZURE_CLOUD",
    "ENTRA_CLIENT_CREDENTIAL",
    "MANAGED_IDENTITY_CLIENT_ID",
    "KEY_VAULT_URL",
    "KEY_VAULT_AUTH",
    "KEY_VAULT_KEY_NAME",
    "TICKET_SIGNING_KEY",
    "OUTBOUND_QUEUE",
    "EVENTS_QUEUE",
    "ATTACHMENTS_CONTAINER",
    "PUBLIC_BASE_URL",
    "ALLOWED_RETURN_ORIGINS",
    "CALLBACK_QUEUES",
    "TENANT_EXTERNAL_RECIPIENT_LIMITS",
    "EVENTS_MESSAGE_ENCODING",
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
    "WEBHOOK_ALLOW_PRIVATE_TARGETS",
    "WEBHOOK_QUEUE",
    "REFRESH_AFTER_DAYS",
    "REFRESH_SCHEDULE",
    "KEEPALIVE_CONCURRENCY",
    "KEEPALIVE_RUN_SECONDS",
    "TOKEN_KEY_CACHE_SIZE",
    "MAX_MESSAGE_BYTES",
    "MAILBOX_CONCURRENCY",
    "MAILBOX_MESSAGES_PER_MINUTE",
    "MAILBOX_RECIPIENTS_PER_DAY",
    "SEND_AS_ENDPOINT",
    "ENABLE_SHARED_MAILBOXES",
    "ENABLE_MAIL_READWRITE",
    "ENABLE_SAMPLE_UI",
}
# Local-only settings that must never be configured in Azure.
FORBIDDEN_SETTINGS = {"ENTRA_CLIENT_SECRET", "AzureWebJobsStorage", "ENTRA_AUTHORITY_HOST", "GRAPH_ENDPOINT"}

ROLE_IDS = {
    "keyVaultSecretsOfficer": ("b86a8fe4-44ce-4948-aee5-eccb2c155cd7", "Key Vault Secrets Officer"),
    "keyVaultCryptoServiceEncryptionUser": (
        "e147488a-f6f5-4113-8e2d-b22465e65bf6",
        "Key Vault Crypto Service Encryption User",
    ),
    "keyVaultCryptoUser": ("12338af0-0e69-4776-bea7-57ae8d297424", "Key Vault Crypto User"),
    "storageQueueDataContributor": ("974c5e8b-45b9-4653-ba55-5f855dd0fb88", "Storage Queue Data Contributor"),
    "storageTableDataContributor": ("0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", "Storage Table Data Contributor"),
    "storageBlobDataOwner": ("b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "Storage Blob Data Owner"),
    "storageBlobDataContributor": ("ba92f5b4-2d11-453d-a403-e96b0029c9fe", "Storage Blob Data Contributor"),
    "monitoringMetricsPublisher": ("3913510d-42f4-4e42-8a64-420c390055eb", "Monitoring Metrics Publisher"),
}
# Queue-scoped roles for producers and event readers (REFERENCE.md; docs/producers.md).
QUEUE_ROLE_IDS = {
    "storageQueueDataMessageSender": ("c6a89b2d-59bc-44d0-9896-0f6e12d7b80a", "Storage Queue Data Message Sender"),
    "storageQueueDataMessageProcessor": (
        "8a0f0c08-91a1-4084-bc3d-661d67233fed",
        "Storage Queue Data Message Processor",
    ),
    "storageQueueDataReader": ("19e7f393-937e-4f77-808e-94535e297925", "Storage Queue Data Reader"),
}
# Every fixed role assignment in rbac.bicep: (principal, role key) -> (scope, the array it loops over or None).
# The app identity (its code reads blobs by producer-given names) reaches only the mail data: its containers,
# its tables, message-send on queues; the host identity holds what the Functions host needs (issue 23).
ASSIGNMENTS = {
    ("appPrincipalId", "keyVaultSecretsOfficer"): ("vault", None),
    # The only identity that can open a sealed token cache (issue 26): unwrap with the token key, nothing else.
    ("appPrincipalId", "keyVaultCryptoServiceEncryptionUser"): ("tokenKey", None),
    ("appPrincipalId", "storageQueueDataMessageSender"): ("storage", None),
    ("appPrincipalId", "storageTableDataContributor"): ("appTables[i]", "appTableNames"),
    ("appPrincipalId", "storageBlobDataContributor"): ("appContainers[i]", "appContainerNames"),
    ("appPrincipalId", "monitoringMetricsPublisher"): ("applicationInsights", None),
    ("hostPrincipalId", "storageBlobDataOwner"): ("storage", None),
    ("hostPrincipalId", "storageQueueDataContributor"): ("hostQueues[i]", "hostQueueNames"),
    ("hostPrincipalId", "storageTableDataContributor"): ("storage", None),
    # The deploying principal: data roles for local runs, only when deployerDataAccess asks (default false).
    ("userPrincipalId", "keyVaultSecretsOfficer"): ("vault", None),
    ("userPrincipalId", "keyVaultCryptoUser"): ("tokenKey", None),
    ("userPrincipalId", "storageQueueDataContributor"): ("storage", None),
    ("userPrincipalId", "storageTableDataContributor"): ("storage", None),
    ("userPrincipalId", "storageBlobDataOwner"): ("storage", None),
    ("userPrincipalId", "monitoringMetricsPublisher"): ("applicationInsights", None),
}
# Loops over principals (producers, event readers), checked by their own test.
PRINCIPAL_LOOPS = {"producerPrincipalIds", "eventReaderPrincipalIds"}

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_DELEGATED_SCOPES = {
    "mailSend": "e383f46e-2787-4529-855e-0e479a3ffac0",  # Mail.Send
    "mailSendShared": "a367ab51-6b49-43bf-a716-a1fb06d2a174",  # Mail.Send.Shared
    "mailReadWrite": "024d486e-b451-40bb-833d-3e66d98c5c73",  # Mail.ReadWrite
    "openid": "37f7f235-527c-4136-accd-4a02d197296e",
    "profile": "14dad69e-099b-42c9-810b-d002981feec1",
    "offlineAccess": "7427e0e9-2fba-42fe-b0c0-848c9e6a8182",
}

# The documented checkov skip list: check id -> why it does not apply. Each skip is also
# justified in a `// checkov:skip=ID: reason` comment next to the resource; the test fails
# on any skip that is not listed here, and on any listed one that checkov no longer reports.
CHECKOV_SKIPS = {
    "CKV_AZURE_13": "App Service Authentication: users sign in through the app's own OAuth flow",
    "CKV_AZURE_17": "client certificates would break the browser OAuth redirects",
    "CKV_AZURE_40": "an expiry on the token key would stop every unwrap at once; rotate by a new version",
    "CKV_AZURE_112": "a Standard vault has no HSM keys; erasure deletes the wrapped data keys, not the key",
    "CKV_AZURE_35": "storage firewall: Flex Consumption without VNet uses the public endpoint; keys are off",
    "CKV_AZURE_41": "secret expiry would silently break ticket verification; rotation is documented",
    "CKV_AZURE_59": "storage public network access needed without VNet; anonymous blob access is off",
    "CKV_AZURE_63": "HTTP logging is web config, not an app setting (false positive on sites/config)",
    "CKV_AZURE_65": "detailed errors is web config, not an app setting (false positive)",
    "CKV_AZURE_66": "failed request tracing is web config, not an app setting (false positive)",
    "CKV_AZURE_80": ".NET Framework version does not apply to Python",
    "CKV_AZURE_88": "Flex Consumption has no Azure Files content share",
    "CKV_AZURE_109": "Key Vault firewall: no fixed outbound addresses without VNet; RBAC-only access",
    "CKV_AZURE_131": "secure param default is newGuid(), not a hard-coded value",
    "CKV_AZURE_189": "Key Vault public network access needed without VNet; RBAC-only access",
    "CKV_AZURE_206": "geo-replication is an operator choice (skuName parameter)",
    "CKV_AZURE_212": "Flex Consumption scales from zero; always-ready instances are a cost choice",
    "CKV_AZURE_213": "Flex Consumption has no App Service health check",
    "CKV_AZURE_222": "browsers must reach the OAuth callbacks, so the app is public",
    "CKV_AZURE_225": "Flex Consumption zone redundancy exists only in some regions",
}
# checkov's pinned parser (pycep-parser 0.5.1) cannot read the `extension` keyword, so this one
# file is left out of the checkov run; it declares only Microsoft.Graph resources, for which
# checkov has no policies. The newer parser below does read it, and the assertions cover it.
CHECKOV_SKIP_PATHS = ["app/appregistration.bicep"]


# --------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def infra_tools() -> Path:
    """Create or refresh .venv-infra once per session (a no-op when the stamp matches)."""
    env = {**os.environ, "CI": os.environ.get("CI", "true"), "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "infra-tools.sh")],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"infra-tools.sh failed:\n{result.stdout}\n{result.stderr}"
    assert INFRA_PYTHON.exists()
    return INFRA_PYTHON


@pytest.fixture(scope="module")
def parsed(infra_tools: Path) -> dict[str, Any]:
    """Every .bicep file under infra/, parsed: {"parser_version", "files": {path: result}}."""
    result = subprocess.run(
        [str(infra_tools), str(REPO / "scripts" / "parse_bicep.py"), str(INFRA)],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def templates(parsed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Parsed templates by path relative to infra/ (only files that parsed)."""
    return {path: entry["template"] for path, entry in parsed["files"].items() if entry["ok"]}


@pytest.fixture(scope="module")
def checkov_report(infra_tools: Path) -> dict[str, Any]:
    """checkov's JSON report for infra/ (Bicep framework, offline)."""
    command = [
        str(infra_tools.parent / "checkov"),
        "--framework",
        "bicep",
        "--skip-download",
        "--directory",
        str(INFRA),
        "--output",
        "json",
    ]
    for path in CHECKOV_SKIP_PATHS:
        command += ["--skip-path", re.escape(path)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    # checkov exits 1 when a check fails; the report says which.
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    if isinstance(report, list):  # one entry per framework
        (report,) = [r for r in report if r.get("check_type") == "bicep"]
    return report


def source(path: str) -> str:
    """Raw text of a file under infra/."""
    return (INFRA / path).read_text(encoding="utf-8")


def expr(node: Any) -> Any:
    """Render a parsed expression back to compact Bicep-like text; literals pass through.

    pycep gives identifiers and string literals the same shape, so a rendered plain string may be
    either; tests that need to tell them apart also look at the source text.
    """
    if isinstance(node, dict):
        # A property literally named `operator` or `function` (alert criteria) holds a string, not an expression.
        if isinstance(node.get("operator"), dict):
            op = node["operator"]
            operands = op.get("operands", {})
            if op["type"] == "property_accessor":
                return f"{expr(operands['operand_1'])}.{expr(operands['operand_2'])}"
            if op["type"] == "index_accessor":
                return f"{expr(operands['operand_1'])}[{expr(operands['operand_2'])}]"
            if op["type"] == "not":
                return "!" + str(expr(next(iter(operands.values()))))
            if op["type"] == "conditional":
                return (
                    f"{expr(operands['condition'])} ? {expr(operands['true_value'])} : {expr(operands['false_value'])}"
                )
            return f"{op['type']}({', '.join(str(expr(v)) for v in operands.values())})"
        if isinstance(node.get("function"), dict):
            fn = node["function"]
            args = [str(expr(v)) for v in (fn.get("parameters") or {}).values() if v is not None]
            return f"{fn['type']}({', '.join(args)})"
        return {k: expr(v) for k, v in node.items()}
    if isinstance(node, list):
        return [expr(v) for v in node]
    return node


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's properties, unwrapped from a condition (`= if (...) {}`)."""
    config = resource["config"]
    if "condition" in config and "config" in config:
        return config["config"]
    return config


def condition(resource: dict[str, Any]) -> Any:
    """The rendered `if (...)` condition of a resource or module, or None."""
    config = resource["config"]
    return expr(config["condition"]) if "condition" in config and "config" in config else None


def resources_of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    """Resources of one type (no `existing` references)."""
    return {
        name: res
        for name, res in template.get("resources", {}).items()
        if res["type"] == type_ and not res.get("existing")
    }


def only(template: dict[str, Any], type_: str) -> dict[str, Any]:
    """The single resource of a type, unwrapped."""
    found = resources_of_type(template, type_)
    assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
    return body(next(iter(found.values())))


def param_default(template: dict[str, Any], name: str) -> Any:
    """Default value of a parameter (raises if the parameter is missing)."""
    return template["parameters"][name]["default"]


def allowed(template: dict[str, Any], name: str) -> list[Any] | None:
    """The @allowed list of a parameter, if any."""
    for decorator in template["parameters"][name]["decorators"]:
        if decorator["type"] == "allowed":
            return decorator["argument"]
    return None


def app_settings(templates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every app setting, rendered: appsettings.bicep's `coreSettings` plus main.bicep's `limitSettings`
    (the per-mailbox limits), which appsettings.bicep unions into `settings`."""
    core = expr(templates["app/appsettings.bicep"]["variables"]["coreSettings"]["value"])
    limits = expr(templates["main.bicep"]["variables"]["limitSettings"]["value"])
    assert not set(core) & set(limits), "a setting is defined twice"
    return {**core, **limits}


def walk(node: Any):
    """Every dict key and every scalar in a parsed tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)
    else:
        yield node


# --------------------------------------------------------------------------------------------
# tooling and syntax


def test_infra_tools_is_idempotent(infra_tools: Path) -> None:
    """A second run finds the stamp and installs nothing (CI runs it on every test session)."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "infra-tools.sh")],
        cwd=REPO,
        env={**os.environ, "CI": "true", "PYTHON": sys.executable},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_every_bicep_file_parses(parsed: dict[str, Any]) -> None:
    assert parsed["parser_version"] == "0.7.1"
    on_disk = {p.relative_to(INFRA).as_posix() for p in INFRA.rglob("*.bicep")}
    assert set(parsed["files"]) == on_disk
    failures = {path: entry["error"] for path, entry in parsed["files"].items() if not entry["ok"]}
    assert failures == {}
    assert {
        "main.bicep",
        "app/appregistration.bicep",
        "app/appsettings.bicep",
        "app/rbac.bicep",
        "core/host/functions-flexconsumption.bicep",
        "core/security/keyvault.bicep",
        "core/storage/storage-account.bicep",
        "core/monitor/monitoring.bicep",
        "core/monitor/alerts.bicep",
        "core/identity/user-assigned-identity.bicep",
    } <= on_disk


def test_modules_are_wired_like_a_compiler_would(templates: dict[str, dict[str, Any]]) -> None:
    """Each module main.bicep calls exists, gets only params it declares, and all it requires."""
    main = templates["main.bicep"]
    assert main["modules"], "main.bicep composes modules"
    for symbol, module in main["modules"].items():
        path = module["detail"]["path"]
        assert path in templates, f"module {symbol}: {path} missing or unparsable"
        declared = templates[path].get("parameters", {})
        passed = body(module)["params"]
        unknown = set(passed) - set(declared)
        assert not unknown, f"module {symbol} passes undeclared params {unknown}"
        required = {name for name, p in declared.items() if p.get("default") is None}
        assert required <= set(passed), f"module {symbol} misses required params {required - set(passed)}"
        assert body(module)["scope"] == "rg", f"module {symbol} must deploy into the resource group"


def test_checkov_passes_with_only_documented_skips(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    failed = [(c["check_id"], c["file_path"], c["resource"]) for c in checkov_report["results"]["failed_checks"]]
    assert failed == []
    assert summary["parsing_errors"] == 0, checkov_report["results"].get("parsing_errors")
    assert summary["passed"] >= 20  # it really scanned the storage, vault, site, plan, secrets
    skipped = checkov_report["results"]["skipped_checks"]
    skipped_ids = {c["check_id"] for c in skipped}
    assert skipped_ids == set(CHECKOV_SKIPS), "update CHECKOV_SKIPS and the // checkov:skip comments together"
    for check in skipped:
        comment = check.get("check_result", {}).get("suppress_comment", "")
        assert len(comment) > 20 and comment != "No comment provided", f"{check['check_id']} skip lacks a reason"


def test_checkov_skip_comments_carry_reasons() -> None:
    pattern = re.compile(r"//\s*checkov:skip=(CKV_[A-Z]+_\d+)(:?)(.*)")
    found = {}
    for path in INFRA.rglob("*.bicep"):
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            assert match.group(2) == ":" and len(match.group(3).strip()) > 20, f"{path}: {match.group(0)}"
            found.setdefault(match.group(1), []).append(path.name)
    assert set(found) == set(CHECKOV_SKIPS)


# --------------------------------------------------------------------------------------------
# azd wiring


def test_azure_yaml_declares_the_function_service(infra_tools: Path) -> None:
    result = subprocess.run(
        [str(infra_tools), "-c", "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"]
        + [str(REPO / "azure.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["name"] == "mailbridge"
    assert document["services"] == {"api": {"project": ".", "language": "python", "host": "function"}}
    assert document.get("infra", {}).get("path", "infra") == "infra"


def _parameter_values() -> dict[str, str]:
    """main.parameters.json as {parameter: "${AZD_VARIABLE=default}"}."""
    document = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    return {name: entry["value"] for name, entry in document["parameters"].items()}


def test_main_parameters_map_the_azd_variables(templates: dict[str, dict[str, Any]]) -> None:
    values = _parameter_values()
    assert values["environmentName"] == "${AZURE_ENV_NAME}"
    assert values["location"] == "${AZURE_LOCATION}"
    assert values["principalId"] == "${AZURE_PRINCIPAL_ID}"
    main_params = templates["main.bicep"]["parameters"]
    assert set(values) <= set(main_params), "parameters file names a param main.bicep lacks"
    required = {name for name, p in main_params.items() if p.get("default") is None}
    assert required <= set(values), f"required params not mapped: {required - set(values)}"
    # The random fallback key must only ever take its newGuid() default.
    assert "generatedTicketSigningKey" not in values
    # Outputs feed back into the azd environment: inputs must not share their names.
    outputs = set(templates["main.bicep"]["outputs"])
    for value in values.values():
        variable = re.fullmatch(r"\$\{([A-Z0-9_]+)(=.*)?\}", value)
        assert variable, value
        if variable.group(1) not in {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_CLOUD"}:
            assert variable.group(1) not in outputs, f"{variable.group(1)} is both an input and an output"


def test_bicepconfig_pins_the_graph_extension() -> None:
    config = json.loads((INFRA / "bicepconfig.json").read_text(encoding="utf-8"))
    assert config["extensions"]["microsoftGraphV1"] == "br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:1.0.0"


def test_main_bicep_conventions(templates: dict[str, dict[str, Any]]) -> None:
    main = templates["main.bicep"]
    assert main["globals"]["scope"]["value"] == "subscription"
    variables = {name: expr(v["value"]) for name, v in main["variables"].items()}
    assert variables["resourceToken"] == "to_lower(unique_string(subscription().id, environmentName, location))"
    assert variables["abbrs"] == "load_json_content(abbreviations.json)"
    rg = only(main, "Microsoft.Resources/resourceGroups")
    assert rg["name"] == "${abbrs.resourcesResourceGroups}${environmentName}"
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text(encoding="utf-8"))
    assert abbreviations["resourcesResourceGroups"] == "rg-"
    used = set(re.findall(r"abbrs\.(\w+)", source("main.bicep")))
    assert used <= set(abbreviations), f"unknown abbreviations {used - set(abbreviations)}"
    # Resources other than the group live in modules, one per concern.
    assert set(main["resources"]) == {"rg"}


def test_outputs_are_upper_snake_and_complete(templates: dict[str, dict[str, Any]]) -> None:
    outputs = templates["main.bicep"]["outputs"]
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in outputs), sorted(outputs)
    assert {
        "AZURE_LOCATION",
        "AZURE_TENANT_ID",
        "KEY_VAULT_URL",
        "ENTRA_CLIENT_ID",
        "AZURE_FUNCTION_APP_NAME",
        "PUBLIC_BASE_URL",
        "MANAGED_IDENTITY_CLIENT_ID",
    } <= set(outputs)
    assert expr(outputs["AZURE_TENANT_ID"]["value"]) == "tenant().tenantId"
    assert expr(outputs["KEY_VAULT_URL"]["value"]) == "keyVault.outputs.uri"


# --------------------------------------------------------------------------------------------
# no secrets anywhere


def test_no_keys_or_secrets_in_templates_outputs_or_settings(templates: dict[str, dict[str, Any]]) -> None:
    for path in INFRA.rglob("*.bicep"):
        text = path.read_text(encoding="utf-8")
        for needle in ("listKeys(", "listSecrets(", "AccountKey=", "SharedAccessSignature", "clientSecret"):
            assert needle.lower() not in text.lower(), f"{path.name} contains {needle}"
    secure_params = {
        (path, name)
        for path, template in templates.items()
        for name, param in template.get("parameters", {}).items()
        if any(d["type"] == "secure" for d in param["decorators"])
    }
    assert ("main.bicep", "ticketSigningKey") in secure_params
    assert ("main.bicep", "webhookSecret") in secure_params
    for path, template in templates.items():
        secure_names = {name for p, name in secure_params if p == path}
        for output_name, output in template.get("outputs", {}).items():
            rendered = json.dumps(expr(output["value"]))
            assert not re.search(r"(?i)secret(?!uri)|password|connectionstring|instrumentationkey", output_name), (
                f"{path}: output {output_name}"
            )
            assert not any(re.search(rf"\b{n}\b", rendered) for n in secure_names), f"{path}: {output_name}"
            assert "ConnectionString" not in rendered and "listKeys" not in rendered


def test_webhook_settings_flow_from_azd_and_the_secret_is_a_key_vault_reference(
    templates: dict[str, dict[str, Any]],
) -> None:
    settings = app_settings(templates)
    assert settings["WEBHOOK_URL"] == "webhookUrl" and settings["WEBHOOK_QUEUE"] == "webhookQueueName"
    # pycep renders string literals without quotes: '' is the empty string.
    assert (
        settings["WEBHOOK_SECRET"] == "empty(webhookSecretUri) ?  : @Microsoft.KeyVault(SecretUri=${webhookSecretUri})"
    )
    assert settings["EVENTS_MESSAGE_ENCODING"] == "eventsMessageEncoding"
    main = templates["main.bicep"]
    values = _parameter_values()
    assert values["webhookUrl"] == "${WEBHOOK_URL=}" and values["webhookSecret"] == "${WEBHOOK_SECRET=}"
    assert values["eventsMessageEncoding"] == "${EVENTS_MESSAGE_ENCODING=none}"
    assert allowed(main, "eventsMessageEncoding") == ["none", "base64"]
    assert param_default(main, "eventsMessageEncoding") == "none" and expr(param_default(main, "webhookUrl")) == ""
    from shared.base.settings import EVENT_ENCODINGS, Settings

    assert list(EVENT_ENCODINGS) == allowed(main, "eventsMessageEncoding")
    assert (
        expr(main["variables"]["webhookQueueName"]["value"]) == Settings.__dataclass_fields__["webhook_queue"].default
    )
    module = templates["app/webhook-secret.bicep"]
    assert any(d["type"] == "secure" for d in module["parameters"]["value"]["decorators"])
    assert only(module, "Microsoft.KeyVault/vaults/secrets")["properties"]["value"] == "value"
    call = {k: expr(v) for k, v in body(main["modules"]["appSettings"])["params"].items()}
    assert call["webhookSecretUri"] == "empty(webhookSecret) ?  : webhookSecretRef.outputs.secretUri"


def test_ticket_key_is_a_key_vault_reference(templates: dict[str, dict[str, Any]]) -> None:
    settings = app_settings(templates)
    assert settings["TICKET_SIGNING_KEY"] == "@Microsoft.KeyVault(SecretUri=${ticketKeySecretUri})"
    ticket = templates["app/ticket-key.bicep"]
    assert any(d["type"] == "secure" for d in ticket["parameters"]["value"]["decorators"])
    secret = only(ticket, "Microsoft.KeyVault/vaults/secrets")
    assert secret["properties"]["value"] == "value"
    assert expr(ticket["outputs"]["secretUri"]["value"]) == "secret.properties.secretUri"
    main = templates["main.bicep"]
    assert expr(param_default(main, "ticketSigningKey")) == ""
    assert param_default(main, "generatedTicketSigningKey") == "${newGuid()}${newGuid()}"
    assert expr(body(main["modules"]["ticketKey"])["params"]["value"]) == (
        "empty(ticketSigningKey) ? generatedTicketSigningKey : ticketSigningKey"
    )
    # The site resolves the reference as the user-assigned identity.
    site = only(templates["core/host/functions-flexconsumption.bicep"], "Microsoft.Web/sites")
    assert site["properties"]["keyVaultReferenceIdentity"] == "identityId"


# --------------------------------------------------------------------------------------------
# resources


def test_key_vault_is_rbac_with_soft_delete_and_purge_protection(templates: dict[str, dict[str, Any]]) -> None:
    template = templates["core/security/keyvault.bicep"]
    vault = only(template, "Microsoft.KeyVault/vaults")["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True
    assert vault["enablePurgeProtection"] is True
    assert vault["softDeleteRetentionInDays"] == "softDeleteRetentionInDays"
    assert param_default(template, "softDeleteRetentionInDays") == 90
    assert "accessPolicies" not in vault
    assert vault["enabledForTemplateDeployment"] is False


def test_storage_is_identity_only_with_the_app_queues_tables_and_containers(
    templates: dict[str, dict[str, Any]],
) -> None:
    template = templates["core/storage/storage-account.bicep"]
    account = only(template, "Microsoft.Storage/storageAccounts")["properties"]
    assert account["allowSharedKeyAccess"] is False
    assert account["allowBlobPublicAccess"] is False
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["supportsHttpsTrafficOnly"] is True
    assert account["defaultToOAuthAuthentication"] is True
    containers = resources_of_type(template, "Microsoft.Storage/storageAccounts/blobServices/containers")
    (container,) = containers.values()
    assert container["config"]["config"]["properties"]["publicAccess"] == "None"

    main = templates["main.bicep"]
    variables = {name: expr(v["value"]) for name, v in main["variables"].items()}
    params = body(main["modules"]["storage"])["params"]
    resolve = {
        "outboundQueueName": variables["outboundQueueName"],
        "eventsQueueName": variables["eventsQueueName"],
        "attachmentsContainerName": variables["attachmentsContainerName"],
        "deploymentContainerName": "<deployment>",
        "${outboundQueueName}-poison": variables["outboundQueueName"] + "-poison",
        "webhookQueueName": variables["webhookQueueName"],
        "${webhookQueueName}-poison": variables["webhookQueueName"] + "-poison",
    }
    from shared.base.settings import Settings

    webhooks = Settings.__dataclass_fields__["webhook_queue"].default
    assert {resolve.get(q, q) for q in params["queues"]} == {
        "outbound-mail",
        "outbound-mail-poison",
        "mail-events",
        webhooks,
        f"{webhooks}-poison",
    }
    # Exactly what the code uses: in Azure the app creates none of them (shared/base/storage.py creates_missing).
    from shared.base.settings import (
        AUTHFLOWS_TABLE,
        CONNECTIONS_TABLE,
        DELIVERIES_TABLE,
        PARKED_TABLE,
        TOKEN_CACHES_TABLE,
    )
    from shared.pacing.budget import BUDGETS_TABLE
    from shared.tokens.locks import LOCK_CONTAINER

    code_tables = {CONNECTIONS_TABLE, AUTHFLOWS_TABLE, DELIVERIES_TABLE, BUDGETS_TABLE, TOKEN_CACHES_TABLE}
    code_tables |= {PARKED_TABLE}
    assert params["tables"] == "appTableNames" and set(variables["appTableNames"]) == code_tables
    resolve["lockContainerName"] = variables["lockContainerName"]
    assert {resolve.get(c, c) for c in params["containers"]} == {"mail-attachments", "<deployment>", LOCK_CONTAINER}
    # The deployment package container is the one the function app deploys from.
    assert body(main["modules"]["functionApp"])["params"]["deploymentContainerName"] == "deploymentContainerName"


def test_function_app_is_flex_consumption_python_311_https_only(templates: dict[str, dict[str, Any]]) -> None:
    template = templates["core/host/functions-flexconsumption.bicep"]
    plan = only(template, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True
    site = only(template, "Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    # azd finds the app to deploy `api` to by this tag.
    assert expr(site["tags"]) == "union(tags, {\"'azd-service-name'\": 'serviceName'})"
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "runtimeName", "version": "runtimeVersion"}
    assert allowed(template, "runtimeName") == ["python"] and allowed(template, "runtimeVersion") == ["3.11"]
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["value"] == "${storageBlobEndpoint}${deploymentContainerName}"
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "hostIdentityId",
    }
    assert site["identity"]["userAssignedIdentities"] == {"'${identityId}'": {}, "'${hostIdentityId}'": {}}
    for policy in resources_of_type(template, "Microsoft.Web/sites/basicPublishingCredentialsPolicies").values():
        assert body(policy)["properties"]["allow"] is False
    call = body(templates["main.bicep"]["modules"]["functionApp"])["params"]
    assert call["runtimeName"] == "python" and call["runtimeVersion"] == "3.11" and call["serviceName"] == "api"
    assert re.search(r"runtimeVersion: '3\.11'", source("main.bicep"))  # a literal, not an identifier


def test_monitoring_disables_local_auth(templates: dict[str, dict[str, Any]]) -> None:
    template = templates["core/monitor/monitoring.bicep"]
    insights = only(template, "Microsoft.Insights/components")["properties"]
    assert insights["DisableLocalAuth"] is True
    assert expr(insights["WorkspaceResourceId"]) == "logAnalytics.id"
    workspace = only(template, "Microsoft.OperationalInsights/workspaces")["properties"]
    assert workspace["features"]["disableLocalAuth"] is True
    settings = app_settings(templates)
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"


# --------------------------------------------------------------------------------------------
# role assignments


def _assignments(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resources_of_type(template, "Microsoft.Authorization/roleAssignments")


def test_role_ids_are_the_documented_ones_and_commented(templates: dict[str, dict[str, Any]]) -> None:
    roles = templates["app/rbac.bicep"]["variables"]["roles"]["value"]
    assert roles == {key: role_id for key, (role_id, _) in {**ROLE_IDS, **QUEUE_ROLE_IDS}.items()}
    text = source("app/rbac.bicep")
    for role_id, role_name in {**ROLE_IDS, **QUEUE_ROLE_IDS}.values():
        assert re.search(rf"'{role_id}' // {re.escape(role_name)}\n", text), f"{role_name} id lacks its comment"


def _loop_array(resource: dict[str, Any]) -> str | None:
    loop = resource["config"].get("loop_type")
    return loop["detail"]["array_name"] if loop else None


def test_role_assignments_least_privilege_for_app_host_and_deployer(templates: dict[str, dict[str, Any]]) -> None:
    rbac = templates["app/rbac.bicep"]
    seen = {}
    for symbol, resource in _assignments(rbac).items():
        array = _loop_array(resource)
        if array in PRINCIPAL_LOOPS:
            continue  # producers and event readers: test_producers_and_event_readers_get_queue_scoped_roles
        config = body(resource)
        props = config["properties"]
        role_key = expr(props["roleDefinitionId"]).removeprefix(
            "subscription_resource_id(Microsoft.Authorization/roleDefinitions, roles."
        )[:-1]
        assert role_key in ROLE_IDS or role_key in QUEUE_ROLE_IDS, f"{symbol}: unexpected role {role_key}"
        principal = props["principalId"]
        scope = expr(config["scope"])
        key = (principal, role_key)
        assert key in ASSIGNMENTS, f"{symbol}: {principal} must not hold {role_key}"
        assert (scope, array) == ASSIGNMENTS[key], f"{symbol}: {role_key} scoped to {scope} (loop {array})"
        if principal == "userPrincipalId":
            assert props["principalType"] == "userPrincipalType"
            assert condition(resource) == "assignUser"
        else:
            assert props["principalType"] == "ServicePrincipal"
            assert condition(resource) is None
        assert expr(config["name"]) == f"guid({scope}.id, {principal}, roles.{role_key})"
        assert key not in seen, f"{symbol} and {seen.get(key)} assign the same role"
        seen[key] = symbol
    assert set(seen) == set(ASSIGNMENTS)
    assert param_default(rbac, "userPrincipalType") == "User"
    # No standing human access to tokens (issue 26): the deployer's data roles only when a parameter asks.
    assert expr(rbac["variables"]["assignUser"]["value"]) == "and(deployerDataAccess, !empty(userPrincipalId))"
    assert param_default(rbac, "deployerDataAccess") is False
    # The looped scopes are the named children of the app's storage account.
    existing = {name: res for name, res in rbac["resources"].items() if res.get("existing")}
    for symbol, parent, array in (
        ("appContainers", "blobService", "appContainerNames"),
        ("appTables", "tableService", "appTableNames"),
        ("hostQueues", "queueService", "hostQueueNames"),
    ):
        assert existing[symbol]["config"]["config"]["parent"] == parent
        assert _loop_array(existing[symbol]) == array
    for service in ("blobService", "tableService", "queueService"):
        assert existing[service]["config"] == {"parent": "storage", "name": "default"}
    # main passes the two identities, the deploying user, and the names it creates.
    main = templates["main.bicep"]
    variables = {name: expr(v["value"]) for name, v in main["variables"].items()}
    call = {k: expr(v) for k, v in body(main["modules"]["rbac"])["params"].items()}
    assert call["appPrincipalId"] == "identity.outputs.principalId"
    assert call["hostPrincipalId"] == "hostIdentity.outputs.principalId"
    assert call["userPrincipalId"] == "principalId"
    assert call["deployerDataAccess"] == "deployerDataAccess" and param_default(main, "deployerDataAccess") is False
    assert _parameter_values()["deployerDataAccess"] == "${DEPLOYER_DATA_ACCESS=false}"
    assert call["tokenKeyName"] == "keyVault.outputs.tokenKeyName"
    assert call["appTableNames"] == "appTableNames"
    assert call["hostQueueNames"] == [
        "outboundQueueName",
        "${outboundQueueName}-poison",
        "eventsQueueName",
        "webhookQueueName",  # the webhook trigger and the sender's output binding (shared/base/webhooks.py)
        "${webhookQueueName}-poison",
    ]
    from shared.base.settings import (
        AUTHFLOWS_TABLE,
        CONNECTIONS_TABLE,
        DELIVERIES_TABLE,
        PARKED_TABLE,
        TOKEN_CACHES_TABLE,
    )
    from shared.pacing.budget import BUDGETS_TABLE

    assert set(variables["appTableNames"]) == {
        CONNECTIONS_TABLE,
        AUTHFLOWS_TABLE,
        DELIVERIES_TABLE,
        BUDGETS_TABLE,
        TOKEN_CACHES_TABLE,
        PARKED_TABLE,
    }
    # No assignment anywhere else (in particular none at subscription or group scope).
    for path, template in templates.items():
        if path != "app/rbac.bicep":
            assert not _assignments(template), path


def test_the_identity_reading_producer_blob_names_cannot_reach_host_or_package_blobs(
    templates: dict[str, dict[str, Any]],
) -> None:
    """Issue 23: the app reads and deletes blobs by names producers give. Whatever such a name might resolve to,
    the identity it runs as holds blob roles on mail-attachments and mailbridge-locks only; the deployment
    package and the host's azure-webjobs-* containers belong to the Functions host's own identity."""
    rbac = templates["app/rbac.bicep"]
    blob_roles = {key for key in ROLE_IDS if key.startswith("storageBlob")}
    for symbol, resource in _assignments(rbac).items():
        props = body(resource)["properties"]
        role = expr(props["roleDefinitionId"])
        if props["principalId"] == "appPrincipalId" and any(role.endswith(f"roles.{key})") for key in blob_roles):
            assert expr(body(resource)["scope"]) == "appContainers[i]", f"{symbol}: app blob role beyond its containers"
            assert _loop_array(resource) == "appContainerNames"
    main = templates["main.bicep"]
    variables = {name: expr(v["value"]) for name, v in main["variables"].items()}
    call = body(main["modules"]["rbac"])["params"]
    assert call["appContainerNames"] == ["attachmentsContainerName", "lockContainerName"]
    from shared.tokens.locks import LOCK_CONTAINER

    names = {variables["attachmentsContainerName"], variables["lockContainerName"]}
    assert names == {"mail-attachments", LOCK_CONTAINER}
    assert not any(n.startswith(("azure-webjobs", "app-package")) for n in names)
    # Two identities: the code signs in as the app's; the host's storage and the package use the host's.
    paths = {main["modules"][m]["detail"]["path"] for m in ("identity", "hostIdentity")}
    assert paths == {"core/identity/user-assigned-identity.bicep"}
    identities = {expr(body(main["modules"][m])["params"]["name"]) for m in ("identity", "hostIdentity")}
    assert len(identities) == 2
    settings = app_settings(templates)
    assert settings["AzureWebJobsStorage__clientId"] == "hostIdentityClientId"
    assert settings["MANAGED_IDENTITY_CLIENT_ID"] == "identityClientId"
    feeds = {k: expr(v) for k, v in body(main["modules"]["appSettings"])["params"].items()}
    assert feeds["hostIdentityClientId"] == "hostIdentity.outputs.clientId"
    assert feeds["identityClientId"] == "identity.outputs.clientId"
    site_call = {k: expr(v) for k, v in body(main["modules"]["functionApp"])["params"].items()}
    assert site_call["hostIdentityId"] == "hostIdentity.outputs.id" and site_call["identityId"] == "identity.outputs.id"
    site = only(templates["core/host/functions-flexconsumption.bicep"], "Microsoft.Web/sites")
    deployment = site["properties"]["functionAppConfig"]["deployment"]["storage"]["authentication"]
    assert deployment["userAssignedIdentityResourceId"] == "hostIdentityId"


def test_producers_and_event_readers_get_queue_scoped_roles(templates: dict[str, dict[str, Any]]) -> None:
    """Each producer may only add messages to the outbound queue; each event reader may only read (or
    consume) the events queue. Nothing at account scope, nothing on the poison queue."""
    rbac = templates["app/rbac.bicep"]
    loops = {symbol: res for symbol, res in _assignments(rbac).items() if _loop_array(res) in PRINCIPAL_LOOPS}
    assert set(loops) == {"producerMessageSender", "eventReader"}
    expected = {
        "producerMessageSender": (
            "producerPrincipalIds",
            "producerId",
            "outboundQueue",
            "roles.storageQueueDataMessageSender",
        ),
        "eventReader": ("eventReaderPrincipalIds", "readerId", "eventsQueue", "eventReaderRoleId"),
    }
    for symbol, (array, item, scope, role) in expected.items():
        loop = loops[symbol]["config"]["loop_type"]["detail"]
        assert (loop["array_name"], loop["item_name"]) == (array, item)
        config = body(loops[symbol])
        assert config["scope"] == scope, f"{symbol} must be scoped to the {scope} queue, not the account"
        assert expr(config["name"]) == f"guid({scope}.id, {item}, {role})"
        props = config["properties"]
        assert expr(props["roleDefinitionId"]) == (
            f"subscription_resource_id(Microsoft.Authorization/roleDefinitions, {role})"
        )
        assert props["principalId"] == item and props["principalType"] == "ServicePrincipal"
        assert param_default(rbac, array) == []
    # The scopes are the two queues by name, children of the app's storage account.
    existing = {name: res for name, res in rbac["resources"].items() if res.get("existing")}
    for symbol, queue_param in (("outboundQueue", "outboundQueueName"), ("eventsQueue", "eventsQueueName")):
        queue = existing[symbol]
        assert queue["type"] == "Microsoft.Storage/storageAccounts/queueServices/queues"
        assert queue["config"] == {"parent": "queueService", "name": queue_param}
    assert existing["queueService"]["config"] == {"parent": "storage", "name": "default"}
    # Reader or Processor, chosen by one parameter; Processor (consume) by default.
    assert allowed(rbac, "eventReaderRole") == ["MessageProcessor", "Reader"]
    assert param_default(rbac, "eventReaderRole") == "MessageProcessor"
    assert expr(rbac["variables"]["eventReaderRoleId"]["value"]) == (
        "equals(eventReaderRole, Reader) ? roles.storageQueueDataReader : roles.storageQueueDataMessageProcessor"
    )
    # main passes its parameters and the queue names it creates; azd maps the parameters.
    main = templates["main.bicep"]
    call = body(main["modules"]["rbac"])["params"]
    for name in (
        "producerPrincipalIds",
        "eventReaderPrincipalIds",
        "eventReaderRole",
        "outboundQueueName",
        "eventsQueueName",
    ):
        assert call[name] == name
    assert param_default(main, "producerPrincipalIds") == [] and param_default(main, "eventReaderPrincipalIds") == []
    values = _parameter_values()
    assert values["producerPrincipalIds"] == "${PRODUCER_PRINCIPAL_IDS=[]}"
    assert values["eventReaderPrincipalIds"] == "${EVENT_READER_PRINCIPAL_IDS=[]}"
    assert values["eventReaderRole"] == "${EVENT_READER_ROLE=MessageProcessor}"


# --------------------------------------------------------------------------------------------
# app registration


def test_app_registration_has_a_federated_credential_and_no_password(templates: dict[str, dict[str, Any]]) -> None:
    template = templates["app/appregistration.bicep"]
    assert "microsoftGraphV1" in template["extensions"]
    app = only(template, "Microsoft.Graph/applications")
    assert app["uniqueName"] == "uniqueName"
    assert app["signInAudience"] == "signInAudience"
    assert allowed(template, "signInAudience") == [
        "AzureADMyOrg",
        "AzureADMultipleOrgs",
        "AzureADandPersonalMicrosoftAccount",
    ]
    assert app["web"]["redirectUris"] == [
        "${publicBaseUrl}/api/connect/callback",
        "${publicBaseUrl}/api/admin-consent/callback",
    ]
    keys = set(walk(template["resources"]))
    assert not keys & {"passwordCredentials", "keyCredentials", "addPassword", "secretText"}

    fics = {
        name: body(res)
        for name, res in template["resources"].items()
        if res["type"].startswith("Microsoft.Graph/applications/federatedIdentityCredentials")
    }
    assert len(fics) == 1
    (fic,) = fics.values()
    assert fic["issuer"] == "${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0"
    assert fic["subject"] == "managedIdentityPrincipalId"
    assert expr(fic["audiences"]) == ["tokenExchangeAudiences[azureCloud]"]
    audiences = template["variables"]["tokenExchangeAudiences"]["value"]
    assert audiences["public"] == "api://AzureADTokenExchange"
    assert audiences["usgov"] == audiences["usgovdod"] == "api://AzureADTokenExchangeUSGov"
    assert audiences["china"] == "api://AzureADTokenExchangeChina"
    call = body(templates["main.bicep"]["modules"]["appRegistration"])["params"]
    assert expr(call["managedIdentityPrincipalId"]) == "identity.outputs.principalId"
    assert expr(call["publicBaseUrl"]) == "publicBaseUrl"


def test_app_registration_asks_only_for_the_delegated_mail_scopes(templates: dict[str, dict[str, Any]]) -> None:
    template = templates["app/appregistration.bicep"]
    variables = {name: v["value"] for name, v in template["variables"].items()}
    assert variables["scopeIds"] == GRAPH_DELEGATED_SCOPES
    assert variables["microsoftGraphAppId"] == GRAPH_APP_ID
    always = {expr(s["id"]).removeprefix("scopeIds.") for s in variables["alwaysScopes"]}
    assert always == {"mailSend", "openid", "profile", "offlineAccess"}
    assert all(s["type"] == "Scope" for s in variables["alwaysScopes"])  # delegated, never app roles
    shared = expr(variables["sharedScopes"])
    assert shared.startswith("enableSharedMailboxes ? ") and "scopeIds.mailSendShared" in shared
    assert shared.endswith(" : []")
    read_write = expr(variables["readWriteScopes"])
    assert read_write.startswith("enableMailReadWrite ? ") and "scopeIds.mailReadWrite" in read_write
    assert read_write.endswith(" : []")
    assert "'Role'" not in source("app/appregistration.bicep")
    app = only(template, "Microsoft.Graph/applications")
    (access,) = app["requiredResourceAccess"]
    assert access["resourceAppId"] == "microsoftGraphAppId"
    assert expr(access["resourceAccess"]) == "concat(alwaysScopes, sharedScopes, readWriteScopes)"
    # The switches are main's parameters, off by default.
    main = templates["main.bicep"]
    assert param_default(main, "enableSharedMailboxes") is False
    assert param_default(main, "enableMailReadWrite") is False
    assert param_default(main, "signInAudience") == "AzureADMultipleOrgs"


# --------------------------------------------------------------------------------------------
# app settings


def test_every_app_setting_is_wired(templates: dict[str, dict[str, Any]]) -> None:
    template = templates["app/appsettings.bicep"]
    assert expr(template["variables"]["settings"]["value"]) == "union(coreSettings, limitSettings)"
    assert body(templates["main.bicep"]["modules"]["appSettings"])["params"]["limitSettings"] == "limitSettings"
    settings = app_settings(templates)
    assert set(settings) == EXPECTED_SETTINGS
    assert not set(settings) & FORBIDDEN_SETTINGS
    config = only(template, "Microsoft.Web/sites/config")
    assert config["name"] == "appsettings" and config["properties"] == "settings"

    # Constants (checked in the source too: pycep renders identifiers and literals alike).
    text = source("app/appsettings.bicep")
    constants = {
        "AzureWebJobsStorage__credential": "managedidentity",
        "ENTRA_CLIENT_CREDENTIAL": "managed_identity",
        "KEY_VAULT_AUTH": "managed_identity",
        "ENABLE_SAMPLE_UI": "false",
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": "false",  # private webhook targets: local development only (SSRF)
    }
    for name, value in constants.items():
        assert settings[name] == value
        assert re.search(rf"\n  {name}: '{value}'\n", text), name
    assert settings["AzureWebJobsStorage__accountName"] == "storage.name"
    assert settings["AzureWebJobsStorage__clientId"] == "hostIdentityClientId"
    assert settings["MANAGED_IDENTITY_CLIENT_ID"] == "identityClientId"
    for service in ("blob", "queue", "table"):
        assert settings[f"AzureWebJobsStorage__{service}ServiceUri"] == f"storage.properties.primaryEndpoints.{service}"
    assert settings["ENABLE_SHARED_MAILBOXES"] == "enableSharedMailboxes ? true : false"
    assert settings["ENABLE_MAIL_READWRITE"] == "enableMailReadWrite ? true : false"
    assert settings["REFRESH_AFTER_DAYS"] == "string(refreshAfterDays)"
    assert settings["MAX_MESSAGE_BYTES"] == "string(maxMessageBytes)"


def test_main_feeds_the_settings_their_values(templates: dict[str, dict[str, Any]]) -> None:
    main = templates["main.bicep"]
    variables = {name: expr(v["value"]) for name, v in main["variables"].items()}
    assert variables["outboundQueueName"] == "outbound-mail"
    assert variables["eventsQueueName"] == "mail-events"
    assert variables["attachmentsContainerName"] == "mail-attachments"
    assert param_default(main, "refreshSchedule") == "0 30 * * * *"
    assert len(param_default(main, "refreshSchedule").split()) == 6  # NCRONTAB has seconds
    assert param_default(main, "refreshAfterDays") == 60
    assert param_default(main, "maxMessageBytes") == 26214400
    assert allowed(main, "azureCloud") == ["", "public", "usgov", "usgovdod", "china"]
    call = {k: expr(v) for k, v in body(main["modules"]["appSettings"])["params"].items()}
    assert call["identityClientId"] == "identity.outputs.clientId"
    assert call["hostIdentityClientId"] == "hostIdentity.outputs.clientId"
    assert call["keyVaultUrl"] == "keyVault.outputs.uri"
    assert call["publicBaseUrl"] == "publicBaseUrl"
    # A custom domain replaces the host name everywhere browsers meet it: settings, redirect URIs, output.
    assert variables["publicBaseUrl"] == "empty(customBaseUrl) ? functionApp.outputs.uri : customBaseUrl"
    assert param_default(main, "customBaseUrl") == "" and _parameter_values()["customBaseUrl"] == "${CUSTOM_BASE_URL=}"
    assert expr(main["outputs"]["PUBLIC_BASE_URL"]["value"]) == "publicBaseUrl"
    assert call["ticketKeySecretUri"] == "ticketKey.outputs.secretUri"
    assert call["entraClientId"] == "effectiveEntraClientId"
    assert call["outboundQueueName"] == "outboundQueueName"
    assert call["allowedReturnOrigins"] == ("empty(allowedReturnOrigins) ? publicBaseUrl : allowedReturnOrigins")
    assert variables["effectiveEntraClientId"] == (
        "empty(entraClientId) ? appRegistration.outputs.appId : entraClientId"
    )
    tenants = variables["tenantForAudience"]
    assert tenants == {
        "AzureADMyOrg": "tenant().tenantId",
        "AzureADMultipleOrgs": "organizations",
        "AzureADandPersonalMicrosoftAccount": "common",
    }


def _decorator(template: dict[str, Any], name: str, kind: str) -> Any:
    found = [d["argument"] for d in template["parameters"][name]["decorators"] if d["type"] == kind]
    return found[0] if found else None


def test_scale_and_limits_are_azd_parameters_flowing_to_the_app(templates: dict[str, dict[str, Any]]) -> None:
    """Issue 15 item 6: maximumInstanceCount and every per-mailbox limit is an azd variable -> a main.bicep
    parameter -> the plan / an app setting, with the defaults and bounds shared/base/settings.py uses."""
    from dataclasses import fields

    from shared.base.settings import KEEPALIVE_MAX_CONCURRENCY, KEEPALIVE_MAX_RUN_SECONDS, TOKEN_KEY_CACHE_MAX, Settings

    defaults = {f.name: f.default for f in fields(Settings)}
    main = templates["main.bicep"]
    values = _parameter_values()
    # parameter -> (azd variable, app setting, Settings field, min, max) ; bounds as in shared/base/settings.py
    limits = {
        "mailboxConcurrency": ("MAILBOX_CONCURRENCY", "mailbox_concurrency", 1, 16),
        "mailboxMessagesPerMinute": ("MAILBOX_MESSAGES_PER_MINUTE", "mailbox_messages_per_minute", 1, 10_000),
        "mailboxRecipientsPerDay": ("MAILBOX_RECIPIENTS_PER_DAY", "mailbox_recipients_per_day", 1, 1_000_000),
        "keepAliveConcurrency": ("KEEPALIVE_CONCURRENCY", "keepalive_concurrency", 1, KEEPALIVE_MAX_CONCURRENCY),
        "keepAliveRunSeconds": ("KEEPALIVE_RUN_SECONDS", "keepalive_run_seconds", 10, KEEPALIVE_MAX_RUN_SECONDS),
        "tokenKeyCacheSize": ("TOKEN_KEY_CACHE_SIZE", "token_key_cache_size", 100, TOKEN_KEY_CACHE_MAX),
    }
    rendered = expr(main["variables"]["limitSettings"]["value"])
    assert set(rendered) == {setting for setting, *_ in limits.values()}, "every limit setting has its parameter"
    for param, (setting, field, lo, hi) in limits.items():
        assert param_default(main, param) == defaults[field], f"{param} default differs from Settings.{field}"
        assert (_decorator(main, param, "min_value"), _decorator(main, param, "max_value")) == (lo, hi), param
        assert rendered[setting] == f"string({param})"
        assert values[param] == f"${{{setting}={defaults[field]}}}"
    # Scale: the plan's bound and instance size.
    call = body(main["modules"]["functionApp"])["params"]
    assert call["maximumInstanceCount"] == "maximumInstanceCount" and call["instanceMemoryMB"] == "instanceMemoryMB"
    assert param_default(main, "maximumInstanceCount") == 100
    assert (
        _decorator(main, "maximumInstanceCount", "min_value"),
        _decorator(main, "maximumInstanceCount", "max_value"),
    ) == (1, 1000)
    assert allowed(main, "instanceMemoryMB") == [512, 2048, 4096] and param_default(main, "instanceMemoryMB") == 2048
    assert values["maximumInstanceCount"] == "${MAXIMUM_INSTANCE_COUNT=100}"
    assert values["instanceMemoryMB"] == "${INSTANCE_MEMORY_MB=2048}"
    site = only(templates["core/host/functions-flexconsumption.bicep"], "Microsoft.Web/sites")
    assert site["properties"]["functionAppConfig"]["scaleAndConcurrency"] == {
        "instanceMemoryMB": "instanceMemoryMB",
        "maximumInstanceCount": "maximumInstanceCount",
    }
    # The other tunables are mapped too, with the defaults main.bicep has.
    assert values["refreshSchedule"] == "${REFRESH_SCHEDULE=0 30 * * * *}"
    assert values["refreshAfterDays"] == "${REFRESH_AFTER_DAYS=60}"
    assert values["maxMessageBytes"] == "${MAX_MESSAGE_BYTES=26214400}"
    assert (_decorator(main, "maxMessageBytes", "min_value"), _decorator(main, "maxMessageBytes", "max_value")) == (
        64 * 1024,
        150 * 1024 * 1024,
    )


# --------------------------------------------------------------------------------------------
# alerts

ALERT_QUERIES = INFRA / "core" / "monitor" / "queries"
# Each log alert: its query file, and what the query must look at.
LOG_ALERTS = {
    "poison-messages": ("requests", 'operation_Name == "record_poisoned_message"'),
    "unknown-outcomes": ("traces", 'event == "send" and outcome == "unknown"'),
    "reauth-required": ("traces", 'code == "reauth_required"'),
    "credential-failures": ("traces", '"app_credential_failed"'),
    "function-failures": ("requests", "success == false"),
    "health-503": ("requests", 'operation_Name == "health" and resultCode == "503"'),
    "webhook-failures": ("traces", '"recorded on the poison queue"'),
}


def test_alerts_exist_target_app_insights_and_storage_and_mail_the_operator(
    templates: dict[str, dict[str, Any]],
) -> None:
    template = templates["core/monitor/alerts.bicep"]
    definitions = {a["key"]: a for a in expr(template["variables"]["logAlerts"]["value"])}
    assert set(definitions) == set(LOG_ALERTS)
    for key, alert in definitions.items():
        assert alert["query"] == f"load_text_content(queries/{key}.kql)", key
        assert alert["severity"] in range(5) and alert["displayName"].startswith("Mailbridge: ")
        assert re.fullmatch(r"PT\d+[MH]", alert["frequency"]) and re.fullmatch(r"PT\d+[MH]", alert["window"])
    assert definitions["reauth-required"]["threshold"] == "reauthRequiredThreshold"
    assert all(a["threshold"] == 0 for k, a in definitions.items() if k != "reauth-required")
    assert definitions["credential-failures"]["severity"] == 0  # nothing sends until the operator acts

    rules = resources_of_type(template, "Microsoft.Insights/scheduledQueryRules")["logAlertRules"]
    assert rules["config"]["loop_type"]["detail"] == {"item_name": "alert", "array_name": "logAlerts"}
    rule = expr(body(rules))
    assert rule["kind"] == "LogAlert"
    props = rule["properties"]
    assert props["scopes"] == ["applicationInsights.id"], "log alerts query Application Insights"
    (criterion,) = props["criteria"]["allOf"]
    assert criterion["query"] == "alert.query" and criterion["threshold"] == "alert.threshold"
    assert (criterion["timeAggregation"], criterion["operator"]) == ("Count", "GreaterThan")
    assert props["actions"] == {"actionGroups": ["actionGroup.id"]}

    metric = expr(only(template, "Microsoft.Insights/metricAlerts"))
    assert metric["properties"]["scopes"] == ["storage.id"], "the storage alert watches the storage account"
    (storage_criterion,) = metric["properties"]["criteria"]["allOf"]
    assert storage_criterion["metricName"] == "Transactions"
    assert metric["properties"]["actions"] == [{"actionGroupId": "actionGroup.id"}]
    existing = {name: res for name, res in template["resources"].items() if res.get("existing")}
    assert existing["applicationInsights"]["type"] == "Microsoft.Insights/components"
    assert existing["storage"]["type"] == "Microsoft.Storage/storageAccounts"

    # The action group: an email receiver only when alertEmail is set; the template stays valid without.
    group = expr(only(template, "Microsoft.Insights/actionGroups"))["properties"]
    assert group["emailReceivers"] == (
        "empty(alertEmail) ? [] : [{'name': 'operator', 'emailAddress': 'alertEmail', 'useCommonAlertSchema': True}]"
    )
    assert len(group["groupShortName"]) <= 12 and group["enabled"] is True
    assert param_default(template, "alertEmail") == ""
    main = templates["main.bicep"]
    call = {k: expr(v) for k, v in body(main["modules"]["alerts"])["params"].items()}
    assert call["applicationInsightsName"] == "monitoring.outputs.applicationInsightsName"
    assert call["storageAccountName"] == "storage.outputs.name"
    assert call["alertEmail"] == "alertEmail" and param_default(main, "alertEmail") == ""
    assert _parameter_values()["alertEmail"] == "${ALERT_EMAIL=}"


def test_alert_queries_are_the_ones_in_operations_md_and_reference_no_keys() -> None:
    operations = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    assert {p.stem for p in ALERT_QUERIES.glob("*.kql")} == set(LOG_ALERTS) | {"token-access"}
    for key, (table, condition) in LOG_ALERTS.items():
        query = (ALERT_QUERIES / f"{key}.kql").read_text(encoding="utf-8")
        body_lines = [line for line in query.splitlines() if not line.startswith("//")]
        assert body_lines[0] == table, f"{key} reads {body_lines[0]}, expected {table}"
        assert condition in query, key
        # No time filter of its own: the rule's window decides (and a person picks the time range).
        assert "ago(" not in query, key
        assert f"```kusto\n{query}```" in operations, f"docs/operations.md must show queries/{key}.kql verbatim"
    text = source("core/monitor/alerts.bicep") + "".join(p.read_text() for p in ALERT_QUERIES.glob("*.kql"))
    # (webhookReceivers and serviceUri: an action group posting to a URL with a key in it; the alert on
    # Mailbridge's own webhook deliveries is a query, not such a receiver.)
    for needle in (
        "listKeys",
        "InstrumentationKey",
        "ConnectionString",
        "apiKey",
        "sig=",
        "webhookReceivers",
        "serviceUri",
        "AccountKey",
    ):
        assert needle.lower() not in text.lower(), needle
    # The outcome queries read the line shared/base/telemetry.py writes.
    from shared.base import telemetry

    for key in ("unknown-outcomes", "reauth-required"):
        query = (ALERT_QUERIES / f"{key}.kql").read_text(encoding="utf-8")
        assert f'message startswith "{telemetry.PREFIX} "' in query
        assert 'with (pair_delimiter=" ", kv_delimiter="=")' in query


def test_the_token_key_its_audit_log_and_the_alert_on_anyone_else_opening_tokens(
    templates: dict[str, dict[str, Any]],
) -> None:
    """Issue 26: the vault's RSA key wraps each connection's data key (wrap/unwrap only); Key Vault's AuditEvent
    goes to the workspace; an alert fires when anyone but the app identity reads or recovers a secret or unwraps."""
    vault = templates["core/security/keyvault.bicep"]
    key = expr(only(vault, "Microsoft.KeyVault/vaults/keys"))
    assert key["parent"] == "vault" and key["name"] == "tokenKeyName"
    assert key["properties"]["kty"] == "RSA" and key["properties"]["keySize"] == 2048
    assert key["properties"]["keyOps"] == ["wrapKey", "unwrapKey"]
    assert param_default(vault, "tokenKeyName") == "mailbridge-tokens"
    from stack.seed import TOKEN_KEY_NAME

    assert TOKEN_KEY_NAME == "mailbridge-tokens"  # the local stack creates the same key
    assert app_settings(templates)["KEY_VAULT_KEY_NAME"] == "keyVaultKeyName"

    alerts = templates["core/monitor/alerts.bicep"]
    audit = expr(only(alerts, "Microsoft.Insights/diagnosticSettings"))
    assert audit["scope"] == "vault"
    assert audit["properties"]["workspaceId"] == "logAnalytics.id"
    assert audit["properties"]["logs"] == [{"category": "AuditEvent", "enabled": True}]
    rules = resources_of_type(alerts, "Microsoft.Insights/scheduledQueryRules")
    token_rule = expr(body(rules["tokenAccessAlert"]))
    assert token_rule["properties"]["scopes"] == ["logAnalytics.id"], "the audit log lives in the workspace"
    (criterion,) = token_rule["properties"]["criteria"]["allOf"]
    assert "token-access.kql" in criterion["query"] and "appPrincipalId" in criterion["query"]
    assert (criterion["operator"], criterion["threshold"]) == ("GreaterThan", 0)
    assert token_rule["properties"]["actions"] == {"actionGroups": ["actionGroup.id"]}
    query = (ALERT_QUERIES / "token-access.kql").read_text(encoding="utf-8")
    for operation in ("SecretGet", "SecretRecover", "KeyUnwrap", "KeyRecover"):
        assert f'"{operation}"' in query
    assert 'caller != "APP_PRINCIPAL_ID"' in query
    operations = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    assert f"```kusto\n{query}```" in operations, "docs/operations.md must show queries/token-access.kql verbatim"
    main = templates["main.bicep"]
    call = {k: expr(v) for k, v in body(main["modules"]["alerts"])["params"].items()}
    assert call["appPrincipalId"] == "identity.outputs.principalId"
    assert call["logAnalyticsName"] == "monitoring.outputs.logAnalyticsName"


def test_the_webhook_alert_matches_the_lines_the_dispatcher_logs() -> None:
    """The alert's phrases are the ones shared/base/webhooks.py logs when it gives a delivery up."""
    code = (REPO / "shared" / "base" / "webhooks.py").read_text(encoding="utf-8")
    query = (ALERT_QUERIES / "webhook-failures.kql").read_text(encoding="utf-8")
    for phrase in ("recorded on the poison queue", "not retried"):
        assert phrase in query and phrase in code, phrase
    assert re.search(r'logger\.error\(\s*"Webhook ', code), "the lines start with 'Webhook ' as the query expects"
