-- Every instance's key filter (which refuses unknown keys from memory)
-- hears of every stored key, whoever wrote it (the `api-key` command, an
-- import, another instance): the insert itself notifies the invalidation
-- channel with the first 32 hex digits of the key's hash, at commit.
-- `key_inserts` exists for the schema's sake; SQLite uses it instead.
CREATE TABLE key_inserts (
    seq BIGSERIAL PRIMARY KEY,
    key_hash TEXT NOT NULL
);
CREATE FUNCTION keygate_key_inserted() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('keygate_invalidation', 'created:' || left(NEW.key_hash, 32));
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER api_keys_inserted AFTER INSERT ON api_keys
    FOR EACH ROW EXECUTE FUNCTION keygate_key_inserted();
