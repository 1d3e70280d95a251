//! The connections `store/` lends to the FHIR layer: a pooled connection ([`Conn`], from
//! [`Store::connection`]) and a write transaction ([`WriteTx`], from [`Store::begin`]),
//! which is a `Conn` too. Both are opaque: statements run on them only through the
//! functions of `store/` that take them, so no other module issues SQL.

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Transaction};

use super::turn::Turn;
use super::{Backend, Store, StoreError};

/// A connection to the database: a pooled one whose statements each commit as they run,
/// or the connection of a [`WriteTx`].
pub struct Conn(Inner);

enum Inner {
    Pooled(PoolConnection<Any>),
    Tx(Transaction<'static, Any>),
}

impl Conn {
    /// The sqlx connection, for the statements of `store/`.
    pub(super) fn sql(&mut self) -> &mut AnyConnection {
        match &mut self.0 {
            Inner::Pooled(conn) => conn,
            Inner::Tx(tx) => tx,
        }
    }
}

/// A write transaction from [`Store::begin`]: pass it (`&mut tx`) to the functions that
/// read or write in it, then [`WriteTx::commit`]; dropped without a commit, it rolls back.
/// On SQLite it holds the process's write turn until then.
pub struct WriteTx {
    // Dropped first: the rollback is queued before the turn passes on.
    conn: Conn,
    _turn: Option<Turn>,
    /// The store, to count the commit towards the next `ANALYZE`.
    store: Store,
    /// Dropped last, after the commit or the rollback.
    _finished: Finished,
}

/// Tells the versions kept between reads that a write transaction of this process has
/// finished ([`super::resource_cache::ResourceCache::wrote`]), when dropped: whatever it
/// changed, the next read looks at the revisions again before it relies on them.
struct Finished(std::sync::Arc<super::resource_cache::ResourceCache>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.wrote();
    }
}

impl WriteTx {
    /// The database the transaction writes to.
    pub(super) fn backend(&self) -> super::Backend {
        self.store.backend()
    }

    /// Commits, passes the write turn on, and counts the commit towards the next
    /// [`Store::analyze`].
    pub async fn commit(self) -> Result<(), StoreError> {
        self.commit_counting(1).await
    }

    /// Commits `writes` writes at once (a group of creates).
    pub async fn commit_counting(self, writes: u64) -> Result<(), StoreError> {
        let store = self.store.clone();
        self.commit_uncounted().await?;
        store.count_writes(writes);
        Ok(())
    }

    /// Commits without counting a write (`ANALYZE` itself).
    pub(super) async fn commit_uncounted(self) -> Result<(), StoreError> {
        let WriteTx {
            conn,
            _turn,
            _finished,
            ..
        } = self;
        match conn.0 {
            Inner::Tx(tx) => tx.commit().await?,
            // Its statements committed as they ran.
            Inner::Pooled(_) => {}
        }
        drop(_turn);
        drop(_finished);
        Ok(())
    }
}

impl std::ops::Deref for WriteTx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

/// What an interaction runs on: its caller's connection or transaction, or one of its own.
pub enum Held<'a, T> {
    Caller(&'a mut T),
    Own(T),
}

impl<T> std::ops::Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Held::Caller(t) => t,
            Held::Own(t) => t,
        }
    }
}

impl<T> std::ops::DerefMut for Held<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        match self {
            Held::Caller(t) => t,
            Held::Own(t) => t,
        }
    }
}

impl Held<'_, WriteTx> {
    /// Commits a transaction of its own; the caller's is the caller's to commit.
    pub async fn finish(self) -> Result<(), StoreError> {
        match self {
            Held::Caller(_) => Ok(()),
            Held::Own(tx) => tx.commit().await,
        }
    }
}

impl Store {
    /// A pooled connection, for reads outside a transaction.
    pub async fn connection(&self) -> Result<Conn, StoreError> {
        Ok(Conn(Inner::Pooled(self.pool().acquire().await?)))
    }

    /// The connection of the caller's transaction, or a pooled one ([`Store::connection`]).
    pub async fn connection_unless<'a>(
        &self,
        caller: Option<&'a mut WriteTx>,
    ) -> Result<Held<'a, Conn>, StoreError> {
        Ok(match caller {
            Some(tx) => Held::Caller(&mut tx.conn),
            None => Held::Own(self.connection().await?),
        })
    }

    /// The caller's transaction, or a new one ([`Store::begin`]) that
    /// [`Held::finish`] commits.
    pub async fn begin_unless<'a>(
        &self,
        caller: Option<&'a mut WriteTx>,
    ) -> Result<Held<'a, WriteTx>, StoreError> {
        Ok(match caller {
            Some(tx) => Held::Caller(tx),
            None => Held::Own(self.begin().await?),
        })
    }

    /// The process's write turn on SQLite ([`super::turn`]); nothing on PostgreSQL.
    pub(super) async fn turn(&self) -> Result<Option<Turn>, StoreError> {
        match &self.write_turn {
            Some(turn) => Ok(Some(turn.take().await?)),
            None => Ok(None),
        }
    }

    /// A pooled connection for writes outside a transaction, each statement committing as
    /// it runs; on SQLite it holds the write turn, so that such writes queue with the
    /// transactions of [`Store::begin`] instead of losing every race for the lock to them.
    pub(super) async fn autocommit(&self) -> Result<WriteTx, StoreError> {
        let turn = self.turn().await?;
        Ok(WriteTx {
            conn: self.connection().await?,
            store: self.clone(),
            _turn: turn,
            _finished: Finished(self.resources.clone()),
        })
    }

    /// Begins a write transaction; every write of one interaction (or one transaction
    /// Bundle) goes through one. On SQLite it first waits for the process's write turn
    /// (see `Store::write_turn`), at most as long as SQLite's own busy timeout, then takes
    /// the database's write lock (`BEGIN IMMEDIATE`).
    pub async fn begin(&self) -> Result<WriteTx, StoreError> {
        let turn = self.turn().await?;
        // `IMMEDIATE`: the write lock is taken before anything is read, so that a write
        // outside the turn (a token's record, another process) is waited for here, under
        // the busy timeout, and never found later behind this transaction's snapshot.
        let tx = match self.backend {
            Backend::Sqlite => self.pool().begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool().begin().await?,
        };
        Ok(WriteTx {
            conn: Conn(Inner::Tx(tx)),
            store: self.clone(),
            _turn: turn,
            _finished: Finished(self.resources.clone()),
        })
    }
}
