CREATE TABLE flows (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    endpoint_name TEXT,
    data TEXT,
    upstream TEXT,
    access TEXT NOT NULL DEFAULT 'private',
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX flows_user_id_idx ON flows (user_id);
CREATE UNIQUE INDEX flows_user_endpoint_name_idx ON flows (user_id, endpoint_name);
-- Anonymous runs of public flows look flows up by endpoint name alone.
CREATE INDEX flows_endpoint_name_idx ON flows (endpoint_name);

-- A key bound to one flow. The application deletes a flow's bound keys in
-- the same transaction as the flow (and drops them from the key cache);
-- the foreign key is the database's own guarantee.
ALTER TABLE api_keys ADD COLUMN flow_id TEXT REFERENCES flows (id) ON DELETE CASCADE;
CREATE INDEX api_keys_flow_id_idx ON api_keys (flow_id);
