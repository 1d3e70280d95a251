//! The schema's tables as data, for backup and restore: every table of the database in
//! foreign-key order, its columns with a backend-independent type, rows read as JSON
//! values and written back with the target's types. Nothing here names a Hestia table:
//! whatever the migrations create is covered.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, Row};

use super::{Backend, StoreError};

/// sqlx's bookkeeping of applied migrations; restore runs the migrations itself, so the
/// table is not data.
pub const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Bind parameters per `INSERT`, below SQLite's historical limit of 999.
const MAX_PARAMS: usize = 900;

/// A column's type as both backends understand it. Values travel as JSON: integers and
/// reals as numbers, booleans as `true`/`false`, bytes as base64, JSON as JSON, text and
/// every other type (timestamps, numerics, …) as their text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Portable {
    Integer,
    Real,
    Boolean,
    Text,
    Bytes,
    Json,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub portable: Portable,
    /// The type as the database declares it (used to cast `Other` values on PostgreSQL).
    pub declared: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn sqlite_portable(declared: &str) -> Portable {
    // SQLite's affinity rules (section 3.1 of its datatype documentation), with the names
    // other engines use for booleans and JSON recognised first.
    let d = declared.to_ascii_uppercase();
    if d.contains("BOOL") {
        Portable::Boolean
    } else if d.contains("JSON") {
        Portable::Json
    } else if d.contains("INT") {
        Portable::Integer
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        Portable::Text
    } else if d.is_empty() || d.contains("BLOB") || d.contains("BYTEA") {
        Portable::Bytes
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        Portable::Real
    } else {
        Portable::Other
    }
}

fn postgres_portable(declared: &str) -> Portable {
    match declared {
        "bigint" | "integer" | "smallint" => Portable::Integer,
        "double precision" | "real" => Portable::Real,
        "boolean" => Portable::Boolean,
        "text" | "character varying" | "character" => Portable::Text,
        "bytea" => Portable::Bytes,
        "json" | "jsonb" => Portable::Json,
        _ => Portable::Other,
    }
}

/// Every table of the database but sqlx's bookkeeping, parents before the tables whose
/// foreign keys refer to them (ties by name).
pub async fn tables(conn: &mut AnyConnection, backend: Backend) -> Result<Vec<Table>, StoreError> {
    let (names_sql, fk_sql) = match backend {
        Backend::Sqlite => (
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
            "SELECT m.name, f.\"table\" FROM sqlite_master m, pragma_foreign_key_list(m.name) f WHERE m.type = 'table'",
        ),
        Backend::Postgres => (
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1",
            "SELECT cl.relname::text, pr.relname::text FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_class pr ON pr.oid = c.confrelid WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace",
        ),
    };
    let names: Vec<String> = sqlx::query_scalar(names_sql)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .filter(|n: &String| n != MIGRATIONS_TABLE)
        .collect();
    let edges: Vec<(String, String)> = sqlx::query_as(fk_sql).fetch_all(&mut *conn).await?;
    let mut tables = Vec::new();
    for name in foreign_key_order(&names, &edges)? {
        let columns = columns(conn, backend, &name).await?;
        tables.push(Table { name, columns });
    }
    Ok(tables)
}

/// Kahn's algorithm over (child, parent) edges; a self-reference does not order.
fn foreign_key_order(
    names: &[String],
    edges: &[(String, String)],
) -> Result<Vec<String>, StoreError> {
    let mut parents: BTreeMap<&str, BTreeSet<&str>> = names
        .iter()
        .map(|n| (n.as_str(), BTreeSet::new()))
        .collect();
    for (child, parent) in edges {
        if child != parent
            && let Some(set) = parents.get_mut(child.as_str())
        {
            set.insert(parent.as_str());
        }
    }
    let mut order = Vec::with_capacity(names.len());
    while !parents.is_empty() {
        let ready: Vec<&str> = parents
            .iter()
            .filter(|(_, p)| p.is_empty())
            .map(|(n, _)| *n)
            .collect();
        if ready.is_empty() {
            let cycle: Vec<&str> = parents.keys().copied().collect();
            return Err(StoreError::Invalid(format!(
                "the foreign keys of these tables form a cycle: {}",
                cycle.join(", ")
            )));
        }
        for name in ready {
            parents.remove(name);
            for p in parents.values_mut() {
                p.remove(name);
            }
            order.push(name.to_string());
        }
    }
    Ok(order)
}

async fn columns(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &str,
) -> Result<Vec<Column>, StoreError> {
    let sql = match backend {
        Backend::Sqlite => "SELECT name, type FROM pragma_table_info($1) ORDER BY cid",
        Backend::Postgres => {
            "SELECT column_name::text, (CASE WHEN data_type IN ('USER-DEFINED', 'ARRAY') THEN udt_name ELSE data_type END)::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
        }
    };
    let rows: Vec<(String, String)> = sqlx::query_as(sql).bind(table).fetch_all(conn).await?;
    Ok(rows
        .into_iter()
        .map(|(name, declared)| Column {
            portable: match backend {
                Backend::Sqlite => sqlite_portable(&declared),
                Backend::Postgres => postgres_portable(&declared),
            },
            name,
            declared,
        })
        .collect())
}

/// The highest migration applied, if the database has sqlx's bookkeeping at all.
pub async fn schema_version(
    conn: &mut AnyConnection,
    backend: Backend,
) -> Result<Option<i64>, StoreError> {
    let exists_sql = match backend {
        Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
        Backend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    let exists: i64 = sqlx::query_scalar(exists_sql)
        .bind(MIGRATIONS_TABLE)
        .fetch_one(&mut *conn)
        .await?;
    if exists == 0 {
        return Ok(None);
    }
    let version: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(conn)
            .await?;
    Ok(version)
}

pub async fn count_rows(conn: &mut AnyConnection, table: &str) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", quote(table)))
        .fetch_one(conn)
        .await?;
    Ok(n as u64)
}

/// Reads every row of `table`, each as one JSON value per column, handing them to `each`.
pub async fn read_rows(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &Table,
    mut each: impl FnMut(Vec<Value>) -> std::io::Result<()>,
) -> Result<(), StoreError> {
    let select: Vec<String> = table
        .columns
        .iter()
        .map(|c| select_expr(backend, c))
        .collect();
    let sql = format!("SELECT {} FROM {}", select.join(", "), quote(&table.name));
    let mut rows = sqlx::query(&sql).fetch(conn);
    while let Some(row) = rows.try_next().await? {
        let values = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| decode(&row, i, c.portable, backend))
            .collect::<Result<Vec<_>, _>>()?;
        each(values).map_err(|e| {
            StoreError::Invalid(format!("cannot write the rows of {}: {e}", table.name))
        })?;
    }
    Ok(())
}

/// What the Any driver can decode: PostgreSQL's other types are read as text.
fn select_expr(backend: Backend, c: &Column) -> String {
    let col = quote(&c.name);
    match (backend, c.portable) {
        (Backend::Postgres, Portable::Integer) => format!("{col}::bigint"),
        (Backend::Postgres, Portable::Real) => format!("{col}::float8"),
        (Backend::Postgres, Portable::Json | Portable::Other | Portable::Text) => {
            format!("{col}::text")
        }
        // SQLite types a bare column by its declared type, which the Any driver may not
        // decode (BOOLEAN); an expression is typed by its value.
        (Backend::Sqlite, Portable::Boolean) => format!("CAST({col} AS INTEGER)"),
        (Backend::Sqlite, Portable::Json | Portable::Other) => format!("CAST({col} AS TEXT)"),
        _ => col,
    }
}

fn decode(row: &AnyRow, i: usize, ty: Portable, backend: Backend) -> Result<Value, sqlx::Error> {
    use base64::Engine;
    let value = match ty {
        Portable::Integer => row.try_get::<Option<i64>, _>(i)?.map(Value::from),
        Portable::Real => row
            .try_get::<Option<f64>, _>(i)?
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        Portable::Boolean if backend == Backend::Sqlite => row
            .try_get::<Option<i64>, _>(i)?
            .map(|n| Value::Bool(n != 0)),
        Portable::Boolean => row.try_get::<Option<bool>, _>(i)?.map(Value::Bool),
        Portable::Bytes => row
            .try_get::<Option<Vec<u8>>, _>(i)?
            .map(|b| Value::String(base64::engine::general_purpose::STANDARD.encode(b))),
        Portable::Json => row
            .try_get::<Option<String>, _>(i)?
            .map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s))),
        Portable::Text | Portable::Other => row.try_get::<Option<String>, _>(i)?.map(Value::String),
    };
    Ok(value.unwrap_or(Value::Null))
}

/// One value ready to bind with the type of its target column.
enum Bound {
    Int(Option<i64>),
    Real(Option<f64>),
    Bool(Option<bool>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

/// Converts an archived value (of archived type `from`) to the target column's type.
fn convert(value: &Value, from: Portable, to: &Column) -> Result<Bound, String> {
    use base64::Engine;
    let bad = || {
        format!(
            "column {}: {value} is not a {:?} value",
            to.name, to.portable
        )
    };
    if value.is_null() {
        return Ok(match to.portable {
            Portable::Integer => Bound::Int(None),
            Portable::Real => Bound::Real(None),
            Portable::Boolean => Bound::Bool(None),
            Portable::Bytes => Bound::Bytes(None),
            _ => Bound::Text(None),
        });
    }
    Ok(match to.portable {
        Portable::Integer => Bound::Int(Some(match value {
            Value::Bool(b) => *b as i64,
            Value::String(s) => s.trim().parse().map_err(|_| bad())?,
            v => v.as_i64().ok_or_else(bad)?,
        })),
        Portable::Real => Bound::Real(Some(match value {
            Value::String(s) => s.trim().parse().map_err(|_| bad())?,
            v => v.as_f64().ok_or_else(bad)?,
        })),
        Portable::Boolean => Bound::Bool(Some(match value {
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => matches!(s.as_str(), "t" | "true" | "1"),
            _ => return Err(bad()),
        })),
        Portable::Bytes => Bound::Bytes(Some(match (value, from) {
            (Value::String(s), Portable::Bytes) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| bad())?,
            (Value::String(s), _) => s.clone().into_bytes(),
            (v, _) => v.to_string().into_bytes(),
        })),
        // A JSON column's value is embedded as JSON and goes on as its text form (JSON is
        // bound as text on both backends); a text column's value is its text.
        _ => Bound::Text(Some(match value {
            Value::String(s) if from != Portable::Json => s.clone(),
            v => v.to_string(),
        })),
    })
}

fn bind<'q>(q: Query<'q, Any, AnyArguments<'q>>, b: Bound) -> Query<'q, Any, AnyArguments<'q>> {
    match b {
        Bound::Int(v) => q.bind(v),
        Bound::Real(v) => q.bind(v),
        Bound::Bool(v) => q.bind(v),
        Bound::Text(v) => q.bind(v),
        Bound::Bytes(v) => q.bind(v),
    }
}

/// Writes archived rows into `target`: `archived` names the archive's columns (each must
/// exist in the target), rows hold values in that order.
pub struct Inserter<'a> {
    backend: Backend,
    target: &'a Table,
    /// For each archived column: its archived type and the target column.
    mapping: Vec<(Portable, &'a Column)>,
    pending: Vec<Vec<Bound>>,
}

impl<'a> Inserter<'a> {
    pub fn new(
        backend: Backend,
        target: &'a Table,
        archived: &[Column],
    ) -> Result<Self, StoreError> {
        let mapping = archived
            .iter()
            .map(|a| {
                target
                    .columns
                    .iter()
                    .find(|t| t.name == a.name)
                    .map(|t| (a.portable, t))
                    .ok_or_else(|| {
                        StoreError::Invalid(format!(
                            "the archive's table {} has a column {} that this database lacks",
                            target.name, a.name
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            backend,
            target,
            mapping,
            pending: Vec::new(),
        })
    }

    /// Queues one row, writing a batch when enough are queued.
    pub async fn push(
        &mut self,
        conn: &mut AnyConnection,
        row: &[Value],
    ) -> Result<(), StoreError> {
        if row.len() != self.mapping.len() {
            return Err(StoreError::Invalid(format!(
                "a row of {} has {} values for {} columns",
                self.target.name,
                row.len(),
                self.mapping.len()
            )));
        }
        let bound = row
            .iter()
            .zip(&self.mapping)
            .map(|(v, (from, to))| convert(v, *from, to))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Invalid(format!("table {}: {e}", self.target.name)))?;
        self.pending.push(bound);
        if (self.pending.len() + 1) * self.mapping.len().max(1) > MAX_PARAMS {
            self.flush(conn).await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let cols: Vec<String> = self.mapping.iter().map(|(_, c)| quote(&c.name)).collect();
        let mut n = 0;
        let tuples: Vec<String> = self
            .pending
            .iter()
            .map(|_| {
                let params: Vec<String> = self
                    .mapping
                    .iter()
                    .map(|(_, c)| {
                        n += 1;
                        match (self.backend, c.portable) {
                            (Backend::Postgres, Portable::Json | Portable::Other) => {
                                format!("CAST(${n} AS {})", c.declared)
                            }
                            _ => format!("${n}"),
                        }
                    })
                    .collect();
                format!("({})", params.join(", "))
            })
            .collect();
        // Identity columns take the archived values as they are.
        let overriding = if self.backend == Backend::Postgres {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let sql = format!(
            "INSERT INTO {} ({}){overriding} VALUES {}",
            quote(&self.target.name),
            cols.join(", "),
            tuples.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for row in std::mem::take(&mut self.pending) {
            for b in row {
                q = bind(q, b);
            }
        }
        q.execute(conn).await?;
        Ok(())
    }
}

pub async fn delete_rows(conn: &mut AnyConnection, table: &str) -> Result<(), StoreError> {
    sqlx::query(&format!("DELETE FROM {}", quote(table)))
        .execute(conn)
        .await?;
    Ok(())
}

/// PostgreSQL: moves the sequences behind serial and identity columns past the restored
/// values, so that the next generated value does not collide. (SQLite moves its own.)
pub async fn reset_sequences(conn: &mut AnyConnection, table: &Table) -> Result<(), StoreError> {
    for c in table
        .columns
        .iter()
        .filter(|c| c.portable == Portable::Integer)
    {
        let seq: Option<String> = sqlx::query_scalar("SELECT pg_get_serial_sequence($1, $2)::text")
            .bind(quote(&table.name))
            .bind(&c.name)
            .fetch_one(&mut *conn)
            .await?;
        if let Some(seq) = seq {
            let sql = format!(
                "SELECT setval($1::regclass, COALESCE((SELECT MAX({}) FROM {}), 0) + 1, false)::bigint",
                quote(&c.name),
                quote(&table.name)
            );
            sqlx::query_scalar::<_, i64>(&sql)
                .bind(seq)
                .fetch_one(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// This build's migrations for `backend`, up to `version` when given.
pub fn migrator(backend: Backend, version: Option<i64>) -> Migrator {
    let mut m = match backend {
        Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("migrations/postgres"),
    };
    if let Some(v) = version {
        m.migrations = Cow::Owned(
            m.migrations
                .iter()
                .filter(|x| x.version <= v)
                .cloned()
                .collect(),
        );
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_first() {
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let edges = vec![
            ("a".to_string(), "c".to_string()),
            ("c".to_string(), "b".to_string()),
            ("b".to_string(), "b".to_string()),
        ];
        assert_eq!(foreign_key_order(&names, &edges).unwrap(), ["b", "c", "a"]);
        let cycle = vec![
            ("a".to_string(), "b".to_string()),
            ("b".to_string(), "a".to_string()),
        ];
        assert!(foreign_key_order(&names, &cycle).is_err());
    }

    #[test]
    fn declared_types_map_alike_on_both_backends() {
        for (sqlite, postgres, portable) in [
            ("BIGINT", "bigint", Portable::Integer),
            ("TEXT", "text", Portable::Text),
            ("DOUBLE PRECISION", "double precision", Portable::Real),
            ("BOOLEAN", "boolean", Portable::Boolean),
            ("BYTEA", "bytea", Portable::Bytes),
            ("JSONB", "jsonb", Portable::Json),
            ("TIMESTAMPTZ", "timestamp with time zone", Portable::Other),
        ] {
            assert_eq!(sqlite_portable(sqlite), portable, "{sqlite}");
            assert_eq!(postgres_portable(postgres), portable, "{postgres}");
        }
    }

    #[test]
    fn values_convert_to_the_target_type() {
        let col = |p| Column {
            name: "c".into(),
            portable: p,
            declared: String::new(),
        };
        assert!(matches!(
            convert(
                &Value::Bool(true),
                Portable::Boolean,
                &col(Portable::Integer)
            ),
            Ok(Bound::Int(Some(1)))
        ));
        assert!(matches!(
            convert(
                &serde_json::json!(1),
                Portable::Integer,
                &col(Portable::Boolean)
            ),
            Ok(Bound::Bool(Some(true)))
        ));
        assert!(
            matches!(convert(&serde_json::json!("AAE="), Portable::Bytes, &col(Portable::Bytes)), Ok(Bound::Bytes(Some(b))) if b == [0, 1])
        );
        assert!(
            matches!(convert(&serde_json::json!({"a": 1}), Portable::Json, &col(Portable::Text)), Ok(Bound::Text(Some(s))) if s == r#"{"a":1}"#)
        );
        assert!(
            matches!(convert(&serde_json::json!("x"), Portable::Text, &col(Portable::Json)), Ok(Bound::Text(Some(s))) if s == "x")
        );
        assert!(
            convert(
                &serde_json::json!("x"),
                Portable::Text,
                &col(Portable::Integer)
            )
            .is_err()
        );
    }
}
