-- The directory: tenants, orgs and workspaces as the platform describes them.

CREATE TABLE tenants (
    id           text PRIMARY KEY,
    handle       text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    plan         text NOT NULL CHECK (plan IN ('FREE', 'TEAM', 'ENTERPRISE')),
    etag         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_handle_key UNIQUE (handle)
);

CREATE TABLE orgs (
    id           text PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants (id),
    handle       text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    plan         text NOT NULL CHECK (plan IN ('FREE', 'TEAM', 'ENTERPRISE')),
    etag         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orgs_handle_key UNIQUE (tenant_id, handle)
);

CREATE TABLE workspaces (
    id           text PRIMARY KEY,
    org_id       text NOT NULL REFERENCES orgs (id),
    tenant_id    text NOT NULL REFERENCES tenants (id),
    handle       text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    etag         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workspaces_handle_key UNIQUE (org_id, handle)
);
CREATE INDEX workspaces_tenant ON workspaces (tenant_id);
