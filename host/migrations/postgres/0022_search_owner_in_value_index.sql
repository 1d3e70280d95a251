-- Each search parameter's value index ends in (or, for tokens and references, is followed
-- by) the owning resource's id: a search reads the ids of its matches from the index
-- alone (index-only on PostgreSQL), and for a token code or a reference target they come
-- in id order, so that counting distinct matches (`_total`) and building a sorted list of
-- them for a page need no sort of their own. The token's system and the reference's
-- target type come after the id: a code or a target id names one system or type nearly
-- always, and they are still read from the index.
DROP INDEX fhir_idx_string_value;
CREATE INDEX fhir_idx_string_value ON fhir_idx_string (resource_type, param, normalized, id);
DROP INDEX fhir_idx_token_value;
CREATE INDEX fhir_idx_token_value ON fhir_idx_token (resource_type, param, code, id, system);
DROP INDEX fhir_idx_reference_value;
CREATE INDEX fhir_idx_reference_value ON fhir_idx_reference (resource_type, param, target_id, id, target_type);
DROP INDEX fhir_idx_date_value;
CREATE INDEX fhir_idx_date_value ON fhir_idx_date (resource_type, param, low, high, id);
DROP INDEX fhir_idx_number_value;
CREATE INDEX fhir_idx_number_value ON fhir_idx_number (resource_type, param, value, id);
DROP INDEX fhir_idx_quantity_value;
CREATE INDEX fhir_idx_quantity_value ON fhir_idx_quantity (resource_type, param, value, id);
DROP INDEX fhir_idx_uri_value;
CREATE INDEX fhir_idx_uri_value ON fhir_idx_uri (resource_type, param, value, id);
-- Deleted resources keep their index rows (for paging under a snapshot), so a count of
-- matches from the index rows alone takes out those of deleted resources: found here.
CREATE INDEX fhir_resources_deleted ON fhir_resources (resource_type, id) WHERE deleted = 1;
