-- A row may hold a contiguous range of events that share their kind and keys (EventLog.append_ranges):
-- `revision` stays the row's last revision (so `revision > $after`, the primary key and
-- compaction work on ranges as on single events), `first_revision` is its first, and `payloads`
-- holds one payload per revision, in order; `payload` is then NULL. A single event keeps
-- `first_revision` and `payloads` NULL, exactly as before.
--
-- Expand only: every row the previous release writes is valid here, and its queries still run.
-- It would misread a range row (its `payload` is NULL), so ranges are written only once every
-- replica runs this release and CANOPY_COMPACT_EVENTS is set (README, "Upgrading").
ALTER TABLE event_log
    ADD COLUMN first_revision bigint,
    ADD COLUMN payloads bytea[],
    ALTER COLUMN payload DROP NOT NULL;

-- NOT VALID: the rows already stored are single events (valid by construction); checking them
-- would hold the table's lock for a scan of the whole retention.
ALTER TABLE event_log ADD CONSTRAINT event_log_one_or_range CHECK (
    CASE WHEN first_revision IS NULL
         THEN payload IS NOT NULL AND payloads IS NULL
         ELSE payload IS NULL
              AND first_revision < revision
              AND array_ndims(payloads) = 1 AND array_lower(payloads, 1) = 1
              AND cardinality(payloads) = revision - first_revision + 1
    END
) NOT VALID;
