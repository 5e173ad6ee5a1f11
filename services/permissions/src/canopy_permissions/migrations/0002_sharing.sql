-- The tree as the permissions service sees it (a projection of the integration service's tree
-- log), grants and attachments, and each workspace's current schemas.

CREATE TABLE tree_integrations (
    id        text PRIMARY KEY,
    tenant_id text NOT NULL,
    org_id    text,
    handle    text NOT NULL
);

CREATE TABLE tree_folders (
    id             text PRIMARY KEY,
    integration_id text NOT NULL,
    parent_id      text
);
CREATE INDEX tree_folders_integration ON tree_folders (integration_id);

CREATE TABLE tree_connections (
    id             text PRIMARY KEY,
    integration_id text NOT NULL,
    folder_id      text NOT NULL,
    handle         text NOT NULL,
    account_id     text NOT NULL,
    account_name   text NOT NULL,
    config         bytea NOT NULL  -- EffectiveConnectionConfig
);
CREATE INDEX tree_connections_integration ON tree_connections (integration_id);

-- "This folder or connection may be used by that grantee."
CREATE TABLE grants (
    item_id        text NOT NULL,
    integration_id text NOT NULL,
    grantee_kind   text NOT NULL CHECK (grantee_kind IN ('tenant', 'org', 'workspace')),
    grantee_id     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (item_id, grantee_kind, grantee_id)
);
CREATE INDEX grants_integration ON grants (integration_id);
CREATE INDEX grants_grantee ON grants (grantee_id);

-- The etag and time of each item's direct grants.
CREATE TABLE grant_versions (
    item_id    text PRIMARY KEY,
    etag       text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- "This workspace uses that connection, or every connection below that folder."
CREATE TABLE attachments (
    id             text PRIMARY KEY,
    workspace_id   text NOT NULL,
    integration_id text NOT NULL,
    item_kind      text NOT NULL CHECK (item_kind IN ('folder', 'connection')),
    item_id        text NOT NULL,
    etag           text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT attachments_item_key UNIQUE (workspace_id, item_id)
);
CREATE INDEX attachments_integration ON attachments (integration_id, workspace_id);
CREATE INDEX attachments_item ON attachments (item_id);

-- Each workspace's schemas now; every change to it is an event in the same transaction.
CREATE TABLE workspace_schemas (
    workspace_id    text NOT NULL,
    connection_id   text NOT NULL,
    integration_id  text NOT NULL,
    name            text NOT NULL,
    account_id      text NOT NULL,
    attachment_kind text NOT NULL CHECK (attachment_kind IN ('DIRECT', 'FOLDER')),
    via_folder_id   text NOT NULL DEFAULT '',
    config          bytea NOT NULL,
    PRIMARY KEY (workspace_id, connection_id)
);
CREATE INDEX workspace_schemas_connection ON workspace_schemas (connection_id);
CREATE INDEX workspace_schemas_integration ON workspace_schemas (integration_id, workspace_id);

-- The revision of each workspace's latest schema event (to tell a stale listing page).
CREATE TABLE workspace_heads (
    workspace_id text PRIMARY KEY,
    revision     bigint NOT NULL
);
