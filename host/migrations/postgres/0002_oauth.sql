-- Authorization server state. Times are Unix seconds (BIGINT); lists are JSON text.

-- One authorization: a code and the tokens issued from it, or one client_credentials
-- issuance. Revoking a grant revokes every access and refresh token of it (code reuse,
-- refresh-token reuse, revocation of a refresh token).
CREATE TABLE oauth_grants (
    grant_id       TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL,
    user_id        TEXT,
    created_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoked_reason TEXT
);

-- Every access token issued (JWTs are verified without this table; revocation needs it).
CREATE TABLE oauth_access_tokens (
    jti        TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX oauth_access_tokens_grant ON oauth_access_tokens (grant_id);

-- An authorization request between /authorize and the code: login, then consent.
CREATE TABLE oauth_auth_requests (
    id           TEXT PRIMARY KEY,
    browser_hash TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    params       TEXT NOT NULL,
    user_id      TEXT,
    auth_time    BIGINT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);

-- Authorization codes, stored as SHA-256 hashes; single use.
CREATE TABLE oauth_codes (
    code_hash             TEXT PRIMARY KEY,
    grant_id              TEXT NOT NULL,
    client_id             TEXT NOT NULL,
    user_id               TEXT NOT NULL,
    redirect_uri          TEXT NOT NULL,
    redirect_uri_given    BIGINT NOT NULL,
    scope                 TEXT NOT NULL,
    audiences             TEXT NOT NULL,
    patient               TEXT,
    fhir_user             TEXT,
    nonce                 TEXT,
    code_challenge        TEXT,
    code_challenge_method TEXT,
    auth_time             BIGINT NOT NULL,
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT NOT NULL,
    used_at               BIGINT
);

-- Refresh tokens, stored as SHA-256 hashes; the grant is the rotation family.
CREATE TABLE oauth_refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    user_id    TEXT,
    scope      TEXT NOT NULL,
    audiences  TEXT NOT NULL,
    patient    TEXT,
    fhir_user  TEXT,
    auth_time  BIGINT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX oauth_refresh_tokens_grant ON oauth_refresh_tokens (grant_id);

-- `jti`s of client assertions (private_key_jwt) seen, kept until the assertion expires.
CREATE TABLE oauth_used_assertions (
    client_id  TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);

-- Initial access tokens for dynamic client registration (RFC 7591), stored hashed.
CREATE TABLE oauth_registration_tokens (
    token_hash TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    uses_left  BIGINT NOT NULL
);

-- Sign-in attempts, for rate limits per account and per address.
CREATE TABLE oauth_login_attempts (
    username   TEXT NOT NULL,
    address    TEXT NOT NULL,
    at         BIGINT NOT NULL,
    success    BIGINT NOT NULL
);
CREATE INDEX oauth_login_attempts_user ON oauth_login_attempts (username, at);
CREATE INDEX oauth_login_attempts_address ON oauth_login_attempts (address, at);
