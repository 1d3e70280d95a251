-- Index rows that no search reads any more. `_id` and `_lastUpdated` are searched on the
-- resource's own columns; a parameter with the type, expression and targets of another
-- of its resource type is searched on that one's rows (`SearchParamDef::rows_code`):
-- Patient/Person/Practitioner/RelatedPerson `phonetic` on `name`, CapabilityStatement
-- `version` on `fhirversion`, CodeSystem `url` on `system`, Coverage `patient` on
-- `beneficiary`, DeviceUseStatement and EnrollmentRequest `subject` on `patient`,
-- Linkage `source` on `item`, ResearchSubject `patient` on `individual`. Writes no
-- longer add such rows; these are the ones written before.
DELETE FROM fhir_idx_token WHERE param = '_id';
DELETE FROM fhir_idx_date WHERE param = '_lastUpdated';
DELETE FROM fhir_idx_string
 WHERE param = 'phonetic'
   AND resource_type IN ('Patient', 'Person', 'Practitioner', 'RelatedPerson');
DELETE FROM fhir_idx_token WHERE resource_type = 'CapabilityStatement' AND param = 'version';
DELETE FROM fhir_idx_uri WHERE resource_type = 'CodeSystem' AND param = 'url';
-- A reference parameter writes reference rows, and token rows for `Reference.identifier`.
DELETE FROM fhir_idx_reference
 WHERE (resource_type = 'Coverage' AND param = 'patient')
    OR (resource_type IN ('DeviceUseStatement', 'EnrollmentRequest') AND param = 'subject')
    OR (resource_type = 'Linkage' AND param = 'source')
    OR (resource_type = 'ResearchSubject' AND param = 'patient');
DELETE FROM fhir_idx_token
 WHERE (resource_type = 'Coverage' AND param = 'patient')
    OR (resource_type IN ('DeviceUseStatement', 'EnrollmentRequest') AND param = 'subject')
    OR (resource_type = 'Linkage' AND param = 'source')
    OR (resource_type = 'ResearchSubject' AND param = 'patient');
