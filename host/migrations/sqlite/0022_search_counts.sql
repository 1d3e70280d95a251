-- Deleted resources keep their index rows (for paging under a snapshot), so a count of
-- matches from the index rows alone takes out those of deleted resources: found here.
-- (The value indexes stay keyed by value then rowid: with the owner's id after the value,
-- a create's index rows went to random places among those of equal value, and creates of
-- resources with random ids were half as fast.)
CREATE INDEX fhir_resources_deleted ON fhir_resources (resource_type, id) WHERE deleted = 1;
