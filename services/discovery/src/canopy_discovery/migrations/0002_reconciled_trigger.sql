-- Runs started by reconciling the schedule with the integration service's list of integrations.

ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_trigger_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_trigger_check CHECK (trigger IN
    ('CREATED', 'SCHEDULE', 'SETTINGS_CHANGED', 'MANUAL', 'RECONCILED'));
