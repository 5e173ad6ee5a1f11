"""The files a user runs the suite with stay true to the code: docker-compose.yml, the
Dockerfile, the console scripts, and `canopy-token`."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import jwt
import yaml

from canopy_discovery.settings import DiscoverySettings
from canopy_integration.settings import IntegrationSettings
from canopy_permissions.settings import PermissionsSettings
from tests.helpers import JWT_SECRET

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = {
    "integration": IntegrationSettings.model_fields["port"].default,
    "discovery": DiscoverySettings.model_fields["port"].default,
    "permissions": PermissionsSettings.model_fields["port"].default,
}


def test_compose_runs_each_service_by_its_console_script_on_its_port() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert "postgres" in services
    for name, port in DEFAULTS.items():
        service = services[name]
        project = tomllib.loads((REPO / "services" / name / "pyproject.toml").read_text())
        assert service["command"][0] in project["project"]["scripts"]
        env = service["environment"]
        assert env["CANOPY_PORT"] == str(port)
        assert env[f"CANOPY_{name.upper()}_ADDRESS"] == f"{name}:{port}"
        assert env["DATABASE_URL"].startswith("postgresql://")
        assert len(env["CANOPY_JWT_SECRET"].split(":-", 1)[-1].rstrip("}")) >= 32
        assert f"{port}:{port}" in service["ports"]


def test_the_image_installs_every_workspace_member() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    for member in root["tool"]["uv"]["workspace"]["members"]:
        assert f"COPY {member}/pyproject.toml" in dockerfile


def test_canopy_token_mints_a_token_the_services_accept(tmp_path: Path) -> None:
    minted = subprocess.run(
        [
            sys.executable,
            "-m",
            "canopy_core.token",
            "--subject",
            "alice",
            "--owner",
            "t_acme",
            "--member",
            "w_ops",
            "--ttl",
            "120",
        ],
        env={"CANOPY_JWT_SECRET": JWT_SECRET, "CANOPY_DATA_DIR": str(tmp_path), "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    claims = jwt.decode(minted, JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["roles"] == {"t_acme": "owner", "w_ops": "member"}
    assert claims["exp"] - claims["iat"] == 120
