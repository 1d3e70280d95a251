-- A number that every revocation of an access token or a grant increments, in the
-- revoking transaction (the triggers below, so that no path that revokes can forget it).
-- A process that keeps verified tokens in memory reads it, with `rights_revision`, to learn
-- that another process (the CLI, another server on the same database) revoked something.
CREATE TABLE revocation_revision (
    id       BIGINT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO revocation_revision (id, revision) VALUES (1, 0);

CREATE TRIGGER oauth_grants_revoked AFTER UPDATE OF revoked_at ON oauth_grants
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
BEGIN
    UPDATE revocation_revision SET revision = revision + 1 WHERE id = 1;
END;

CREATE TRIGGER oauth_access_tokens_revoked AFTER UPDATE OF revoked_at ON oauth_access_tokens
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
BEGIN
    UPDATE revocation_revision SET revision = revision + 1 WHERE id = 1;
END;
