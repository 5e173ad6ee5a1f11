"""The previous release's code, taken from git, to run beside the current code (README
"Upgrading"). The previous release is the commit `protos/STABLE` names: the last commit of main
whose contracts were declared stable, the one `make breaking` checks the contracts against."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STABLE = REPO / "protos" / "STABLE"

#: The source trees of a checkout, in the order they go on PYTHONPATH.
SOURCE_TREES = (
    "libs/canopy-api/src",
    "libs/canopy-core/src",
    "libs/canopy-cli/src",
    "services/integration/src",
    "services/discovery/src",
    "services/permissions/src",
)


def previous_release() -> str:
    """The previous release's commit; fails, as `make breaking` does, when this clone lacks it."""
    commit = STABLE.read_text().strip()
    found = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if found.returncode != 0:
        pytest.fail(
            f"the previous release's commit {commit} (protos/STABLE) is not in this clone: "
            "fetch the full history (git fetch --unshallow origin main)",
            pytrace=False,
        )
    return commit


def released_file(commit: str, path: str) -> str | None:
    """A file's text at `commit`; None when it did not exist there."""
    shown = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{commit}:{path}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return shown.stdout if shown.returncode == 0 else None


def export_release(commit: str, into: Path) -> Path:
    """The commit's libraries, services and lock file under `into` (`git archive`: no worktree
    to register or remove)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "libs", "services", "uv.lock"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def python_path(checkout: Path) -> str:
    """PYTHONPATH that makes the current interpreter import the checkout's packages (the
    virtualenv's editable installs come after it on sys.path)."""
    return os.pathsep.join(str(checkout / tree) for tree in SOURCE_TREES)


def locked(lock: Path) -> dict[str, str]:
    """Package name → version pinned by a uv.lock (the workspace's own members excluded)."""
    packages = tomllib.loads(lock.read_text())["package"]
    return {p["name"]: p["version"] for p in packages if "registry" in p.get("source", {})}


def unsatisfied_dependencies(checkout: Path) -> list[str]:
    """The checkout's locked packages that the current lock does not pin at the same version:
    the previous release runs here on the current virtualenv, so these must be none."""
    current = locked(REPO / "uv.lock")
    return sorted(
        f"{name}=={version} (current: {current.get(name, 'absent')})"
        for name, version in locked(checkout / "uv.lock").items()
        if current.get(name) != version
    )
