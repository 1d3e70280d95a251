-- Each search parameter's value index carries the owning resource's id (INCLUDE: not a
-- key column, so rows of equal value stay in the order they were written and a create
-- touches the same last pages): a count of distinct matches (`_total`) reads their ids
-- from the index alone once autovacuum has marked the pages visible.
DROP INDEX fhir_idx_string_value;
CREATE INDEX fhir_idx_string_value ON fhir_idx_string (resource_type, param, normalized) INCLUDE (id);
DROP INDEX fhir_idx_token_value;
CREATE INDEX fhir_idx_token_value ON fhir_idx_token (resource_type, param, code, system) INCLUDE (id);
DROP INDEX fhir_idx_reference_value;
CREATE INDEX fhir_idx_reference_value ON fhir_idx_reference (resource_type, param, target_id, target_type) INCLUDE (id);
DROP INDEX fhir_idx_date_value;
CREATE INDEX fhir_idx_date_value ON fhir_idx_date (resource_type, param, low, high) INCLUDE (id);
DROP INDEX fhir_idx_number_value;
CREATE INDEX fhir_idx_number_value ON fhir_idx_number (resource_type, param, value) INCLUDE (id);
DROP INDEX fhir_idx_quantity_value;
CREATE INDEX fhir_idx_quantity_value ON fhir_idx_quantity (resource_type, param, value) INCLUDE (id);
DROP INDEX fhir_idx_uri_value;
CREATE INDEX fhir_idx_uri_value ON fhir_idx_uri (resource_type, param, value) INCLUDE (id);
-- Deleted resources keep their index rows (for paging under a snapshot), so a count of
-- matches from the index rows alone takes out those of deleted resources: found here.
CREATE INDEX fhir_resources_deleted ON fhir_resources (resource_type, id) WHERE deleted = 1;
