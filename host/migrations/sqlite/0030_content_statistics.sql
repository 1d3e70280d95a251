-- On PostgreSQL this migration stops `ANALYZE` sampling the resources' JSON text. SQLite's
-- `ANALYZE` samples only indexes: nothing to change; the migration exists so that both
-- databases have the same schema versions.
SELECT 1;
