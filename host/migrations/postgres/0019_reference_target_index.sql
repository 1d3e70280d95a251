-- fhir_idx_reference_target (target_type, target_id) is a prefix of
-- fhir_idx_reference_by_target (target_type, target_id, param, resource_type) from 0004,
-- which serves every lookup it served: one B-tree less to write per reference row.
DROP INDEX fhir_idx_reference_target;
