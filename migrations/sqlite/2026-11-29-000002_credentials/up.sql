-- Operator-level settings, e.g. the canary that proves the secret key is right.
CREATE TABLE settings (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- One provider credential per user per provider; the secret is encrypted.
CREATE TABLE provider_credentials (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    host TEXT,
    public_key TEXT,
    secret_enc TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX provider_credentials_user_provider_idx
    ON provider_credentials (user_id, provider);

-- Langflow-style global variables; Credential values are encrypted.
CREATE TABLE variables (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    var_type TEXT NOT NULL,
    value TEXT NOT NULL,
    default_fields TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX variables_user_name_idx ON variables (user_id, name);
