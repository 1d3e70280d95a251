-- On PostgreSQL this migration gives the FHIR tables' text columns the collation "C"
-- (bytes). SQLite compares text as bytes already (BINARY): nothing to change; the
-- migration exists so that both databases have the same schema versions.
SELECT 1;
