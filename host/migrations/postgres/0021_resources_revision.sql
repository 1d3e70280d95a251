-- A number that every change of a stored resource's current row or of its history
-- increments, in the changing transaction: an update, a deletion, an expunge. A process
-- that keeps current versions in memory (store/resource_cache.rs) reads it with the other
-- revisions (the sum of the shards), to learn that another process (the CLI, another
-- server on the same database) changed a resource. A first version (an INSERT into
-- fhir_resources) changes nothing such a process keeps, since it keeps only resources it
-- found, so it does not count.
--
-- Each transaction increments one of 64 shards (its backend's, by process id) once, at
-- commit (a deferred constraint trigger): the row lock is then taken last, when the
-- transaction holds all the others it will take, so it cannot close a cycle of waits
-- with them; and concurrent writers on different shards do not queue on one row.
CREATE TABLE fhir_revision (
    shard    BIGINT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO fhir_revision (shard, revision) SELECT s, 0 FROM generate_series(0, 63) AS s;

CREATE FUNCTION bump_fhir_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('hestia.fhir_revision_bumped', true) IS DISTINCT FROM 'yes' THEN
        PERFORM set_config('hestia.fhir_revision_bumped', 'yes', true);
        UPDATE fhir_revision SET revision = revision + 1 WHERE shard = pg_backend_pid() % 64;
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER fhir_resources_changed AFTER UPDATE ON fhir_resources
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION bump_fhir_revision();

CREATE CONSTRAINT TRIGGER fhir_resources_deleted AFTER DELETE ON fhir_resources
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_fhir_revision();

CREATE CONSTRAINT TRIGGER fhir_history_changed AFTER UPDATE OR DELETE ON fhir_history
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_fhir_revision();

CREATE TRIGGER fhir_resources_truncated AFTER TRUNCATE ON fhir_resources
FOR EACH STATEMENT EXECUTE FUNCTION bump_fhir_revision();

CREATE TRIGGER fhir_history_truncated AFTER TRUNCATE ON fhir_history
FOR EACH STATEMENT EXECUTE FUNCTION bump_fhir_revision();
