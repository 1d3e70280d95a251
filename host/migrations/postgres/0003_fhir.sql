-- FHIR repository: the current version of every resource, every version in history, and
-- one index table per search parameter type, filled in the same transaction as the write.
-- Times are milliseconds since the Unix epoch (BIGINT); booleans are 0/1 (BIGINT).
CREATE TABLE fhir_resources (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    version_id    BIGINT NOT NULL,
    last_updated  BIGINT NOT NULL,
    deleted       BIGINT NOT NULL,
    content       TEXT NOT NULL,
    PRIMARY KEY (resource_type, id)
);
CREATE INDEX fhir_resources_updated ON fhir_resources (resource_type, last_updated);

CREATE TABLE fhir_history (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    version_id    BIGINT NOT NULL,
    last_updated  BIGINT NOT NULL,
    method        TEXT NOT NULL,
    deleted       BIGINT NOT NULL,
    content       TEXT NOT NULL,
    PRIMARY KEY (resource_type, id, version_id)
);
CREATE INDEX fhir_history_time ON fhir_history (last_updated);
CREATE INDEX fhir_history_type_time ON fhir_history (resource_type, last_updated);

CREATE TABLE fhir_idx_string (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    normalized    TEXT NOT NULL,
    exact         TEXT NOT NULL
);
CREATE INDEX fhir_idx_string_value ON fhir_idx_string (resource_type, param, normalized);
CREATE INDEX fhir_idx_string_owner ON fhir_idx_string (resource_type, id);

CREATE TABLE fhir_idx_token (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    system        TEXT,
    code          TEXT,
    text          TEXT
);
CREATE INDEX fhir_idx_token_value ON fhir_idx_token (resource_type, param, code, system);
CREATE INDEX fhir_idx_token_owner ON fhir_idx_token (resource_type, id);

CREATE TABLE fhir_idx_reference (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    target_type   TEXT,
    target_id     TEXT,
    version       TEXT,
    url           TEXT
);
CREATE INDEX fhir_idx_reference_value ON fhir_idx_reference (resource_type, param, target_id, target_type);
CREATE INDEX fhir_idx_reference_target ON fhir_idx_reference (target_type, target_id);
CREATE INDEX fhir_idx_reference_owner ON fhir_idx_reference (resource_type, id);

CREATE TABLE fhir_idx_date (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    low           BIGINT NOT NULL,
    high          BIGINT NOT NULL
);
CREATE INDEX fhir_idx_date_value ON fhir_idx_date (resource_type, param, low, high);
CREATE INDEX fhir_idx_date_owner ON fhir_idx_date (resource_type, id);

CREATE TABLE fhir_idx_number (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    value         DOUBLE PRECISION NOT NULL
);
CREATE INDEX fhir_idx_number_value ON fhir_idx_number (resource_type, param, value);
CREATE INDEX fhir_idx_number_owner ON fhir_idx_number (resource_type, id);

CREATE TABLE fhir_idx_quantity (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    value         DOUBLE PRECISION NOT NULL,
    system        TEXT,
    code          TEXT,
    unit          TEXT
);
CREATE INDEX fhir_idx_quantity_value ON fhir_idx_quantity (resource_type, param, value);
CREATE INDEX fhir_idx_quantity_owner ON fhir_idx_quantity (resource_type, id);

CREATE TABLE fhir_idx_uri (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    value         TEXT NOT NULL
);
CREATE INDEX fhir_idx_uri_value ON fhir_idx_uri (resource_type, param, value);
CREATE INDEX fhir_idx_uri_owner ON fhir_idx_uri (resource_type, id);
