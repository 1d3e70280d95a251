-- Every resource gets an integer key in creation order (`rk`, the rowid it already had),
-- and the index rows name their resource by it instead of by its id: narrower rows (8
-- bytes against a 36-character UUID, in the table and in each of its indexes), index
-- rows of a new resource appended at the end of the row index instead of at a random
-- place, and each value index keyed (value, rk), which keeps rows of equal value in
-- creation order (a create touches the last pages) and answers a count of distinct
-- matches from the index alone. A search joins an index row to its resource by rowid.
CREATE TABLE fhir_resources_keyed (
    rk            INTEGER PRIMARY KEY,
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    version_id    BIGINT NOT NULL,
    last_updated  BIGINT NOT NULL,
    deleted       BIGINT NOT NULL,
    content       TEXT NOT NULL
);
INSERT INTO fhir_resources_keyed (rk, resource_type, id, version_id, last_updated, deleted, content)
    SELECT rowid, resource_type, id, version_id, last_updated, deleted, content
    FROM fhir_resources ORDER BY rowid;
DROP TABLE fhir_resources;
ALTER TABLE fhir_resources_keyed RENAME TO fhir_resources;
CREATE UNIQUE INDEX fhir_resources_key ON fhir_resources (resource_type, id);
CREATE INDEX fhir_resources_updated ON fhir_resources (resource_type, last_updated);
CREATE INDEX fhir_resources_deleted ON fhir_resources (resource_type, id) WHERE deleted = 1;
-- The triggers of 0021, dropped with the table they were on.
CREATE TRIGGER fhir_resources_updated AFTER UPDATE ON fhir_resources
WHEN old.version_id IS NOT new.version_id OR old.deleted IS NOT new.deleted
  OR old.content IS NOT new.content OR old.last_updated IS NOT new.last_updated
  OR old.resource_type IS NOT new.resource_type OR old.id IS NOT new.id
BEGIN
    UPDATE fhir_revision SET revision = revision + 1 WHERE shard = 0;
END;

CREATE TRIGGER fhir_resources_deleted AFTER DELETE ON fhir_resources
BEGIN
    UPDATE fhir_revision SET revision = revision + 1 WHERE shard = 0;
END;

-- The index tables, rebuilt with `rk` in place of `id`.
CREATE TABLE fhir_idx_string_keyed (
    resource_type TEXT NOT NULL,
    rk            BIGINT NOT NULL,
    param         TEXT NOT NULL,
    normalized    TEXT NOT NULL,
    exact         TEXT NOT NULL
);
INSERT INTO fhir_idx_string_keyed (resource_type, rk, param, normalized, exact)
    SELECT i.resource_type, r.rk, i.param, i.normalized, i.exact
    FROM fhir_idx_string i JOIN fhir_resources r ON r.resource_type = i.resource_type AND r.id = i.id
    ORDER BY r.rk;
DROP TABLE fhir_idx_string;
ALTER TABLE fhir_idx_string_keyed RENAME TO fhir_idx_string;
CREATE INDEX fhir_idx_string_value ON fhir_idx_string (resource_type, param, normalized, rk);
CREATE INDEX fhir_idx_string_row ON fhir_idx_string (rk, param);

CREATE TABLE fhir_idx_token_keyed (
    resource_type TEXT NOT NULL,
    rk            BIGINT NOT NULL,
    param         TEXT NOT NULL,
    system        TEXT,
    code          TEXT,
    text          TEXT
);
INSERT INTO fhir_idx_token_keyed (resource_type, rk, param, system, code, text)
    SELECT i.resource_type, r.rk, i.param, i.system, i.code, i.text
    FROM fhir_idx_token i JOIN fhir_resources r ON r.resource_type = i.resource_type AND r.id = i.id
    ORDER BY r.rk;
DROP TABLE fhir_idx_token;
ALTER TABLE fhir_idx_token_keyed RENAME TO fhir_idx_token;
CREATE INDEX fhir_idx_token_value ON fhir_idx_token (resource_type, param, code, system, rk);
CREATE INDEX fhir_idx_token_row ON fhir_idx_token (rk, param);
CREATE INDEX fhir_idx_token_system ON fhir_idx_token (resource_type, param, system);

CREATE TABLE fhir_idx_reference_keyed (
    resource_type TEXT NOT NULL,
    rk            BIGINT NOT NULL,
    param         TEXT NOT NULL,
    target_type   TEXT,
    target_id     TEXT,
    version       TEXT,
    url           TEXT
);
INSERT INTO fhir_idx_reference_keyed (resource_type, rk, param, target_type, target_id, version, url)
    SELECT i.resource_type, r.rk, i.param, i.target_type, i.target_id, i.version, i.url
    FROM fhir_idx_reference i JOIN fhir_resources r ON r.resource_type = i.resource_type AND r.id = i.id
    ORDER BY r.rk;
DROP TABLE fhir_idx_reference;
ALTER TABLE fhir_idx_reference_keyed RENAME TO fhir_idx_reference;
CREATE INDEX fhir_idx_reference_value ON fhir_idx_reference (resource_type, param, target_id, target_type, rk);
CREATE INDEX fhir_idx_reference_row ON fhir_idx_reference (rk, param);
CREATE INDEX fhir_idx_reference_by_target ON fhir_idx_reference (target_type, target_id, param, resource_type, rk);

CREATE TABLE fhir_idx_date_keyed (
    resource_type TEXT NOT NULL,
    rk            BIGINT NOT NULL,
    param         TEXT NOT NULL,
    low           BIGINT NOT NULL,
    high          BIGINT NOT NULL
);
INSERT INTO fhir_idx_date_keyed (resource_type, rk, param, low, high)
    SELECT i.resource_type, r.rk, i.param, i.low, i.high
    FROM fhir_idx_date i JOIN fhir_resources r ON r.resource_type = i.resource_type AND r.id = i.id
    ORDER BY r.rk;
DROP TABLE fhir_idx_date;
ALTER TABLE fhir_idx_date_keyed RENAME TO fhir_idx_date;
CREATE INDEX fhir_idx_date_value ON fhir_idx_date (resource_type, param, low, high, rk);
CREATE INDEX fhir_idx_date_row ON fhir_idx_date (rk, param);

CREATE TABLE fhir_idx_number_keyed (
    resource_type TEXT NOT NULL,
    rk            BIGINT NOT NULL,
    param         TEXT NOT NULL,
    value         DOUBLE PRECISION NOT NULL
);
INSERT INTO fhir_idx_number_keyed (resource_type, rk, param, value)
    SELECT i.resource_type, r.rk, i.param, i.value
    FROM fhir_idx_number i JOIN fhir_resources r ON r.resource_type = i.resource_type AND r.id = i.id
    ORDER BY r.rk;
DROP TABLE fhir_idx_number;
ALTER TABLE fhir_idx_number_keyed RENAME TO fhir_idx_number;
CREATE INDEX fhir_idx_number_value ON fhir_idx_number (resource_type, param, value, rk);
CREATE INDEX fhir_idx_number_row ON fhir_idx_number (rk, param);

CREATE TABLE fhir_idx_quantity_keyed (
    resource_type TEXT NOT NULL,
    rk            BIGINT NOT NULL,
    param         TEXT NOT NULL,
    value         DOUBLE PRECISION NOT NULL,
    system        TEXT,
    code          TEXT,
    unit          TEXT
);
INSERT INTO fhir_idx_quantity_keyed (resource_type, rk, param, value, system, code, unit)
    SELECT i.resource_type, r.rk, i.param, i.value, i.system, i.code, i.unit
    FROM fhir_idx_quantity i JOIN fhir_resources r ON r.resource_type = i.resource_type AND r.id = i.id
    ORDER BY r.rk;
DROP TABLE fhir_idx_quantity;
ALTER TABLE fhir_idx_quantity_keyed RENAME TO fhir_idx_quantity;
CREATE INDEX fhir_idx_quantity_value ON fhir_idx_quantity (resource_type, param, value, rk);
CREATE INDEX fhir_idx_quantity_row ON fhir_idx_quantity (rk, param);

CREATE TABLE fhir_idx_uri_keyed (
    resource_type TEXT NOT NULL,
    rk            BIGINT NOT NULL,
    param         TEXT NOT NULL,
    value         TEXT NOT NULL
);
INSERT INTO fhir_idx_uri_keyed (resource_type, rk, param, value)
    SELECT i.resource_type, r.rk, i.param, i.value
    FROM fhir_idx_uri i JOIN fhir_resources r ON r.resource_type = i.resource_type AND r.id = i.id
    ORDER BY r.rk;
DROP TABLE fhir_idx_uri;
ALTER TABLE fhir_idx_uri_keyed RENAME TO fhir_idx_uri;
CREATE INDEX fhir_idx_uri_value ON fhir_idx_uri (resource_type, param, value, rk);
CREATE INDEX fhir_idx_uri_row ON fhir_idx_uri (rk, param);
-- Statistics for the rebuilt tables (sampled, as `Store::analyze` does) before any
-- search plans without them: the schema change makes every connection read them.
PRAGMA analysis_limit = 1000;
ANALYZE;
