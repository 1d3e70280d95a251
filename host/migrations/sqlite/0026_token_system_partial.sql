-- The token index by system serves `system|` searches (any code of a system), whose
-- criterion `system = X` implies `system IS NOT NULL`: the rows without a system (gender,
-- active, status and every other plain code) need no entry, and no write pays for one.
DROP INDEX fhir_idx_token_system;
CREATE INDEX fhir_idx_token_system ON fhir_idx_token (resource_type, param, system)
    WHERE system IS NOT NULL;
