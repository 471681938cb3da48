-- The audit log: one row per security-relevant change (sign-ins, keys,
-- secrets, flows, accounts), newest read first. Never a key, password or
-- secret in any column. `user_id` is whose event it is (the owner of what
-- changed), kept as text without a foreign key so that deleting a user
-- does not erase the record of what was done to or by them; rows go only
-- by age (KEYGATE_AUDIT_RETENTION_DAYS).
CREATE TABLE audit_events (
    id TEXT PRIMARY KEY NOT NULL,
    at TIMESTAMP NOT NULL,
    action TEXT NOT NULL,
    user_id TEXT,
    actor_user_id TEXT,
    actor_key_id TEXT,
    target_id TEXT,
    address TEXT,
    user_agent TEXT,
    detail TEXT NOT NULL
);
-- Pages are read newest first, by (at, id), for everyone or for one user;
-- pruning deletes by `at`.
CREATE INDEX audit_events_at_idx ON audit_events (at, id);
CREATE INDEX audit_events_user_at_idx ON audit_events (user_id, at, id);
