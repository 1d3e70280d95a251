//! `hestia backup` and `hestia restore`: a consistent snapshot of every table of the
//! database in an archive that does not depend on the backend, and its restore into an
//! empty SQLite or PostgreSQL database in one transaction.
//!
//! The archive is a tar file: one member `tables/NAME.ndjson.zst` per table (a JSON array
//! of column values per line, zstd-compressed), in foreign-key order, then
//! `manifest.json` (format version, the schema's migration version, each table's columns,
//! row count and the SHA-256 of its member). Restore checks every member against the
//! manifest before it writes anything, and again while it reads them.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use crate::store::tables::{self, Inserter, Table};
use crate::store::{Backend, Store, StoreError, redact};

/// The archive format's name and version; a restore refuses other versions.
pub const FORMAT: &str = "hestia-backup";
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Archive(String),
    #[error("the archive is damaged: {0}")]
    Checksum(String),
    #[error(
        "the target database is not empty ({0}); restore into a new database, or give --force to replace everything in it"
    )]
    NotEmpty(String),
    #[error("{0}")]
    Schema(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub hestia_version: String,
    /// Unix seconds when the snapshot was taken.
    pub created_at: i64,
    pub source_backend: String,
    /// The highest migration applied to the database the archive was taken from.
    pub schema_version: i64,
    pub tables: Vec<TableEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableEntry {
    #[serde(flatten)]
    pub table: Table,
    pub rows: u64,
    pub member: String,
    pub sha256: String,
    pub bytes: u64,
}

impl Manifest {
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// One line per table and a total, for the end of `backup` and `restore`.
    pub fn summary(&self) -> String {
        let width = self
            .tables
            .iter()
            .map(|t| t.table.name.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for t in &self.tables {
            out.push_str(&format!("  {:width$}  {:>9} rows\n", t.table.name, t.rows));
        }
        out.push_str(&format!(
            "  {} tables, {} rows, schema version {}",
            self.tables.len(),
            self.total_rows(),
            self.schema_version
        ));
        out
    }
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn progress_bar(total: u64, verb: &str) -> indicatif::ProgressBar {
    // Drawn on standard error only when it is a terminal (indicatif hides it otherwise).
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{verb} {{msg:24}} [{{bar:30}}] {{pos}}/{{len}} rows ({{eta}})"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Writes a consistent snapshot of the database at `url` to `out` (through a temporary
/// file beside it, renamed at the end). Safe while `serve` runs on the same database.
pub async fn backup(url: &str, out: &Path) -> Result<Manifest, BackupError> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = tempfile::tempdir_in(dir).map_err(io(dir))?;
    if let Some(path) = sqlite_path(url)
        && !Path::new(path).exists()
    {
        return Err(BackupError::Archive(format!(
            "there is no database at {path}"
        )));
    }
    let source = Store::connect(url).await?;
    let manifest = match source.backend() {
        // `VACUUM INTO` writes a transactionally consistent copy while others write.
        Backend::Sqlite => {
            let copy = work.path().join("snapshot.db");
            let sql = format!(
                "VACUUM INTO '{}'",
                copy.display().to_string().replace('\'', "''")
            );
            sqlx::query(&sql).execute(source.pool()).await?;
            source.close().await;
            let snapshot = Store::connect(&format!("sqlite://{}", copy.display())).await?;
            let mut conn = snapshot.pool().acquire().await?;
            let manifest = dump(&mut conn, Backend::Sqlite, work.path(), out).await;
            drop(conn);
            snapshot.close().await;
            manifest?
        }
        // One read-only transaction sees one snapshot of every table.
        Backend::Postgres => {
            let mut tx = source.pool().begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
            let manifest = dump(&mut tx, Backend::Postgres, work.path(), out).await?;
            tx.rollback().await?;
            source.close().await;
            manifest
        }
    };
    Ok(manifest)
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (path != ":memory:").then_some(path)
}

async fn dump(
    conn: &mut AnyConnection,
    backend: Backend,
    work: &Path,
    out: &Path,
) -> Result<Manifest, BackupError> {
    let schema_version = tables::schema_version(conn, backend)
        .await?
        .ok_or_else(|| {
            BackupError::Schema("the database has no Hestia schema (no migrations applied)".into())
        })?;
    let all = tables::tables(conn, backend).await?;
    let mut total = 0;
    for t in &all {
        total += tables::count_rows(conn, &t.name).await?;
    }
    let partial = PathBuf::from(format!("{}.partial", out.display()));
    let result = write_archive(conn, backend, work, &partial, all, total, schema_version).await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    let manifest = result?;
    std::fs::rename(&partial, out).map_err(io(out))?;
    Ok(manifest)
}

async fn write_archive(
    conn: &mut AnyConnection,
    backend: Backend,
    work: &Path,
    partial: &Path,
    all: Vec<Table>,
    total: u64,
    schema_version: i64,
) -> Result<Manifest, BackupError> {
    let bar = progress_bar(total, "backup");
    let file = create_private(partial).map_err(io(partial))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    let created_at = crate::store::now_secs();
    let mut entries = Vec::with_capacity(all.len());
    for table in all {
        bar.set_message(table.name.clone());
        let member = format!("tables/{}.ndjson.zst", table.name);
        let staged = work.join("member");
        let (written, sha256, bytes) = stage_table(conn, backend, &table, &staged, &bar).await?;
        append(
            &mut tar,
            &member,
            created_at,
            &mut File::open(&staged).map_err(io(&staged))?,
            bytes,
        )
        .map_err(io(partial))?;
        entries.push(TableEntry {
            table,
            rows: written,
            member,
            sha256,
            bytes,
        });
    }
    bar.finish_and_clear();
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        hestia_version: env!("CARGO_PKG_VERSION").into(),
        created_at,
        source_backend: format!("{backend:?}").to_lowercase(),
        schema_version,
        tables: entries,
    };
    let text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Archive(e.to_string()))?;
    append(
        &mut tar,
        MANIFEST,
        created_at,
        &mut text.as_slice(),
        text.len() as u64,
    )
    .map_err(io(partial))?;
    let file = tar.into_inner().map_err(io(partial))?;
    let file = file.into_inner().map_err(|e| BackupError::Io {
        path: partial.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(partial))?;
    Ok(manifest)
}

/// Writes the rows of `table` to `staged` as zstd NDJSON; its row count, and the SHA-256
/// and size of what was written.
async fn stage_table(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &Table,
    staged: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<(u64, String, u64), BackupError> {
    let file = File::create(staged).map_err(io(staged))?;
    let hashing = Hashing {
        inner: BufWriter::new(file),
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut encoder = zstd::Encoder::new(hashing, 3).map_err(io(staged))?;
    let mut written = 0u64;
    tables::read_rows(conn, backend, table, |values| {
        serde_json::to_writer(&mut encoder, &values)?;
        encoder.write_all(b"\n")?;
        written += 1;
        bar.inc(1);
        Ok(())
    })
    .await?;
    let mut hashing = encoder.finish().map_err(io(staged))?;
    hashing.flush().map_err(io(staged))?;
    let (sha256, bytes) = (hex::encode(hashing.hash.finalize()), hashing.bytes);
    drop(hashing.inner);
    Ok((written, sha256, bytes))
}

/// The archive holds the signing keys' private halves: readable by its owner only.
fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn append(
    tar: &mut tar::Builder<impl Write>,
    name: &str,
    mtime: i64,
    data: &mut impl Read,
    size: u64,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(mtime.max(0) as u64);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, data)
}

/// Reads the manifest and checks every member's SHA-256 and size against it.
pub fn verify(archive: &Path) -> Result<Manifest, BackupError> {
    let file = File::open(archive).map_err(io(archive))?;
    let mut tar = tar::Archive::new(BufReader::new(file));
    let mut seen = std::collections::BTreeMap::new();
    let mut manifest = None;
    for entry in tar.entries().map_err(io(archive))? {
        let mut entry = entry.map_err(io(archive))?;
        let name = entry
            .path()
            .map_err(io(archive))?
            .to_string_lossy()
            .into_owned();
        if name == MANIFEST {
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(io(archive))?;
            manifest = Some(serde_json::from_slice::<Manifest>(&text).map_err(|e| {
                BackupError::Checksum(format!("{MANIFEST} is not a manifest of this format: {e}"))
            })?);
        } else {
            let mut hash = Sha256::new();
            let bytes = std::io::copy(&mut entry, &mut hash).map_err(io(archive))?;
            seen.insert(name, (hex::encode(hash.finalize()), bytes));
        }
    }
    let manifest =
        manifest.ok_or_else(|| BackupError::Checksum(format!("it has no {MANIFEST}")))?;
    if manifest.format != FORMAT || manifest.format_version != FORMAT_VERSION {
        return Err(BackupError::Archive(format!(
            "the archive is {} version {}; this hestia reads {FORMAT} version {FORMAT_VERSION}",
            manifest.format, manifest.format_version
        )));
    }
    for t in &manifest.tables {
        match seen.remove(&t.member) {
            Some((sha, bytes)) if sha == t.sha256 && bytes == t.bytes => {}
            Some(_) => {
                return Err(BackupError::Checksum(format!(
                    "the SHA-256 of {} does not match the manifest",
                    t.member
                )));
            }
            None => return Err(BackupError::Checksum(format!("{} is missing", t.member))),
        }
    }
    if let Some(extra) = seen.keys().next() {
        return Err(BackupError::Checksum(format!(
            "{extra} is not in the manifest"
        )));
    }
    Ok(manifest)
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Replace what a database that is not empty holds (in the restore's transaction).
    pub force: bool,
}

/// Restores `archive` into the database at `url`: checks every checksum, brings the schema
/// to the archive's migration version, writes every table in one transaction, then runs
/// the remaining migrations of this build.
pub async fn restore(
    archive: &Path,
    url: &str,
    options: RestoreOptions,
) -> Result<Manifest, BackupError> {
    let manifest = verify(archive)?;
    let target = Store::connect(url).await?;
    let result = restore_into(&target, archive, &manifest, options).await;
    target.close().await;
    result.map_err(|e| match e {
        BackupError::Sql(e) => BackupError::Archive(format!(
            "restore into {} failed and wrote nothing: {e}",
            redact(url)
        )),
        e => e,
    })?;
    Ok(manifest)
}

async fn restore_into(
    target: &Store,
    archive: &Path,
    manifest: &Manifest,
    options: RestoreOptions,
) -> Result<(), BackupError> {
    let backend = target.backend();
    let known = tables::migrator(backend, None);
    let latest = known
        .migrations
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0);
    if !known
        .migrations
        .iter()
        .any(|m| m.version == manifest.schema_version)
    {
        return Err(BackupError::Schema(format!(
            "the archive's schema version {} is not one this hestia knows (it knows up to {latest}); restore with a hestia at least as new as the one that made it",
            manifest.schema_version
        )));
    }
    let mut conn = target.pool().acquire().await?;
    if let Some(current) = tables::schema_version(&mut conn, backend).await?
        && current > manifest.schema_version
    {
        return Err(BackupError::Schema(format!(
            "the target database's schema (version {current}) is newer than the archive's ({}); restore into a new database",
            manifest.schema_version
        )));
    }
    drop(conn);
    target.migrate_to(Some(manifest.schema_version)).await?;
    let mut conn = target.pool().acquire().await?;
    let schema = tables::tables(&mut conn, backend).await?;
    drop(conn);
    if !options.force {
        refuse_if_not_empty(target, &schema, manifest.schema_version).await?;
    }
    write_all(target, archive, manifest, &schema).await?;
    target.migrate().await?;
    Ok(())
}

/// Empty means: no table holds more rows than the migrations themselves write (as they do
/// on a new SQLite database).
async fn refuse_if_not_empty(
    target: &Store,
    schema: &[Table],
    version: i64,
) -> Result<(), BackupError> {
    let dir = tempfile::tempdir().map_err(io(&std::env::temp_dir()))?;
    let fresh = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("fresh.db").display()
    ))
    .await?;
    fresh.migrate_to(Some(version)).await?;
    let mut fresh_conn = fresh.pool().acquire().await?;
    let mut conn = target.pool().acquire().await?;
    let mut filled = Vec::new();
    for t in schema {
        let n = tables::count_rows(&mut conn, &t.name).await?;
        let seeded = tables::count_rows(&mut fresh_conn, &t.name)
            .await
            .unwrap_or(0);
        if n > seeded {
            filled.push(format!("{} has {n} rows", t.name));
        }
    }
    drop(fresh_conn);
    fresh.close().await;
    if filled.is_empty() {
        Ok(())
    } else {
        Err(BackupError::NotEmpty(filled.join(", ")))
    }
}

/// The one transaction of a restore: every table emptied, then filled from the archive.
async fn write_all(
    target: &Store,
    archive: &Path,
    manifest: &Manifest,
    schema: &[Table],
) -> Result<(), BackupError> {
    let backend = target.backend();
    let by_member: std::collections::HashMap<&str, &TableEntry> = manifest
        .tables
        .iter()
        .map(|t| (t.member.as_str(), t))
        .collect();
    for t in &manifest.tables {
        if !schema.iter().any(|s| s.name == t.table.name) {
            return Err(BackupError::Schema(format!(
                "the archive's table {} is not in this database's schema",
                t.table.name
            )));
        }
    }
    let bar = progress_bar(manifest.total_rows(), "restore");
    let mut tx = target.pool().begin().await?;
    if backend == Backend::Sqlite {
        sqlx::query("PRAGMA defer_foreign_keys = ON")
            .execute(&mut *tx)
            .await?;
    }
    for t in schema.iter().rev() {
        tables::delete_rows(&mut tx, &t.name).await?;
    }
    let file = File::open(archive).map_err(io(archive))?;
    let mut tar = tar::Archive::new(BufReader::new(file));
    for entry in tar.entries().map_err(io(archive))? {
        let entry = entry.map_err(io(archive))?;
        let name = entry
            .path()
            .map_err(io(archive))?
            .to_string_lossy()
            .into_owned();
        let Some(expected) = by_member.get(name.as_str()) else {
            continue;
        };
        let target_table = schema
            .iter()
            .find(|s| s.name == expected.table.name)
            .expect("checked above");
        bar.set_message(target_table.name.clone());
        restore_member(
            &mut tx,
            backend,
            target_table,
            expected,
            entry,
            archive,
            &bar,
        )
        .await?;
        if backend == Backend::Postgres {
            tables::reset_sequences(&mut tx, target_table).await?;
        }
    }
    tx.commit().await?;
    bar.finish_and_clear();
    Ok(())
}

/// Inserts the rows of one archive member into `table`, checking its SHA-256 and its row
/// count against the manifest.
async fn restore_member(
    tx: &mut AnyConnection,
    backend: Backend,
    table: &Table,
    expected: &TableEntry,
    entry: tar::Entry<'_, BufReader<File>>,
    archive: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<(), BackupError> {
    let name = entry
        .path()
        .map_err(io(archive))?
        .to_string_lossy()
        .into_owned();
    let mut inserter = Inserter::new(backend, table, &expected.table.columns)?;
    let mut reader = HashingReader {
        inner: entry,
        hash: Sha256::new(),
    };
    let lines = BufReader::new(zstd::Decoder::new(&mut reader).map_err(io(archive))?);
    let mut rows = 0u64;
    for line in lines.lines() {
        let line = line.map_err(|e| BackupError::Checksum(format!("{name}: {e}")))?;
        let values: Vec<serde_json::Value> = serde_json::from_str(&line)
            .map_err(|e| BackupError::Archive(format!("{name}, row {}: {e}", rows + 1)))?;
        inserter.push(tx, &values).await?;
        rows += 1;
        bar.inc(1);
    }
    inserter.flush(tx).await?;
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(io(archive))?;
    if hex::encode(reader.hash.finalize()) != expected.sha256 {
        return Err(BackupError::Checksum(format!(
            "{name} changed while it was read"
        )));
    }
    if rows != expected.rows {
        return Err(BackupError::Archive(format!(
            "{name} holds {rows} rows; the manifest says {}",
            expected.rows
        )));
    }
    Ok(())
}

struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}
