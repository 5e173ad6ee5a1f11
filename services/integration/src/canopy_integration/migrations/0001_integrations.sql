-- Integrations and the tree of folders and connections each one owns.

CREATE TABLE integrations (
    id                     text PRIMARY KEY,
    tenant_id              text NOT NULL,
    org_id                 text,
    handle                 text NOT NULL,
    state                  text NOT NULL CHECK (state IN ('PENDING', 'ENABLED', 'ERROR')),
    state_reason           text NOT NULL DEFAULT '',
    state_message          text NOT NULL DEFAULT '',
    discovery_role_arn     text NOT NULL,
    discovery_external_id  text NOT NULL,
    member_role_name       text NOT NULL,
    member_external_id     text NOT NULL DEFAULT '',
    handle_prefix          text NOT NULL DEFAULT '',
    connection_config      jsonb NOT NULL DEFAULT '{}',
    sync_interval_seconds  integer NOT NULL,
    max_delete_fraction    double precision NOT NULL,
    crawl_limits           jsonb NOT NULL DEFAULT '{}',
    root_folder_id         text NOT NULL,
    organization_id        text NOT NULL DEFAULT '',
    management_account_id  text NOT NULL DEFAULT '',
    tree_generation        bigint NOT NULL DEFAULT 0,
    etag                   text NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    -- Integration handles are unique across the tenant, org-level integrations included.
    CONSTRAINT integrations_handle_key UNIQUE (tenant_id, handle)
);
CREATE INDEX integrations_scope ON integrations (tenant_id, org_id, id);

CREATE TABLE folders (
    id             text PRIMARY KEY,
    integration_id text NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    parent_id      text REFERENCES folders (id) DEFERRABLE INITIALLY DEFERRED,
    kind           text NOT NULL CHECK (kind IN ('ROOT', 'ORGANIZATIONAL_UNIT')),
    aws_id         text NOT NULL,
    title          text NOT NULL,
    handle         text NOT NULL,
    handle_static  boolean NOT NULL DEFAULT false,
    etag           text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- Syncs move and rename many folders in one transaction: check at commit.
    CONSTRAINT folders_sibling_handle_key UNIQUE (integration_id, parent_id, handle)
        DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX folders_integration ON folders (integration_id, id);
CREATE INDEX folders_parent ON folders (parent_id, id);
CREATE UNIQUE INDEX folders_one_root ON folders (integration_id) WHERE kind = 'ROOT';

CREATE TABLE connections (
    id                  text PRIMARY KEY,
    integration_id      text NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    tenant_id           text NOT NULL,
    folder_id           text NOT NULL REFERENCES folders (id) DEFERRABLE INITIALLY DEFERRED,
    account_id          text NOT NULL,
    account_name        text NOT NULL,
    account_email       text NOT NULL DEFAULT '',
    account_joined_at   timestamptz,
    handle              text NOT NULL,
    handle_static       boolean NOT NULL DEFAULT false,
    config_overrides    jsonb NOT NULL DEFAULT '{}',
    etag                text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT connections_account_key UNIQUE (integration_id, account_id),
    -- Schema names are unique across the tenant, so no workspace can see two with one name.
    CONSTRAINT connections_handle_key UNIQUE (tenant_id, handle) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX connections_integration ON connections (integration_id, id);
CREATE INDEX connections_folder ON connections (folder_id, id);
