-- The client address of a key's latest use (after KEYGATE_TRUSTED_PROXIES),
-- written by the batched usage flush with last_used_at.
ALTER TABLE api_keys ADD COLUMN last_used_from TEXT;
-- A key's requests per hour (kept 72 hours) and per day (kept 400 days),
-- UTC, summed by every instance's batched usage flush: requests counts
-- every request the key authenticated, refused those of them refused for
-- the key's own policy (rate limit, address, scope, flow binding).
CREATE TABLE key_usage_hours (
    key_id TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    hour TIMESTAMP NOT NULL,
    requests BIGINT NOT NULL,
    refused BIGINT NOT NULL,
    PRIMARY KEY (key_id, hour)
);
CREATE INDEX key_usage_hours_hour_idx ON key_usage_hours (hour);
CREATE TABLE key_usage_days (
    key_id TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    day TIMESTAMP NOT NULL,
    requests BIGINT NOT NULL,
    refused BIGINT NOT NULL,
    PRIMARY KEY (key_id, day)
);
CREATE INDEX key_usage_days_day_idx ON key_usage_days (day);
