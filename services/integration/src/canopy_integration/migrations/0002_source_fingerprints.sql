-- What the last snapshot said of each account, so that a sync skips the unchanged ones.
ALTER TABLE connections ADD COLUMN source_fingerprint text NOT NULL DEFAULT '';
