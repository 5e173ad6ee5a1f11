-- Room in each page for in-place (HOT) updates: a prefix change renames every schema of an
-- integration in every workspace that uses it, and none of the renamed columns is indexed.
ALTER TABLE workspace_schemas SET (fillfactor = 70);
