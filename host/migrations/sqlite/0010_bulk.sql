-- Bulk Data export jobs ($export). Times of the job's life are Unix seconds (BIGINT);
-- `transaction_time` is the export's snapshot in milliseconds, as the FHIR layer keeps
-- time. The files are under the data directory, named by the job's id.
CREATE TABLE bulk_jobs (
    id               TEXT PRIMARY KEY,
    -- Whose job: the client and subject of the kick-off's token; only they see it.
    client_id        TEXT NOT NULL,
    subject          TEXT NOT NULL,
    -- The kick-off URL, as the manifest's `request` repeats it.
    request          TEXT NOT NULL,
    -- in-progress | completed | failed
    state            TEXT NOT NULL,
    transaction_time BIGINT NOT NULL,
    progress         TEXT NOT NULL,
    -- The manifest's output and error lists (JSON arrays of {type, file, count}).
    output           TEXT NOT NULL,
    errors           TEXT NOT NULL,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    -- Moved by the job's worker after each page: a job in progress whose worker stops
    -- moving it (its process died) is failed by the next purge.
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT
);
CREATE INDEX bulk_jobs_state ON bulk_jobs (state, updated_at);
CREATE INDEX bulk_jobs_finished ON bulk_jobs (finished_at);
