-- What an audited refusal needs to be explained again: for a FHIR request refused with a
-- valid token, JSON of its client, account, scopes and the request's type and interaction
-- (the console's Explain takes them); empty for every other event.
ALTER TABLE audit_events ADD COLUMN context TEXT NOT NULL DEFAULT '';
