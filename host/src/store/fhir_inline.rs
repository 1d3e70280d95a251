//! Versions of FHIR resources written on SQLite's inline writer ([`super::inline`]): the
//! same rows as [`super::write_many::fhir_write_many`] (history, current row, index rows), as
//! prepared single-row statements run by SQLite on the calling thread, not as messages to
//! one of sqlx's worker threads. The writer is one connection that every grouped write of
//! the process goes through, so its page cache stays warm between groups (a pooled
//! connection's cache is dropped whenever another connection has written since).

use rusqlite::{OptionalExtension, Transaction, params};

use super::fhir::{Batches, Currents, INDEX_TABLES, StoredVersion, VersionRows};
use super::{Store, StoreError};
use crate::fhir::search::IndexRows;

impl Store {
    /// On SQLite's inline writer, under the write turn: reads the current versions of
    /// `keys` and writes what `prepare` makes of them, in one transaction. `Ok(None)` when
    /// there is no inline writer or its write failed (rolled back, logged at debug level):
    /// the caller writes through the pool instead. `Ok(Some(Err(_)))` is `prepare`'s
    /// refusal, with nothing written.
    ///
    /// The writer runs on the calling thread; a long write is moved off the runtime's
    /// scheduling (`block_in_place`) so that the worker's other tasks go on elsewhere.
    pub async fn write_inline_after<E>(
        &self,
        keys: &[(&str, &str)],
        prepare: impl FnOnce(&Currents) -> Result<Vec<VersionRows>, E>,
    ) -> Result<Option<Result<usize, E>>, StoreError> {
        let Some(inline) = &self.inline else {
            return Ok(None);
        };
        let turn = self.turn().await?;
        let mut refused = None;
        let write = || {
            inline.write(|tx| {
                let currents = current_versions(tx, keys)?;
                match prepare(&currents) {
                    Ok(rows) => write_versions(tx, &rows).map(|()| rows.len()),
                    Err(e) => {
                        refused = Some(e);
                        // Any error rolls the transaction back.
                        Err(rusqlite::Error::QueryReturnedNoRows)
                    }
                }
            })
        };
        let written = if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
        {
            tokio::task::block_in_place(write)
        } else {
            write()
        };
        drop(turn);
        self.resources.wrote();
        if let Some(e) = refused {
            return Ok(Some(Err(e)));
        }
        Ok(written.map(|n| {
            self.count_writes(n as u64);
            Ok(n)
        }))
    }
}

/// The current versions of `keys` that exist, without content (see
/// [`super::fhir::fhir_current_many`]), read in `tx`.
fn current_versions(tx: &Transaction<'_>, keys: &[(&str, &str)]) -> rusqlite::Result<Currents> {
    let mut select = tx.prepare_cached(
        "SELECT version_id, last_updated, deleted FROM fhir_resources \
         WHERE resource_type = ?1 AND id = ?2",
    )?;
    let mut found = Currents::new();
    for &(resource_type, id) in keys {
        let row = select
            .query_row((resource_type, id), |row| {
                Ok(StoredVersion {
                    resource_type: resource_type.to_string(),
                    id: id.to_string(),
                    version_id: row.get(0)?,
                    last_updated: row.get(1)?,
                    deleted: row.get::<_, i64>(2)? != 0,
                    content: String::new(),
                    method: String::new(),
                })
            })
            .optional()?;
        if let Some(version) = row {
            found.insert((resource_type.to_string(), id.to_string()), version);
        }
    }
    Ok(found)
}

const HISTORY: &str = "INSERT INTO fhir_history \
     (resource_type, id, version_id, last_updated, method, deleted, content) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// The history insert has claimed the version number (a taken one is a conflict that
/// fails the whole write), so the current row is replaced without comparing versions.
const CURRENT: &str = "INSERT INTO fhir_resources \
     (resource_type, id, version_id, last_updated, deleted, content) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (resource_type, id) DO UPDATE SET version_id = excluded.version_id, \
     last_updated = excluded.last_updated, deleted = excluded.deleted, content = excluded.content \
     RETURNING rk";

/// Writes `writes` (versions and their index rows) in `tx`: a deletion keeps its last
/// index rows, a later version's rows replace its earlier ones, a first version has none
/// to replace.
pub(super) fn write_versions(tx: &Transaction<'_>, writes: &[VersionRows]) -> rusqlite::Result<()> {
    let mut history = tx.prepare_cached(HISTORY)?;
    let mut current = tx.prepare_cached(CURRENT)?;
    let mut owners: Vec<(&str, i64, &IndexRows)> = Vec::new();
    for (v, rows) in writes {
        let deleted = i64::from(v.deleted);
        history.execute(params![
            v.resource_type,
            v.id,
            v.version_id,
            v.last_updated,
            v.method,
            deleted,
            v.content
        ])?;
        let rk: i64 = current.query_row(
            params![
                v.resource_type,
                v.id,
                v.version_id,
                v.last_updated,
                deleted,
                v.content
            ],
            |row| row.get(0),
        )?;
        if v.deleted {
            continue;
        }
        if v.version_id > 1 {
            for table in INDEX_TABLES {
                tx.prepare_cached(&format!("DELETE FROM {table} WHERE rk = ?1"))?
                    .execute([rk])?;
            }
        }
        if let Some(rows) = rows {
            owners.push((v.resource_type.as_str(), rk, rows));
        }
    }
    write_index(tx, &Batches::of(&owners))
}

/// Each index table's rows, one prepared insert per table.
fn write_index(tx: &Transaction<'_>, b: &Batches<'_>) -> rusqlite::Result<()> {
    // `insert_rows!` binds the key columns, then each row's own.
    macro_rules! insert_rows {
        ($sql:literal, $rows:expr, |$r:ident| [$($value:expr),+]) => {
            if !$rows.is_empty() {
                let mut insert = tx.prepare_cached($sql)?;
                for ((resource_type, rk), param, $r) in &$rows {
                    insert.execute(params![resource_type, rk, param.as_ref(), $($value),+])?;
                }
            }
        };
    }
    insert_rows!(
        "INSERT INTO fhir_idx_string (resource_type, rk, param, normalized, exact, part) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        b.strings,
        |r| [r.normalized, r.exact, r.part]
    );
    insert_rows!(
        "INSERT INTO fhir_idx_token (resource_type, rk, param, system, code, text) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        b.tokens,
        |r| [r.system, r.code, r.text]
    );
    insert_rows!(
        "INSERT INTO fhir_idx_reference \
         (resource_type, rk, param, target_type, target_id, version, url) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        b.references,
        |r| [
            r.target_type.map(|t| t.as_str()),
            r.target_id,
            r.version,
            r.url
        ]
    );
    insert_rows!(
        "INSERT INTO fhir_idx_date (resource_type, rk, param, low, high) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        b.dates,
        |r| [r.low, r.high]
    );
    insert_rows!(
        "INSERT INTO fhir_idx_number (resource_type, rk, param, value) VALUES (?1, ?2, ?3, ?4)",
        b.numbers,
        |r| [r.value]
    );
    insert_rows!(
        "INSERT INTO fhir_idx_quantity (resource_type, rk, param, value, system, code, unit) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        b.quantities,
        |r| [r.value, r.system, r.code, r.unit]
    );
    insert_rows!(
        "INSERT INTO fhir_idx_uri (resource_type, rk, param, value) VALUES (?1, ?2, ?3, ?4)",
        b.uris,
        |r| [r.value]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::write_many::fhir_write_many;
    use serde_json::{Value, json};

    fn version(
        resource: &Value,
        version_id: i64,
        deleted: bool,
    ) -> (StoredVersion, Option<IndexRows>) {
        let index = crate::fhir::search::extract(resource).unwrap();
        let stored = StoredVersion {
            resource_type: resource["resourceType"].as_str().unwrap().into(),
            id: resource["id"].as_str().unwrap().into(),
            version_id,
            last_updated: 1_700_000_000_000 + version_id,
            deleted,
            content: resource.to_string(),
            method: if deleted { "DELETE" } else { "PUT" }.into(),
        };
        (stored, Some(index))
    }

    /// Resources with rows in every index table, then a second version of one and the
    /// deletion of another.
    fn writes() -> [Vec<(StoredVersion, Option<IndexRows>)>; 2] {
        let patient = json!({"resourceType": "Patient", "id": "p", "name": [{"family": "Ng", "given": ["Al"]}],
            "identifier": [{"system": "urn:mrn", "value": "7"}], "birthDate": "1970-02-03",
            "managingOrganization": {"reference": "Organization/o"}});
        let observation = json!({"resourceType": "Observation", "id": "bp", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2021-05-06T07:08:09Z",
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                           "valueQuantity": {"value": 120, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]});
        let risk = json!({"resourceType": "RiskAssessment", "id": "r", "status": "final",
            "subject": {"reference": "Patient/p"}, "prediction": [{"probabilityDecimal": 0.25}]});
        let questionnaire = json!({"resourceType": "Questionnaire", "id": "q", "status": "active",
            "url": "http://example.org/q"});
        let renamed = json!({"resourceType": "Patient", "id": "p", "name": [{"family": "Ngo"}]});
        [
            vec![
                version(&patient, 1, false),
                version(&observation, 1, false),
                version(&risk, 1, false),
                version(&questionnaire, 1, false),
            ],
            vec![version(&renamed, 2, false), version(&risk, 2, true)],
        ]
    }

    /// Every row of the FHIR tables, in a stable order.
    fn rows(path: &std::path::Path) -> Vec<String> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut all = Vec::new();
        for table in ["fhir_history", "fhir_resources"]
            .iter()
            .chain(INDEX_TABLES)
        {
            let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
            let width = stmt.column_count();
            let mut found: Vec<String> = stmt
                .query_map([], |row| {
                    let values: Vec<String> = (0..width)
                        .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                        .collect();
                    Ok(format!("{table}: {}", values.join(", ")))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            found.sort();
            all.extend(found);
        }
        all
    }

    /// `write_inline_after` hands `prepare` the current versions of the keys that exist,
    /// writes what it returns, and writes nothing when it refuses.
    #[tokio::test]
    async fn a_write_after_reading_the_current_versions_is_whole_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("h.db");
        let store = Store::open(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        let [first, _] = writes();
        let written = store
            .write_inline_after(&[("Patient", "p")], |currents| {
                assert!(currents.is_empty(), "nothing exists yet: {currents:?}");
                Ok::<_, String>(first.clone())
            })
            .await
            .unwrap();
        assert_eq!(written, Some(Ok(4)));
        let before = rows(&file);
        assert!(before.iter().any(|r| r.starts_with("fhir_history: ")));
        let keys = [
            ("Patient", "p"),
            ("Questionnaire", "q"),
            ("Patient", "none"),
        ];
        let refused = store
            .write_inline_after(&keys, |currents| {
                let mut found: Vec<_> = currents
                    .values()
                    .map(|v| (v.id.as_str(), v.version_id, v.last_updated))
                    .collect();
                found.sort();
                assert_eq!(
                    found,
                    [("p", 1, 1_700_000_000_001), ("q", 1, 1_700_000_000_001)]
                );
                Err("refused".to_string())
            })
            .await
            .unwrap();
        assert_eq!(refused, Some(Err("refused".to_string())));
        assert_eq!(rows(&file), before, "nothing of the refused write");
        // Versions whose numbers are taken: the writer fails, and says so with `None`.
        let conflict = store
            .write_inline_after(&[], |_| Ok::<_, String>(first.clone()))
            .await
            .unwrap();
        assert_eq!(
            conflict, None,
            "a version taken already: the pool is to write it"
        );
        assert_eq!(rows(&file), before, "nothing of the failed write");
    }

    #[tokio::test]
    async fn the_inline_writer_writes_the_rows_the_pool_writes_and_nothing_of_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let (pooled, inline) = (dir.path().join("pooled.db"), dir.path().join("inline.db"));
        let pool = Store::open(&format!("sqlite://{}", pooled.display()))
            .await
            .unwrap();
        let other = Store::open(&format!("sqlite://{}", inline.display()))
            .await
            .unwrap();
        let writer = other.inline.clone().expect("a file database writes inline");
        for batch in writes() {
            let mut tx = pool.begin().await.unwrap();
            fhir_write_many(&mut tx, &batch).await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(writer.write(|tx| write_versions(tx, &batch)), Some(()));
        }
        let written = rows(&inline);
        assert_eq!(written, rows(&pooled));
        for table in INDEX_TABLES {
            assert!(
                written.iter().any(|r| r.starts_with(&format!("{table}: "))),
                "{table} has rows: the comparison covers it"
            );
        }
        // A version number taken already fails the write, which leaves nothing behind.
        let [first, _] = writes();
        let new = version(&json!({"resourceType": "Patient", "id": "new"}), 1, false);
        let conflict = vec![new, first[0].clone()];
        assert_eq!(writer.write(|tx| write_versions(tx, &conflict)), None);
        assert_eq!(rows(&inline), written);
    }
}
