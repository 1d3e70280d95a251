-- A number that every change of the registered clients increments (a client added,
-- changed, its secret rotated, removed), in the changing transaction. A process that keeps
-- clients in memory for the token endpoint reads it with the other revisions, to learn
-- that another process (the CLI, another server on the same database) changed them.
CREATE TABLE clients_revision (
    id       BIGINT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO clients_revision (id, revision) VALUES (1, 0);

CREATE FUNCTION bump_clients_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE clients_revision SET revision = revision + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER clients_changed AFTER INSERT OR UPDATE OR DELETE ON clients
FOR EACH STATEMENT EXECUTE FUNCTION bump_clients_revision();
