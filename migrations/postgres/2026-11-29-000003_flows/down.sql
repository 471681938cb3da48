DROP INDEX api_keys_flow_id_idx;
ALTER TABLE api_keys DROP COLUMN flow_id;
DROP TABLE flows;
