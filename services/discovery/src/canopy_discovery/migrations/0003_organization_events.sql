-- Following organizations' change events: the queues followed (each under a lease of its own,
-- held for as long as a replica polls it), the last snapshot applied per integration (what a
-- targeted refresh patches), and the runs that events start.

CREATE TABLE event_queues (
    integration_id   text PRIMARY KEY,
    queue_url        text NOT NULL,
    role_arn         text NOT NULL,
    external_id      text NOT NULL,
    -- Bumped when the queue or the role changes: the follower starts again with the new ones.
    version          integer NOT NULL DEFAULT 1,
    -- Which replica polls the queue, until when (it renews while it polls).
    lease_owner      text,
    lease_expires_at timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE applied_snapshots (
    integration_id text PRIMARY KEY,
    -- The integration's tree generation once the snapshot was applied.
    generation     bigint NOT NULL,
    run_id         text NOT NULL,
    -- A serialized canopy.integration.v1.OrganizationSnapshot.
    snapshot       bytea NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_trigger_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_trigger_check CHECK (trigger IN
    ('CREATED', 'SCHEDULE', 'SETTINGS_CHANGED', 'MANUAL', 'RECONCILED', 'ORGANIZATION_EVENTS'));
ALTER TABLE sync_runs
    ADD COLUMN events            jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN event_count       integer NOT NULL DEFAULT 0,
    ADD COLUMN full_crawl_reason text NOT NULL DEFAULT '';
