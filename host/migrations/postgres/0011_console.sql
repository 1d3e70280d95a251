-- The admin console: its sessions, the audit trail of what was changed and who signed in
-- or was refused, and accounts an administrator locked. Times are Unix seconds (BIGINT).

-- A console session: the cookie holds a random token, the row its SHA-256. `last_seen`
-- moves with every request; a session idle longer than `admin.session_idle_secs` is over.
-- `csrf` is the token every form of the session carries.
CREATE TABLE admin_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    username   TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL
);
CREATE INDEX admin_sessions_last_seen ON admin_sessions (last_seen);

-- One row per event: a change made in the console or its API, a sign-in, a failed
-- sign-in, a token issued or refused. `actor` is who (an account, a client or
-- "anonymous"), `action` what (e.g. client.create, signin.failed), `target` on what,
-- `outcome` ok or refused, `detail` the named cause or what changed.
CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL,
    address TEXT NOT NULL
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_action ON audit_events (action, at);

-- Accounts an administrator locked: no sign-in (page, Basic) while a row is here.
CREATE TABLE user_locks (
    user_id   TEXT PRIMARY KEY,
    locked_at BIGINT NOT NULL,
    locked_by TEXT NOT NULL
);
