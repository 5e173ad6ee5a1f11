-- Tables every service schema carries; see canopy_core.eventlog and canopy_core.consumer.

-- The event log. Revisions come from event_log_head, whose single row every appending transaction
-- updates: the row lock serialises appends in commit order, so revisions are gap-free as seen
-- by any reader (a sequence would hand out numbers that commit out of order).
CREATE TABLE event_log (
    revision   bigint PRIMARY KEY,
    kind       text NOT NULL,
    keys       text[] NOT NULL,
    payload    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX event_log_keys ON event_log USING gin (keys);
CREATE INDEX event_log_created_at ON event_log (created_at);

CREATE TABLE event_log_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    revision  bigint NOT NULL
);
INSERT INTO event_log_head (revision) VALUES (0);

-- Kept apart from the head so that compaction never waits on an appending transaction.
CREATE TABLE event_log_compaction (
    singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    compacted_through bigint NOT NULL
);
INSERT INTO event_log_compaction (compacted_through) VALUES (0);

-- Where each consumer of another log has got to, written in the same transaction as its effects.
CREATE TABLE consumer_cursors (
    consumer   text PRIMARY KEY,
    revision   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Responses of non-idempotent mutations, by the caller's request_id (AIP-155).
CREATE TABLE request_ids (
    method     text NOT NULL,
    request_id text NOT NULL,
    principal  text NOT NULL,
    request_digest bytea NOT NULL,
    response   bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (method, request_id, principal)
);
CREATE INDEX request_ids_created_at ON request_ids (created_at);
