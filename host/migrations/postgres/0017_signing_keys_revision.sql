-- A number that every change of the signing keys increments (a key added by `hestia keys
-- rotate` or a first start, a retirement scheduled, a retired key deleted), in the changing
-- transaction. A process that keeps the parsed signing keys in memory reads it with the
-- other revisions, to learn that another process (the CLI, another server on the same
-- database) rotated the keys.
CREATE TABLE signing_keys_revision (
    id       BIGINT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO signing_keys_revision (id, revision) VALUES (1, 0);

CREATE FUNCTION bump_signing_keys_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE signing_keys_revision SET revision = revision + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER signing_keys_changed AFTER INSERT OR UPDATE OR DELETE ON signing_keys
FOR EACH STATEMENT EXECUTE FUNCTION bump_signing_keys_revision();
