DROP TABLE key_usage_days;
DROP TABLE key_usage_hours;
ALTER TABLE api_keys DROP COLUMN last_used_from;
