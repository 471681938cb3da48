-- What a key may do: a space-separated list of scopes (read write run
-- admin); NULL is every scope (keys made before scopes existed, and keys
-- created without a list).
ALTER TABLE api_keys ADD COLUMN scopes TEXT;
-- The addresses a key may be used from: comma-separated CIDR blocks;
-- NULL is anywhere.
ALTER TABLE api_keys ADD COLUMN allowed_ips TEXT;
