DROP TABLE variables;
DROP TABLE provider_credentials;
DROP TABLE settings;
