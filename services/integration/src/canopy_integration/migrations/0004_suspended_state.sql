-- Integrations whose scope's plan no longer allows them: discovery stops syncing them.

ALTER TABLE integrations DROP CONSTRAINT integrations_state_check;
ALTER TABLE integrations ADD CONSTRAINT integrations_state_check
    CHECK (state IN ('PENDING', 'ENABLED', 'ERROR', 'SUSPENDED'));
