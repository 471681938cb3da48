DROP TRIGGER api_keys_inserted ON api_keys;
DROP FUNCTION keygate_key_inserted();
DROP TABLE key_inserts;
