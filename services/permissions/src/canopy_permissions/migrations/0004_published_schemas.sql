-- A connection's schema name, account and settings are the same in every workspace that holds
-- it (a rename or a settings change reaches all of them in one transaction), so they are stored
-- once per connection: a handle-prefix change updates one row per connection, not one per
-- connection per workspace.
CREATE TABLE published_schemas (
    connection_id  text PRIMARY KEY,
    integration_id text NOT NULL,
    name           text NOT NULL,
    account_id     text NOT NULL,
    config         bytea NOT NULL  -- EffectiveConnectionConfig
);
INSERT INTO published_schemas (connection_id, integration_id, name, account_id, config)
SELECT DISTINCT ON (connection_id) connection_id, integration_id, name, account_id, config
FROM workspace_schemas
ORDER BY connection_id;

ALTER TABLE workspace_schemas DROP COLUMN name, DROP COLUMN account_id, DROP COLUMN config;
ALTER TABLE workspace_schemas RESET (fillfactor);
