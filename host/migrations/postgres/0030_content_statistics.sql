-- No search filters or orders on a resource's JSON text: `ANALYZE` (after an import, and
-- autovacuum's) need not sample it. Its statistics took a third of the time of analyzing
-- these tables.
ALTER TABLE fhir_resources ALTER COLUMN content SET STATISTICS 0;
ALTER TABLE fhir_history ALTER COLUMN content SET STATISTICS 0;
