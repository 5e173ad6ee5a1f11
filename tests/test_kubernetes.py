"""The Kubernetes example (deploy/kubernetes) stays true to the code and to Kubernetes:
every manifest is valid against the Kubernetes schemas (kubernetes-validate, strict: no unknown
field), every command is a console script the image installs, every CANOPY_* variable is a
setting the service reads (and the values parse), the sidecar's arguments parse with the
`canopy` command, and ports, probes, selectors and volumes line up. kubectl is not needed."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from kubernetes_validate import utils as kubernetes
from typer.core import TyperGroup

from canopy_cli.main import app
from canopy_cli.outdir import STATE
from canopy_core.settings import ServiceSettings
from canopy_discovery.settings import DiscoverySettings
from canopy_integration.settings import IntegrationSettings
from canopy_permissions.settings import PermissionsSettings

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSIONS = ["1.30.0", kubernetes.latest_version()]  # native sidecars: 1.29+
SETTINGS: dict[str, type[ServiceSettings]] = {
    "canopy-integration": IntegrationSettings,
    "canopy-discovery": DiscoverySettings,
    "canopy-permissions": PermissionsSettings,
}


def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((EXAMPLE / "kustomization.yaml").read_text())
    documents: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        documents.extend(d for d in yaml.safe_load_all((EXAMPLE / name).read_text()) if d)
    return documents


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    return found


def containers(deployment: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def test_kustomization_lists_every_manifest_of_the_example() -> None:
    kustomization = yaml.safe_load((EXAMPLE / "kustomization.yaml").read_text())
    on_disk = {p.name for p in EXAMPLE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(on_disk)
    images = {i["name"] for i in kustomization["images"]}
    used = {c["image"] for d in of_kind("Deployment") for c in containers(d)}
    assert used == images


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_kubernetes(version: str) -> None:
    for document in manifests():
        kubernetes.validate(document, version, strict=True)


def test_each_service_runs_its_console_script_with_settings_it_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = named("ConfigMap", "canopy-settings")["data"]
    secrets = named("Secret", "canopy-secrets")["stringData"]
    scripts = {}
    for member in ("services/integration", "services/discovery", "services/permissions"):
        project = tomllib.loads((REPO / member / "pyproject.toml").read_text())
        scripts.update(project["project"]["scripts"])
    for deployment in of_kind("Deployment"):
        for container in containers(deployment):
            command = container.get("command", [None])[0]
            if command not in SETTINGS:
                continue
            assert command in scripts
            env = {**config, **secrets, **{e["name"]: e["value"] for e in container["env"]}}
            settings_type = SETTINGS[command]
            known = {f"CANOPY_{n.upper()}" for n in settings_type.model_fields} | {"DATABASE_URL"}
            # Variables a service does not read are ignored silently: a typo would be too.
            for name in env:
                assert name in known or any(
                    name in {f"CANOPY_{n.upper()}" for n in other.model_fields}
                    for other in SETTINGS.values()
                ), f"{name} is no Canopy setting"
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            settings = settings_type()
            port = settings.port
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports == {"grpc": port, "metrics": settings.metrics_port}
            assert container["readinessProbe"]["grpc"]["port"] == port
            for name in env:
                monkeypatch.delenv(name)
            service = named("Service", deployment["metadata"]["name"])
            assert {p["port"] for p in service["spec"]["ports"]} == set(ports.values())
            assert service["spec"]["selector"].items() <= (
                deployment["spec"]["template"]["metadata"]["labels"].items()
            )
            assert f"dns:///{service['metadata']['name']}:{port}" in config.values()


def test_the_workspace_sidecar_runs_canopy_workspace_config_follow_into_the_engines_config() -> (
    None
):
    deployment = named("Deployment", "steampipe-w-analytics")
    spec = deployment["spec"]["template"]["spec"]
    (sidecar,) = spec["initContainers"]
    (engine,) = spec["containers"]
    assert sidecar["restartPolicy"] == "Always"
    cli = REPO / "libs" / "canopy-cli" / "pyproject.toml"
    assert sidecar["command"] == ["canopy"]
    assert "canopy" in tomllib.loads(cli.read_text())["project"]["scripts"]
    # The arguments parse as `canopy` parses them (option names, choices).
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    workspace = group.commands["workspace"]
    assert isinstance(workspace, TyperGroup)
    args = sidecar["args"]
    assert args[:2] == ["workspace", "config"]
    parsed = workspace.commands["config"].make_context("config", list(args[2:])).params
    assert parsed["follow_changes"] is True
    out = parsed["out"]
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    assert Path(mounts["config"]) == out
    assert sidecar["startupProbe"]["exec"]["command"] == ["test", "-e", str(out / STATE)]
    (spc,) = parsed["spc"]
    assert spc.parent == Path(mounts["aggregators"])
    aggregators = named("ConfigMap", "workspace-w-analytics-aggregators")["data"]
    assert spc.name in aggregators
    engine_mounts = {m["mountPath"]: m["name"] for m in engine["volumeMounts"]}
    config_dir = next(p for p, n in engine_mounts.items() if n == "config")
    aws_config = next(e["value"] for e in engine["env"] if e["name"] == "AWS_CONFIG_FILE")
    assert Path(aws_config).parent == Path(config_dir)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["config"]
    token = next(e for e in sidecar["envFrom"] if "secretRef" in e)["secretRef"]["name"]
    assert "CANOPY_TOKEN" in named("Secret", token)["stringData"]
