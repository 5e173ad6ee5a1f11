-- Which part of the organization an integration mirrors (discovery filters, as a jsonb object of
-- id lists), whether the management account is left out, and the filter ids the last full crawl
-- found nowhere. Every column is new with a default meaning "as before" (no filters, the
-- management account mirrored, nothing unmatched), so the previous release's replicas read and
-- write integrations as before during a rolling upgrade.

ALTER TABLE integrations
    ADD COLUMN filters jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN exclude_management_account boolean NOT NULL DEFAULT false,
    ADD COLUMN unmatched_filters jsonb NOT NULL DEFAULT '{}'::jsonb;
