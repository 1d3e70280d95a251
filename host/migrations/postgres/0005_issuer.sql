-- A FHIR server that trusts a remote authorization server registers itself there as a
-- resource-server client (RFC 7591) and keeps the registration current (RFC 7592).
-- One row per issuer. The client secret and the registration access token are this
-- server's own credentials, which it must present to the issuer: they are kept as given,
-- unlike the secrets the authorization server verifies (those are stored as hashes).
CREATE TABLE issuer_registrations (
    issuer                    TEXT PRIMARY KEY,
    client_id                 TEXT NOT NULL,
    client_secret             TEXT,
    registration_access_token TEXT,
    registration_client_uri   TEXT,
    metadata                  TEXT NOT NULL,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL
);
