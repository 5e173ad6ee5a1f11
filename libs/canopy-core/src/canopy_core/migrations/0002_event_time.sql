-- An event's time is its transaction's: the events of one change share it (and a watcher
-- encodes it once per change, not once per event).
ALTER TABLE event_log ALTER COLUMN created_at SET DEFAULT now();
