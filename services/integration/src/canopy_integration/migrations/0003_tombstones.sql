-- Ids of deleted integrations, folders and connections with their scope, so that a member asking
-- for one learns NOT_FOUND while an outsider still gets PERMISSION_DENIED (AIP-211).
CREATE TABLE tombstones (
    id         text PRIMARY KEY,
    tenant_id  text NOT NULL,
    org_id     text,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
