//! Bulk Data jobs (migration 0010; 0020 adds imports): their kind, state, progress and
//! manifest lists.

use sqlx::Row;

use super::{Store, StoreError, now_secs};

type Result<T> = std::result::Result<T, StoreError>;

/// The state of a job as its status URL reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    InProgress,
    Completed,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::InProgress => "in-progress",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> JobState {
        match text {
            "in-progress" => JobState::InProgress,
            "completed" => JobState::Completed,
            _ => JobState::Failed,
        }
    }
}

/// What a job does: `$export` or `$import`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Export,
    Import,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Export => "export",
            JobKind::Import => "import",
        }
    }

    fn parse(text: &str) -> JobKind {
        match text {
            "import" => JobKind::Import,
            _ => JobKind::Export,
        }
    }
}

/// One export or import job.
#[derive(Debug, Clone)]
pub struct BulkJob {
    pub id: String,
    pub kind: JobKind,
    pub client_id: String,
    pub subject: String,
    pub request: String,
    pub state: JobState,
    /// The export's snapshot (the import's start), in milliseconds.
    pub transaction_time: i64,
    pub progress: String,
    /// JSON arrays of `{type, file, count}` (an import's output: `{type, count}`).
    pub output: String,
    pub errors: String,
    pub error: Option<String>,
    pub updated_at: i64,
}

/// A job being created.
pub struct NewBulkJob<'a> {
    pub id: &'a str,
    pub kind: JobKind,
    pub client_id: &'a str,
    pub subject: &'a str,
    pub request: &'a str,
    pub transaction_time: i64,
}

const COLUMNS: &str = "id, kind, client_id, subject, request, state, transaction_time, progress, output, errors, error, updated_at";

fn job_from_row(row: &sqlx::any::AnyRow) -> std::result::Result<BulkJob, sqlx::Error> {
    Ok(BulkJob {
        id: row.try_get("id")?,
        kind: JobKind::parse(&row.try_get::<String, _>("kind")?),
        client_id: row.try_get("client_id")?,
        subject: row.try_get("subject")?,
        request: row.try_get("request")?,
        state: JobState::parse(&row.try_get::<String, _>("state")?),
        transaction_time: row.try_get("transaction_time")?,
        progress: row.try_get("progress")?,
        output: row.try_get("output")?,
        errors: row.try_get("errors")?,
        error: row.try_get("error")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    /// Records a new job in progress, unless `max_active` jobs are in progress already
    /// (`Ok(false)`).
    pub async fn create_bulk_job(&self, job: &NewBulkJob<'_>, max_active: i64) -> Result<bool> {
        let active: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM bulk_jobs WHERE state = 'in-progress'")
                .fetch_one(self.pool())
                .await?;
        if active >= max_active {
            return Ok(false);
        }
        let now = now_secs();
        sqlx::query(
            "INSERT INTO bulk_jobs (id, kind, client_id, subject, request, state, transaction_time, progress, output, errors, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'in-progress', $6, 'queued', '[]', '[]', $7, $7)",
        )
        .bind(job.id)
        .bind(job.kind.as_str())
        .bind(job.client_id)
        .bind(job.subject)
        .bind(job.request)
        .bind(job.transaction_time)
        .bind(now)
        .execute(self.autocommit().await?.sql())
        .await?;
        Ok(true)
    }

    pub async fn bulk_job(&self, id: &str) -> Result<Option<BulkJob>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM bulk_jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(job_from_row).transpose()?)
    }

    /// Moves a job in progress on: its progress text and the heartbeat. `false` when the
    /// job is no longer in progress (cancelled, or failed by a purge).
    pub async fn bulk_job_progress(&self, id: &str, progress: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE bulk_jobs SET progress = $1, updated_at = $2 WHERE id = $3 AND state = 'in-progress'",
        )
        .bind(progress)
        .bind(now_secs())
        .bind(id)
        .execute(self.autocommit().await?.sql())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a job in progress: completed with its manifest lists, or failed with `error`.
    pub async fn finish_bulk_job(
        &self,
        id: &str,
        outcome: std::result::Result<(&str, &str), &str>,
    ) -> Result<()> {
        let now = now_secs();
        let (state, output, errors, error) = match outcome {
            Ok((output, errors)) => ("completed", output, errors, None),
            Err(error) => ("failed", "[]", "[]", Some(error)),
        };
        sqlx::query(
            "UPDATE bulk_jobs SET state = $1, output = $2, errors = $3, error = $4, progress = $1, updated_at = $5, finished_at = $5 \
             WHERE id = $6 AND state = 'in-progress'",
        )
        .bind(state)
        .bind(output)
        .bind(errors)
        .bind(error)
        .bind(now)
        .bind(id)
        .execute(self.autocommit().await?.sql())
        .await?;
        Ok(())
    }

    /// Removes a job (its files are the caller's to remove); `false` when there was none.
    pub async fn delete_bulk_job(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM bulk_jobs WHERE id = $1")
            .bind(id)
            .execute(self.autocommit().await?.sql())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Fails the jobs in progress whose worker has not moved them since `stale_before`
    /// (Unix seconds): their process stopped. `why` says so for an export and for an
    /// import, in that order. Answers how many.
    pub async fn fail_stale_bulk_jobs(&self, stale_before: i64, why: [&str; 2]) -> Result<u64> {
        let now = now_secs();
        let done = sqlx::query(
            "UPDATE bulk_jobs SET state = 'failed', progress = 'failed', finished_at = $1, \
             error = CASE WHEN kind = 'import' THEN $2 ELSE $3 END \
             WHERE state = 'in-progress' AND updated_at < $4",
        )
        .bind(now)
        .bind(why[1])
        .bind(why[0])
        .bind(stale_before)
        .execute(self.autocommit().await?.sql())
        .await?;
        Ok(done.rows_affected())
    }

    /// The ids of jobs that finished before `finished_before` (Unix seconds), at most
    /// `limit`: what the purge deletes with their files.
    pub async fn expired_bulk_jobs(&self, finished_before: i64, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM bulk_jobs WHERE finished_at IS NOT NULL AND finished_at < $1 ORDER BY finished_at LIMIT $2",
        )
        .bind(finished_before)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id").map_err(StoreError::from))
            .collect()
    }
}
