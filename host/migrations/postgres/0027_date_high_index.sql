-- A search sorted by a date parameter descending orders by the latest instant of each
-- resource's value (`high`). For a parameter with at most one value per resource
-- (`SearchParamDef::single`: `Observation.effective`, `Patient.birthDate`) the page is
-- read in the order of this index and stops after the page's rows, instead of computing
-- every match's key; ascending reads `fhir_idx_date_value` (low first) the same way.
-- Ties are in the order of the resources' keys in both directions: `high DESC, rk`.
CREATE INDEX fhir_idx_date_high ON fhir_idx_date (resource_type, param, high DESC, rk);
