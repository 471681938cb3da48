DROP TRIGGER api_keys_inserted;
DROP TABLE key_inserts;
