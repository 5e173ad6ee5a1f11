-- The OUs a run's credentials were refused on, in columns of their own. They were keys of the
-- `progress` object, which the previous release reads strictly (every key must be a field it
-- knows): its replicas failed on every run a current replica had saved during a rolling upgrade.
-- `progress` keeps the keys the previous release knows; both columns are new with defaults.

ALTER TABLE sync_runs
    ADD COLUMN organizational_units_refused integer NOT NULL DEFAULT 0,
    ADD COLUMN refused_organizational_unit_ids text[] NOT NULL DEFAULT '{}';
