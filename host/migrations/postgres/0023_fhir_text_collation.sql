-- The FHIR tables' keys and search values compare as bytes (collation "C"), as SQLite's
-- BINARY does: every index insert and lookup compares them, and under the database's
-- default collation (a libc locale, even C.UTF-8) each comparison goes through strcoll
-- (a fifth of the index inserts' time in an import of 100,000 Patients). Byte order is
-- code point order for UTF-8, the order SQLite sorts them in, so `_sort` on a string and
-- paging order are the same on both databases; and a `LIKE 'prefix%'` is read from the
-- value index. Every column that these tables compare with each other changes together
-- (PostgreSQL refuses to compare text of two different implicit collations).
ALTER TABLE fhir_resources
    ALTER COLUMN resource_type TYPE TEXT COLLATE "C",
    ALTER COLUMN id TYPE TEXT COLLATE "C";
ALTER TABLE fhir_history
    ALTER COLUMN resource_type TYPE TEXT COLLATE "C",
    ALTER COLUMN id TYPE TEXT COLLATE "C";
ALTER TABLE fhir_idx_string
    ALTER COLUMN resource_type TYPE TEXT COLLATE "C",
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN param TYPE TEXT COLLATE "C",
    ALTER COLUMN normalized TYPE TEXT COLLATE "C",
    ALTER COLUMN exact TYPE TEXT COLLATE "C";
ALTER TABLE fhir_idx_token
    ALTER COLUMN resource_type TYPE TEXT COLLATE "C",
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN param TYPE TEXT COLLATE "C",
    ALTER COLUMN system TYPE TEXT COLLATE "C",
    ALTER COLUMN code TYPE TEXT COLLATE "C",
    ALTER COLUMN text TYPE TEXT COLLATE "C";
ALTER TABLE fhir_idx_reference
    ALTER COLUMN resource_type TYPE TEXT COLLATE "C",
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN param TYPE TEXT COLLATE "C",
    ALTER COLUMN target_type TYPE TEXT COLLATE "C",
    ALTER COLUMN target_id TYPE TEXT COLLATE "C",
    ALTER COLUMN version TYPE TEXT COLLATE "C",
    ALTER COLUMN url TYPE TEXT COLLATE "C";
ALTER TABLE fhir_idx_date
    ALTER COLUMN resource_type TYPE TEXT COLLATE "C",
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN param TYPE TEXT COLLATE "C";
ALTER TABLE fhir_idx_number
    ALTER COLUMN resource_type TYPE TEXT COLLATE "C",
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN param TYPE TEXT COLLATE "C";
ALTER TABLE fhir_idx_quantity
    ALTER COLUMN resource_type TYPE TEXT COLLATE "C",
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN param TYPE TEXT COLLATE "C",
    ALTER COLUMN system TYPE TEXT COLLATE "C",
    ALTER COLUMN code TYPE TEXT COLLATE "C",
    ALTER COLUMN unit TYPE TEXT COLLATE "C";
ALTER TABLE fhir_idx_uri
    ALTER COLUMN resource_type TYPE TEXT COLLATE "C",
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN param TYPE TEXT COLLATE "C",
    ALTER COLUMN value TYPE TEXT COLLATE "C";
