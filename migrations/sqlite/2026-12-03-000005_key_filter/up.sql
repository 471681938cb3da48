-- Every stored key's hash, in the order keys were written, by any process.
-- A running server's key filter (which refuses unknown keys from memory)
-- reads what it has not seen yet, so a key written by another process (the
-- `api-key` command, an import) while the server runs is never refused.
-- The server empties it as it goes; it is not a history.
CREATE TABLE key_inserts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash TEXT NOT NULL
);
CREATE TRIGGER api_keys_inserted AFTER INSERT ON api_keys
BEGIN
    INSERT INTO key_inserts (key_hash) VALUES (NEW.key_hash);
END;
