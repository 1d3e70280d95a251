-- Bulk Data import jobs ($import) beside the export jobs: the same life (in progress,
-- completed, failed; the status URL, cancel, the purge), a different manifest.
-- export | import
ALTER TABLE bulk_jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'export';
