-- The sync schedule (one row per integration, with its lease) and the runs it produces.

CREATE TABLE schedules (
    integration_id   text PRIMARY KEY,
    tenant_id        text NOT NULL,
    org_id           text,
    interval_seconds integer NOT NULL,
    -- When the integration is next due; a trigger sets it to now.
    next_run_at      timestamptz NOT NULL,
    -- The run queued or running for the integration, if any.
    active_run_id    text,
    -- Which worker holds the integration, until when (it renews while it crawls).
    lease_owner      text,
    lease_expires_at timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due ON schedules (next_run_at);

CREATE TABLE sync_runs (
    id                text PRIMARY KEY,
    integration_id    text NOT NULL,
    tenant_id         text NOT NULL,
    org_id            text,
    state             text NOT NULL CHECK (state IN
                        ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'NEEDS_CONFIRMATION',
                         'CANCELLED')),
    trigger           text NOT NULL CHECK (trigger IN
                        ('CREATED', 'SCHEDULE', 'SETTINGS_CHANGED', 'MANUAL')),
    confirm_deletions boolean NOT NULL DEFAULT false,
    attempt           integer NOT NULL DEFAULT 0,
    progress          jsonb NOT NULL DEFAULT '{}',
    summary           bytea,
    apply_outcome     text NOT NULL DEFAULT '',
    failure_reason    text NOT NULL DEFAULT '',
    failure_message   text NOT NULL DEFAULT '',
    organization_id   text NOT NULL DEFAULT '',
    etag              text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    ended_at          timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_runs_integration ON sync_runs (integration_id, id DESC);
