-- A string parameter on a part of a `HumanName` or `Address` (`family` and `given` of
-- Patient and Practitioner; `address-city`, `-state`, `-postalcode` and `-country` of
-- Patient, Person, Practitioner, RelatedPerson, Location, Organization and InsurancePlan)
-- is searched on the rows of the parameter on the whole element (`name`, `address`) that
-- record that part (`SearchParamDef::rows_subset`): each string row now records the part
-- of a name or address it came from. The rows written before: a part parameter's rows
-- become rows of the whole with their part, and the whole's rows of the same values,
-- written without a part, go (a value that was both a part and, say, a prefix keeps
-- the part's row: the whole's search matches the same values).
ALTER TABLE fhir_idx_string ADD COLUMN part TEXT COLLATE "C";
DELETE FROM fhir_idx_string
 WHERE part IS NULL AND param = 'name' AND resource_type IN ('Patient', 'Practitioner')
   AND EXISTS (SELECT 1 FROM fhir_idx_string p
                WHERE p.rk = fhir_idx_string.rk AND p.exact = fhir_idx_string.exact
                  AND p.param IN ('family', 'given'));
DELETE FROM fhir_idx_string
 WHERE part IS NULL AND param = 'address'
   AND resource_type IN ('Patient', 'Person', 'Practitioner', 'RelatedPerson', 'Location',
                         'Organization', 'InsurancePlan')
   AND EXISTS (SELECT 1 FROM fhir_idx_string p
                WHERE p.rk = fhir_idx_string.rk AND p.exact = fhir_idx_string.exact
                  AND p.param IN ('address-city', 'address-state', 'address-postalcode',
                                  'address-country'));
UPDATE fhir_idx_string
   SET part = CASE param
                WHEN 'family' THEN 'family'
                WHEN 'given' THEN 'given'
                WHEN 'address-city' THEN 'city'
                WHEN 'address-state' THEN 'state'
                WHEN 'address-postalcode' THEN 'postalCode'
                ELSE 'country'
              END,
       param = CASE WHEN param IN ('family', 'given') THEN 'name' ELSE 'address' END
 WHERE (param IN ('family', 'given') AND resource_type IN ('Patient', 'Practitioner'))
    OR (param IN ('address-city', 'address-state', 'address-postalcode', 'address-country')
        AND resource_type IN ('Patient', 'Person', 'Practitioner', 'RelatedPerson',
                              'Location', 'Organization', 'InsurancePlan'));
-- A part parameter's search filters the whole's rows on `part`: the index covers it, so a
-- search still reads its matches in (value, key) order from the index alone.
DROP INDEX fhir_idx_string_value;
CREATE INDEX fhir_idx_string_value ON fhir_idx_string (resource_type, param, normalized, rk)
    INCLUDE (part);
