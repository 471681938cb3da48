-- A key's rate limit: at most rate_limit_requests requests per window of
-- rate_limit_seconds, windows aligned to the Unix epoch. Both NULL: no
-- limit.
ALTER TABLE api_keys ADD COLUMN rate_limit_requests BIGINT;
ALTER TABLE api_keys ADD COLUMN rate_limit_seconds BIGINT;
-- The requests every instance accepted for a key in one window, summed by
-- each instance's background sync (count = count + its delta). No foreign
-- key: a sync must not fail for a key deleted meanwhile; rows are pruned
-- once their window has ended (window_end, Unix seconds).
CREATE TABLE rate_limit_windows (
    key_id TEXT NOT NULL,
    window_seconds BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    window_end BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (key_id, window_seconds, window_start)
);
CREATE INDEX rate_limit_windows_end_idx ON rate_limit_windows (window_end);
