-- An integration's event queue (live updates from the organization) and what discovery last
-- reported of it; and a sync interval that may be unset, so that its default can depend on the
-- queue (15 minutes without one, 24 hours with one).

ALTER TABLE integrations
    ADD COLUMN event_queue text NOT NULL DEFAULT '',
    ADD COLUMN event_queue_state text NOT NULL DEFAULT 'NOT_CONFIGURED'
        CHECK (event_queue_state IN ('NOT_CONFIGURED', 'PENDING', 'FOLLOWING', 'FAILING')),
    ADD COLUMN event_queue_reason text NOT NULL DEFAULT '',
    ADD COLUMN event_queue_message text NOT NULL DEFAULT '',
    ADD COLUMN event_queue_reported_at timestamptz,
    ADD CONSTRAINT integrations_event_queue_configured
        CHECK ((event_queue = '') = (event_queue_state = 'NOT_CONFIGURED'));

-- NULL: the default. Until now an unset interval was stored as the default's 900 seconds, and an
-- explicit 15 minutes could not be told from it (the API answered the same); both become unset,
-- so that adding a queue lengthens them. Integrations without a queue keep 15 minutes.
ALTER TABLE integrations ALTER COLUMN sync_interval_seconds DROP NOT NULL;
UPDATE integrations SET sync_interval_seconds = NULL WHERE sync_interval_seconds = 900;
