DROP TABLE rate_limit_windows;
ALTER TABLE api_keys DROP COLUMN rate_limit_seconds;
ALTER TABLE api_keys DROP COLUMN rate_limit_requests;
