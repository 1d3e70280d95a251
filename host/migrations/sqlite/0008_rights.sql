-- Rights of accounts: roles, access policies and what they are attached to. Times are
-- Unix seconds (BIGINT).

-- Roles of an account: free-form names, many per account. `patient`, `practitioner` and
-- `admin` have built-in policies (in code, not rows).
CREATE TABLE user_roles (
    user_id TEXT NOT NULL,
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);
CREATE INDEX user_roles_role ON user_roles (role);

-- Access policies: named TOML documents, checked when added and kept as given.
CREATE TABLE access_policies (
    name        TEXT PRIMARY KEY,
    description TEXT,
    source      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- What a policy is attached to: a role (by name) or an account (by user id).
CREATE TABLE access_policy_bindings (
    policy  TEXT NOT NULL,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (policy, kind, subject)
);
CREATE INDEX access_policy_bindings_subject ON access_policy_bindings (kind, subject);

-- One row whose revision every change of roles, policies, bindings, an account's fhirUser
-- or the accounts themselves increments, in the change's transaction: a resource server
-- that caches rights reads this one number to notice a change.
CREATE TABLE rights_revision (
    id       BIGINT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO rights_revision (id, revision) VALUES (1, 0);
