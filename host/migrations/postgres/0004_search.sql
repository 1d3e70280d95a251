-- Search: every index table gets (resource_type, id, param), which serves the sort keys'
-- per-resource lookups and the deletion of a resource's rows; it replaces the
-- (resource_type, id) "owner" indexes of 0003, of which it is an extension.
CREATE INDEX fhir_idx_string_row ON fhir_idx_string (resource_type, id, param);
CREATE INDEX fhir_idx_token_row ON fhir_idx_token (resource_type, id, param);
CREATE INDEX fhir_idx_reference_row ON fhir_idx_reference (resource_type, id, param);
CREATE INDEX fhir_idx_date_row ON fhir_idx_date (resource_type, id, param);
CREATE INDEX fhir_idx_number_row ON fhir_idx_number (resource_type, id, param);
CREATE INDEX fhir_idx_quantity_row ON fhir_idx_quantity (resource_type, id, param);
CREATE INDEX fhir_idx_uri_row ON fhir_idx_uri (resource_type, id, param);
DROP INDEX fhir_idx_string_owner;
DROP INDEX fhir_idx_token_owner;
DROP INDEX fhir_idx_reference_owner;
DROP INDEX fhir_idx_date_owner;
DROP INDEX fhir_idx_number_owner;
DROP INDEX fhir_idx_quantity_owner;
DROP INDEX fhir_idx_uri_owner;
-- Token search by system alone (`system|`) and :text.
CREATE INDEX fhir_idx_token_system ON fhir_idx_token (resource_type, param, system);
-- _has and _revinclude: who refers to this resource, through which parameter.
CREATE INDEX fhir_idx_reference_by_target ON fhir_idx_reference (target_type, target_id, param, resource_type);
