-- Every token request reads the registered resource servers (their audiences); by kind,
-- that read does not grow with the number of registered apps.
CREATE INDEX clients_kind ON clients (kind);
