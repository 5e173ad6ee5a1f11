"""Every migration is additive (expand only), so that the previous release's replicas keep
working on a migrated database during a rolling upgrade (README "Upgrading"): no DROP, no
column type change, no RENAME, no SET NOT NULL or new NOT NULL column without a default. The few
that are not are listed below with the upgrade step each needs, which the README spells out.
A released migration never changes: databases that applied it would differ from new ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from canopy_core.db import Migration, core_migrations
from canopy_discovery.server import spec as discovery_spec
from canopy_integration.server import spec as integration_spec
from canopy_permissions.server import spec as permissions_spec
from tests.releases import REPO, previous_release, released_file

#: Migrations that are not expand-only, by `source/name`, with the upgrade step they need.
NOT_ADDITIVE = {
    "core/0003_event_ranges.sql": (
        "lets event_log.payload be NULL (a range row): the previous release would misread a "
        "range row, so ranges are written only with CANOPY_COMPACT_EVENTS=true, set once no "
        "replica of the previous release is left"
    ),
    "discovery/0002_reconciled_trigger.sql": (
        "widens a CHECK (drops and re-adds it): roll discovery as usual; replicas of the release "
        "before it fail to read runs triggered RECONCILED until their turn"
    ),
    "discovery/0003_organization_events.sql": (
        "widens a CHECK (drops and re-adds it): roll discovery as usual; replicas of the release "
        "before it fail to read runs triggered ORGANIZATION_EVENTS until their turn"
    ),
    "integration/0004_suspended_state.sql": (
        "widens a CHECK (drops and re-adds it): roll the integration service first, then "
        "discovery; replicas of the release before it fail to read SUSPENDED integrations"
    ),
    "permissions/0004_published_schemas.sql": (
        "drops columns the release before it reads and writes: replace every permissions "
        "replica at once (scale to 0, then deploy; Kubernetes: strategy Recreate)"
    ),
}

MIGRATION_FOLDERS = {
    "core": "libs/canopy-core/src/canopy_core/migrations",
    "integration": "services/integration/src/canopy_integration/migrations",
    "discovery": "services/discovery/src/canopy_discovery/migrations",
    "permissions": "services/permissions/src/canopy_permissions/migrations",
}

_COMMENT = re.compile(r"--[^\n]*")
_NOT_NULL_COLUMN = re.compile(r"^ADD\s+(COLUMN\s+)?(?!CONSTRAINT\b).*\bNOT\s+NULL\b")


def every_migration() -> list[Migration]:
    return [
        *core_migrations(),
        *integration_spec().migrations,
        *discovery_spec().migrations,
        *permissions_spec().migrations,
    ]


def _split(text: str, separator: str) -> list[str]:
    """`text` cut at `separator` outside parentheses and quotes (statements, ALTER actions)."""
    parts, depth, quoted, start = [], 0, False, 0
    for at, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == separator:
            parts.append(text[start:at])
            start = at + 1
    parts.append(text[start:])
    return [" ".join(p.split()) for p in parts if p.strip()]


def problems(sql: str) -> list[str]:
    """What in `sql` a replica of the previous release could trip over."""
    found = []
    for statement in _split(_COMMENT.sub("", sql), ";"):
        upper = statement.upper()
        if re.search(r"\bDROP\b", upper):
            found.append(f"drops something: {statement}")
        if re.search(r"\bRENAME\b", upper):
            found.append(f"renames something: {statement}")
        if re.search(r"\bALTER\s+(COLUMN\s+)?\S+\s+(SET\s+DATA\s+)?TYPE\b", upper):
            found.append(f"changes a column's type: {statement}")
        if re.search(r"\bSET\s+NOT\s+NULL\b", upper) and "SET DEFAULT" not in upper:
            found.append(f"makes a column NOT NULL without a default: {statement}")
        table = re.match(r"ALTER TABLE (IF EXISTS )?(ONLY )?\S+ (.*)$", upper)
        for action in _split(table.group(3), ",") if table else ():
            if _NOT_NULL_COLUMN.search(action) and not re.search(r"\bDEFAULT\b", action):
                found.append(f"adds a NOT NULL column without a default: {action}")
    return found


def test_every_migration_is_additive_or_listed_with_its_upgrade_step() -> None:
    flagged = {
        f"{m.source}/{m.name}": found for m in every_migration() if (found := problems(m.sql))
    }
    unlisted = {name: found for name, found in flagged.items() if name not in NOT_ADDITIVE}
    assert unlisted == {}, (
        "these migrations are not additive: split them (expand now, contract a release later), "
        "or list them in NOT_ADDITIVE with the upgrade step the README documents"
    )
    assert set(NOT_ADDITIVE) == set(flagged), "NOT_ADDITIVE lists a migration that is additive"


def test_the_readme_documents_each_listed_migrations_upgrade_step() -> None:
    upgrading = (REPO / "README.md").read_text().partition("### Upgrading")[2]
    upgrading = upgrading.partition("\n### ")[0]
    for name in NOT_ADDITIVE:
        assert f"`{Path(name).stem}`" in upgrading, f"README 'Upgrading' does not explain {name}"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("ALTER TABLE t ADD COLUMN c text NOT NULL DEFAULT '';", []),
        ("ALTER TABLE t ADD COLUMN c text, ADD COLUMN d jsonb NOT NULL DEFAULT '{}';", []),
        ("CREATE TABLE t (id text PRIMARY KEY, n int NOT NULL);", []),
        ("ALTER TABLE t ALTER COLUMN c SET DEFAULT now();", []),
        ("ALTER TABLE t ADD CONSTRAINT k CHECK (a IS NOT NULL);", []),
        ("-- DROP TABLE t in a comment\nCREATE INDEX i ON t (c);", []),
        ("ALTER TABLE t ADD COLUMN c text NOT NULL;", ["adds a NOT NULL column without a default"]),
        (
            "ALTER TABLE t ADD c int NOT NULL, ADD d int;",
            ["adds a NOT NULL column without a default"],
        ),
        ("ALTER TABLE t DROP COLUMN c;", ["drops something"]),
        ("DROP INDEX i;", ["drops something"]),
        ("ALTER TABLE t RENAME COLUMN a TO b;", ["renames something"]),
        ("ALTER TABLE t ALTER COLUMN c TYPE bigint;", ["changes a column's type"]),
        ("ALTER TABLE t ALTER c SET DATA TYPE bigint;", ["changes a column's type"]),
        (
            "ALTER TABLE t ALTER COLUMN c SET NOT NULL;",
            ["makes a column NOT NULL without a default"],
        ),
    ],
)
def test_the_rule_tells_additive_statements_from_the_others(sql: str, expected: list[str]) -> None:
    assert [found.partition(":")[0] for found in problems(sql)] == expected


def test_no_released_migration_has_changed_since_the_previous_release() -> None:
    commit = previous_release()
    changed = []
    for source, folder in MIGRATION_FOLDERS.items():
        for path in sorted((REPO / folder).glob("*.sql")):
            released = released_file(commit, f"{folder}/{path.name}")
            if released is not None and released != path.read_text():
                changed.append(f"{source}/{path.name}")
    assert changed == [], (
        f"migrations released in {commit[:12]} have changed: add a new migration instead"
    )
