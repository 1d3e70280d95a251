-- Foundation: accounts, clients, signing keys. Later issues add their tables in their own
-- numbered migrations (0002 authorization server, 0003 FHIR), in both dialect folders.
-- Times are Unix seconds (BIGINT) so that one query text serves SQLite and PostgreSQL.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    fhir_user     TEXT,
    created_at    BIGINT NOT NULL
);

CREATE TABLE clients (
    client_id                  TEXT PRIMARY KEY,
    client_name                TEXT NOT NULL,
    secret_hash                TEXT,
    kind                       TEXT NOT NULL,
    token_endpoint_auth_method TEXT NOT NULL,
    redirect_uris              TEXT NOT NULL,
    grant_types                TEXT NOT NULL,
    scope                      TEXT NOT NULL,
    audiences                  TEXT NOT NULL,
    metadata                   TEXT NOT NULL,
    registration_token_hash    TEXT,
    created_at                 BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    alg          TEXT NOT NULL,
    private_pem  TEXT NOT NULL,
    public_jwk   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    sign_from    BIGINT NOT NULL,
    retire_after BIGINT
);
