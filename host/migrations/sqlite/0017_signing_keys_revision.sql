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

CREATE TRIGGER signing_keys_inserted AFTER INSERT ON signing_keys
BEGIN
    UPDATE signing_keys_revision SET revision = revision + 1 WHERE id = 1;
END;

CREATE TRIGGER signing_keys_updated AFTER UPDATE ON signing_keys
BEGIN
    UPDATE signing_keys_revision SET revision = revision + 1 WHERE id = 1;
END;

CREATE TRIGGER signing_keys_deleted AFTER DELETE ON signing_keys
BEGIN
    UPDATE signing_keys_revision SET revision = revision + 1 WHERE id = 1;
END;
