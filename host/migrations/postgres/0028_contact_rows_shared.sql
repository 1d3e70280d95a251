-- `phone` and `email` (Patient, Person, Practitioner, PractitionerRole, RelatedPerson,
-- OrganizationAffiliation) are `telecom.where(system='phone'|'email')`: the `telecom`
-- token rows of that system, which a search now reads instead
-- (`SearchParamDef::rows_system`). Writes no longer add their own rows; these are the
-- ones written before.
DELETE FROM fhir_idx_token
 WHERE param IN ('phone', 'email')
   AND resource_type IN ('Patient', 'Person', 'Practitioner', 'PractitionerRole',
                         'RelatedPerson', 'OrganizationAffiliation');
