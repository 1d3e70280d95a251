-- A number that every change of a stored resource's current row or of its history
-- increments, in the changing transaction: an update, a deletion, an expunge. A process
-- that keeps current versions in memory (store/resource_cache.rs) reads it with the other
-- revisions, to learn that another process (the CLI, another server on the same
-- database) changed a resource. A first version (an INSERT into fhir_resources) changes
-- nothing such a process keeps, since it keeps only resources it found, so it does not
-- count. SQLite has one writer at a time: every change counts in shard 0; the 64 rows are
-- PostgreSQL's, so that both databases start with the same rows (backup and restore).
CREATE TABLE fhir_revision (
    shard    BIGINT PRIMARY KEY,
    revision BIGINT NOT NULL
);
WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < 63)
INSERT INTO fhir_revision (shard, revision) SELECT n, 0 FROM s;

CREATE TRIGGER fhir_resources_updated AFTER UPDATE ON fhir_resources
WHEN old.version_id IS NOT new.version_id OR old.deleted IS NOT new.deleted
  OR old.content IS NOT new.content OR old.last_updated IS NOT new.last_updated
  OR old.resource_type IS NOT new.resource_type OR old.id IS NOT new.id
BEGIN
    UPDATE fhir_revision SET revision = revision + 1 WHERE shard = 0;
END;

CREATE TRIGGER fhir_resources_deleted AFTER DELETE ON fhir_resources
BEGIN
    UPDATE fhir_revision SET revision = revision + 1 WHERE shard = 0;
END;

CREATE TRIGGER fhir_history_updated AFTER UPDATE ON fhir_history
BEGIN
    UPDATE fhir_revision SET revision = revision + 1 WHERE shard = 0;
END;

CREATE TRIGGER fhir_history_deleted AFTER DELETE ON fhir_history
BEGIN
    UPDATE fhir_revision SET revision = revision + 1 WHERE shard = 0;
END;
