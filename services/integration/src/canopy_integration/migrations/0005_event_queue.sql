-- An integration's event queue (live updates from the organization) and what discovery last
-- reported of it; and a sync interval that may be unset, so that its default can depend on the
-- queue (15 minutes without one, 24 hours with one). Every column is new with a default, so the
-- previous release's replicas read and write integrations as before.

ALTER TABLE integrations
    ADD COLUMN event_queue text NOT NULL DEFAULT '',
    ADD COLUMN event_queue_state text NOT NULL DEFAULT 'NOT_CONFIGURED'
        CHECK (event_queue_state IN ('NOT_CONFIGURED', 'PENDING', 'FOLLOWING', 'FAILING')),
    ADD COLUMN event_queue_reason text NOT NULL DEFAULT '',
    ADD COLUMN event_queue_message text NOT NULL DEFAULT '',
    ADD COLUMN event_queue_reported_at timestamptz,
    ADD CONSTRAINT integrations_event_queue_configured
        CHECK ((event_queue = '') = (event_queue_state = 'NOT_CONFIGURED'));

-- 0: unset, the default applies (discovery has always read a zero interval so). Until now an
-- unset interval was stored as the default's 900 seconds, and an explicit 15 minutes could not be
-- told from it (the API answered the same): both become unset, so that adding a queue lengthens
-- them; without a queue they stay 15 minutes. Not NULL: the previous release's replicas, still
-- serving during a rolling upgrade, read this column as a number.
UPDATE integrations SET sync_interval_seconds = 0 WHERE sync_interval_seconds = 900;
