//! One SQL interface over both backends: SQLite (embedded default) and
//! PostgreSQL (`database.url = "postgres://…"`). Repositories in `db/` are
//! written once against [`Conn`] / [`Tx`] with `?N` placeholders and
//! portable SQL; what differs between the dialects lives here and in
//! [`Backend`] — nowhere else.
//!
//! Values cross the boundary as [`ValueRef`] (integer, real, text, blob,
//! null): the same five storage classes SQLite has. The Postgres schema
//! uses BIGINT / DOUBLE PRECISION / TEXT / BYTEA to match, and a parameter
//! adapts to the type the server inferred for it.

use std::ops::Deref;

use crate::db::pg;

/// Which database a connection talks to: the one place dialects branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// One row, one column: the database's size in bytes.
    pub fn database_size_sql(self) -> &'static str {
        match self {
            Backend::Sqlite => {
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
            }
            Backend::Postgres => "SELECT pg_database_size(current_database())",
        }
    }

    /// The application's tables and their columns in this schema, as rows
    /// of (table, column, numbered): `numbered` is 1 for a column the
    /// database numbers from a counter that must be moved past copied ids
    /// (Postgres identity and serial columns; SQLite's AUTOINCREMENT
    /// follows inserted ids by itself, so never there). Ordered by table,
    /// then column position; SQLite's own tables are left out.
    pub fn catalog_columns_sql(self) -> &'static str {
        match self {
            Backend::Sqlite => {
                "SELECT m.name, p.name, 0 FROM sqlite_master AS m, pragma_table_info(m.name) AS p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
                 ORDER BY m.name, p.cid"
            }
            Backend::Postgres => {
                "SELECT CAST(c.relname AS TEXT), CAST(a.attname AS TEXT), \
                    CASE WHEN pg_get_serial_sequence(quote_ident(c.relname), a.attname) IS NULL \
                         THEN 0 ELSE 1 END \
                 FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace \
                 JOIN pg_attribute AS a ON a.attrelid = c.oid \
                 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') \
                   AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY c.relname, a.attnum"
            }
        }
    }

    /// Foreign keys between the tables of this schema, as rows of (table,
    /// referenced table).
    pub fn catalog_foreign_keys_sql(self) -> &'static str {
        match self {
            Backend::Sqlite => {
                "SELECT m.name, f.\"table\" FROM sqlite_master AS m, pragma_foreign_key_list(m.name) AS f \
                 WHERE m.type = 'table'"
            }
            Backend::Postgres => {
                "SELECT CAST(c.relname AS TEXT), CAST(r.relname AS TEXT) \
                 FROM pg_constraint AS k JOIN pg_class AS c ON c.oid = k.conrelid \
                 JOIN pg_class AS r ON r.oid = k.confrelid \
                 JOIN pg_namespace AS n ON n.oid = c.relnamespace \
                 WHERE k.contype = 'f' AND n.nspname = current_schema()"
            }
        }
    }

    /// Starts a read-only transaction that sees one consistent state of
    /// the whole database, with no statement time limit (whole-table reads).
    pub fn begin_snapshot_sql(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN DEFERRED",
            Backend::Postgres => {
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL statement_timeout = 0"
            }
        }
    }

    /// Moves the counter behind `table`.`column` (a `numbered` column of
    /// [`catalog_columns_sql`](Self::catalog_columns_sql)) past the
    /// highest id stored, so the next insert gets a fresh one. None where
    /// nothing is needed (SQLite). `table` and `column` must be plain
    /// identifiers.
    pub fn reset_counter_sql(self, table: &str, column: &str) -> Option<String> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
                 COALESCE(max(\"{column}\"), 1), max(\"{column}\") IS NOT NULL) FROM \"{table}\""
            )),
        }
    }

    /// `YYYY-MM-DD` of a unix-milliseconds column, shifted by a fixed UTC
    /// offset (the quota's local day).
    pub fn local_day(self, col: &str, offset_secs: i64) -> String {
        match self {
            Backend::Sqlite => format!("date(({col} / 1000) + {offset_secs}, 'unixepoch')"),
            Backend::Postgres => format!(
                "to_char(to_timestamp(({col} / 1000) + {offset_secs}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            ),
        }
    }
}

#[derive(Debug)]
pub enum DbError {
    Sqlite(rusqlite::Error),
    Postgres(postgres::Error),
    /// `query_row` found nothing (see [`OptionalExtension`]).
    NoRows,
    /// A column could not become the Rust type asked for.
    Convert {
        index: usize,
        message: String,
    },
}

pub type DbResult<T> = Result<T, DbError>;

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Sqlite(e) => write!(f, "{e}"),
            DbError::Postgres(e) => match e.as_db_error() {
                Some(db) => write!(f, "{}: {}", db.code().code(), db.message()),
                None => write!(f, "{e}"),
            },
            DbError::NoRows => f.write_str("query returned no rows"),
            DbError::Convert { index, message } => write!(f, "column {index}: {message}"),
        }
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DbError::Sqlite(e) => Some(e),
            DbError::Postgres(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::QueryReturnedNoRows => DbError::NoRows,
            e => DbError::Sqlite(e),
        }
    }
}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        DbError::Postgres(e)
    }
}

impl DbError {
    /// A UNIQUE or PRIMARY KEY violation (a duplicate insert).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            DbError::Postgres(e) => e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }

    /// The database cannot answer now (locked, gone, restarting): the
    /// request may be retried later; nothing was written.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            DbError::Postgres(e) => pg::is_unavailable(e),
            _ => false,
        }
    }
}

pub trait OptionalExtension<T> {
    /// `Ok(None)` instead of [`DbError::NoRows`].
    fn optional(self) -> DbResult<Option<T>>;
}

impl<T> OptionalExtension<T> for DbResult<T> {
    fn optional(self) -> DbResult<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A value on its way in or out, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// A value read from Postgres, owned (its rows decode into these).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl ValueRef<'_> {
    pub fn to_owned(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Real(r) => Value::Real(r),
            ValueRef::Text(s) => Value::Text(s.to_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

impl Value {
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Int(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(s) => ValueRef::Text(s),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }
}

impl<'a> From<rusqlite::types::ValueRef<'a>> for ValueRef<'a> {
    fn from(v: rusqlite::types::ValueRef<'a>) -> Self {
        use rusqlite::types::ValueRef as V;
        match v {
            V::Null => ValueRef::Null,
            V::Integer(i) => ValueRef::Int(i),
            V::Real(r) => ValueRef::Real(r),
            // SQLite text is UTF-8 unless something wrote raw bytes as TEXT.
            V::Text(t) => std::str::from_utf8(t)
                .map(ValueRef::Text)
                .unwrap_or(ValueRef::Blob(t)),
            V::Blob(b) => ValueRef::Blob(b),
        }
    }
}

impl rusqlite::ToSql for ValueRef<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef as V};
        Ok(ToSqlOutput::Borrowed(match *self {
            ValueRef::Null => V::Null,
            ValueRef::Int(i) => V::Integer(i),
            ValueRef::Real(r) => V::Real(r),
            ValueRef::Text(s) => V::Text(s.as_bytes()),
            ValueRef::Blob(b) => V::Blob(b),
        }))
    }
}

/// A Rust value that can be a statement parameter.
pub trait ToValue {
    fn to_value(&self) -> ValueRef<'_>;
}

/// A Rust value a column can be read into.
pub trait FromValue: Sized {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String>;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> ValueRef<'_> {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> ValueRef<'_> {
        match self {
            Some(v) => v.to_value(),
            None => ValueRef::Null,
        }
    }
}

impl ToValue for str {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl ToValue for String {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Real(*self)
    }
}

impl ToValue for bool {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Int(*self as i64)
    }
}

impl ToValue for ValueRef<'_> {
    fn to_value(&self) -> ValueRef<'_> {
        *self
    }
}

impl ToValue for Value {
    fn to_value(&self) -> ValueRef<'_> {
        self.as_ref()
    }
}

macro_rules! int_values {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> ValueRef<'_> {
                ValueRef::Int(*self as i64)
            }
        }

        impl FromValue for $t {
            fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
                match v {
                    ValueRef::Int(i) => <$t>::try_from(i)
                        .map_err(|_| format!("{i} out of range for {}", stringify!($t))),
                    other => Err(format!("expected an integer, got {other:?}")),
                }
            }
        }
    )*};
}

int_values!(i64, i32, u32, u16, u8);

impl ToValue for u64 {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToValue for usize {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl FromValue for u64 {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        i64::from_value(v).and_then(|i| u64::try_from(i).map_err(|e| e.to_string()))
    }
}

impl FromValue for usize {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        i64::from_value(v).and_then(|i| usize::try_from(i).map_err(|e| e.to_string()))
    }
}

impl FromValue for bool {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        i64::from_value(v).map(|i| i != 0)
    }
}

impl FromValue for f64 {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Int(i) => Ok(i as f64),
            ValueRef::Real(r) => Ok(r),
            other => Err(format!("expected a real, got {other:?}")),
        }
    }
}

impl FromValue for String {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Text(s) => Ok(s.to_owned()),
            other => Err(format!("expected text, got {other:?}")),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Blob(b) => Ok(b.to_vec()),
            ValueRef::Text(s) => Ok(s.as_bytes().to_vec()),
            other => Err(format!("expected a blob, got {other:?}")),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A statement's parameters: `params![a, b]`, `[x]`, `[]`.
pub trait Params {
    fn values(&self) -> Vec<ValueRef<'_>>;
}

impl Params for &[&dyn ToValue] {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(|v| v.to_value()).collect()
    }
}

impl Params for [&dyn ToValue; 0] {
    fn values(&self) -> Vec<ValueRef<'_>> {
        Vec::new()
    }
}

impl Params for Vec<Value> {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(Value::as_ref).collect()
    }
}

impl Params for Vec<ValueRef<'_>> {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.clone()
    }
}

macro_rules! array_params {
    ($($n:literal)*) => {$(
        impl<T: ToValue> Params for [T; $n] {
            fn values(&self) -> Vec<ValueRef<'_>> {
                self.iter().map(|v| v.to_value()).collect()
            }
        }
    )*};
}

array_params!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);

/// `params![a, b, …]`: heterogeneous parameters for one statement.
#[macro_export]
macro_rules! sql_params {
    () => { [] as [&dyn $crate::db::sql::ToValue; 0] };
    ($($x:expr),+ $(,)?) => { [$(&$x as &dyn $crate::db::sql::ToValue),+] };
}
pub use crate::sql_params as params;

/// One row of a result.
pub struct Row<'r> {
    inner: RowInner<'r>,
}

enum RowInner<'r> {
    Lite(&'r rusqlite::Row<'r>),
    Pg(&'r [Value]),
}

impl Row<'_> {
    pub fn get<T: FromValue>(&self, index: usize) -> DbResult<T> {
        T::from_value(self.get_ref(index)?).map_err(|message| DbError::Convert { index, message })
    }

    /// A column as it is stored, whatever its type (generic copies).
    pub fn get_ref(&self, index: usize) -> DbResult<ValueRef<'_>> {
        Ok(match &self.inner {
            RowInner::Lite(r) => ValueRef::from(r.get_ref(index)?),
            RowInner::Pg(values) => values
                .get(index)
                .ok_or_else(|| DbError::Convert {
                    index,
                    message: "no such column".into(),
                })?
                .as_ref(),
        })
    }

    /// How many columns the row has.
    pub fn column_count(&self) -> usize {
        match &self.inner {
            RowInner::Lite(r) => r.as_ref().column_count(),
            RowInner::Pg(values) => values.len(),
        }
    }
}

/// A connection: read-only from the pool (`Db::run`), or the writer's
/// inside a transaction (as [`Tx`]).
pub struct Conn<'c> {
    kind: ConnKind<'c>,
}

enum ConnKind<'c> {
    Lite(&'c rusqlite::Connection),
    Pg(&'c pg::PgConn),
}

/// A connection inside the writer's transaction: the only handle that
/// may write. Reads work on it too (it derefs to [`Conn`]).
pub struct Tx<'c> {
    conn: Conn<'c>,
    instance: &'c str,
}

impl<'c> Deref for Tx<'c> {
    type Target = Conn<'c>;
    fn deref(&self) -> &Conn<'c> {
        &self.conn
    }
}

impl<'c> Tx<'c> {
    pub(crate) fn new(conn: Conn<'c>, instance: &'c str) -> Tx<'c> {
        Tx { conn, instance }
    }

    /// The server instance this write runs for (what it holds is its own,
    /// see `db::instances`).
    pub fn instance(&self) -> &str {
        self.instance
    }
}

impl<'c> Conn<'c> {
    pub fn sqlite(c: &'c rusqlite::Connection) -> Conn<'c> {
        Conn {
            kind: ConnKind::Lite(c),
        }
    }

    pub fn postgres(c: &'c pg::PgConn) -> Conn<'c> {
        Conn {
            kind: ConnKind::Pg(c),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.kind {
            ConnKind::Lite(_) => Backend::Sqlite,
            ConnKind::Pg(_) => Backend::Postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (PRAGMAs, backup).
    pub fn as_sqlite(&self) -> Option<&'c rusqlite::Connection> {
        match self.kind {
            ConnKind::Lite(c) => Some(c),
            ConnKind::Pg(_) => None,
        }
    }

    pub fn prepare_cached(&self, sql: &str) -> DbResult<Stmt<'c>> {
        Ok(Stmt {
            kind: match self.kind {
                ConnKind::Lite(c) => StmtKind::Lite(c.prepare_cached(sql)?),
                ConnKind::Pg(c) => StmtKind::Pg {
                    conn: c,
                    sql: sql.to_owned(),
                },
            },
        })
    }

    /// Same as [`prepare_cached`](Self::prepare_cached) (kept for call
    /// sites whose SQL is built at run time).
    pub fn prepare(&self, sql: &str) -> DbResult<Stmt<'c>> {
        self.prepare_cached(sql)
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> DbResult<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> DbResult<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> DbResult<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Several statements without parameters (DDL, savepoints).
    pub fn execute_batch(&self, sql: &str) -> DbResult<()> {
        match self.kind {
            ConnKind::Lite(c) => Ok(c.execute_batch(sql)?),
            ConnKind::Pg(c) => c.batch(sql),
        }
    }

    /// Runs `f` on every row of `sql` as the rows arrive, without holding
    /// the whole result in memory (whole-table reads: `db::copy`).
    pub fn for_each_row<P, F>(&self, sql: &str, params: P, mut f: F) -> DbResult<()>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> DbResult<()>,
    {
        let values = params.values();
        match self.kind {
            ConnKind::Lite(c) => {
                let mut stmt = c.prepare(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
                while let Some(r) = rows.next()? {
                    f(&Row {
                        inner: RowInner::Lite(r),
                    })?;
                }
                Ok(())
            }
            ConnKind::Pg(c) => c.for_each(sql, &values, |values| {
                f(&Row {
                    inner: RowInner::Pg(values),
                })
            }),
        }
    }
}

/// A prepared statement (cached per connection on both backends).
pub struct Stmt<'c> {
    kind: StmtKind<'c>,
}

enum StmtKind<'c> {
    Lite(rusqlite::CachedStatement<'c>),
    Pg { conn: &'c pg::PgConn, sql: String },
}

impl Stmt<'_> {
    pub fn execute<P: Params>(&mut self, params: P) -> DbResult<usize> {
        let values = params.values();
        match &mut self.kind {
            StmtKind::Lite(s) => Ok(s.execute(rusqlite::params_from_iter(values.iter()))?),
            StmtKind::Pg { conn, sql } => conn.execute(sql, &values),
        }
    }

    pub fn query_row<T, P, F>(&mut self, params: P, f: F) -> DbResult<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> DbResult<T>,
    {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(r) => f(&r),
            None => Err(DbError::NoRows),
        }
    }

    pub fn exists<P: Params>(&mut self, params: P) -> DbResult<bool> {
        Ok(self.query(params)?.next()?.is_some())
    }

    /// Every row mapped by `f`, read eagerly (collect into a `Result`).
    pub fn query_map<T, P, F>(
        &mut self,
        params: P,
        mut f: F,
    ) -> DbResult<std::vec::IntoIter<DbResult<T>>>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> DbResult<T>,
    {
        let mut out = Vec::new();
        let mut rows = self.query(params)?;
        while let Some(r) = rows.next()? {
            out.push(f(&r));
        }
        Ok(out.into_iter())
    }

    pub fn query<P: Params>(&mut self, params: P) -> DbResult<Rows<'_>> {
        let values = params.values();
        Ok(Rows {
            kind: match &mut self.kind {
                StmtKind::Lite(s) => {
                    RowsKind::Lite(s.query(rusqlite::params_from_iter(values.iter()))?)
                }
                StmtKind::Pg { conn, sql } => RowsKind::Pg {
                    rows: conn.query(sql, &values)?,
                    next: 0,
                },
            },
        })
    }
}

pub struct Rows<'s> {
    kind: RowsKind<'s>,
}

enum RowsKind<'s> {
    Lite(rusqlite::Rows<'s>),
    Pg { rows: Vec<Vec<Value>>, next: usize },
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> DbResult<Option<Row<'_>>> {
        match &mut self.kind {
            RowsKind::Lite(r) => Ok(r.next()?.map(|r| Row {
                inner: RowInner::Lite(r),
            })),
            RowsKind::Pg { rows, next } => {
                let i = *next;
                *next += 1;
                Ok(rows.get(i).map(|values| Row {
                    inner: RowInner::Pg(values),
                }))
            }
        }
    }
}

/// Rewrites `?N` placeholders as Postgres' `$N`, leaving string literals,
/// quoted identifiers and comments alone.
pub fn to_postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut positional = 0usize;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    out.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    // a line comment: copy to its end
                    out.push(c);
                    for c in chars.by_ref() {
                        out.push(c);
                        if c == '\n' {
                            break;
                        }
                    }
                }
                '?' => {
                    out.push('$');
                    let mut digits = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        digits.push(d);
                        chars.next();
                    }
                    if digits.is_empty() {
                        positional += 1;
                        out.push_str(&positional.to_string());
                    } else {
                        out.push_str(&digits);
                    }
                }
                c => out.push(c),
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollar_numbers_outside_literals() {
        assert_eq!(
            to_postgres_placeholders("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d = $12"
        );
        assert_eq!(
            to_postgres_placeholders("INSERT INTO t VALUES (?, ?) -- why?\n"),
            "INSERT INTO t VALUES ($1, $2) -- why?\n"
        );
    }

    #[test]
    fn sqlite_round_trips_every_value_kind() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let conn = Conn::sqlite(&c);
        let (i, r, t, b, n): (i64, f64, String, Vec<u8>, Option<i64>) = conn
            .query_row(
                "SELECT ?1, ?2, ?3, ?4, ?5",
                params![7_i64, 1.5_f64, "x", vec![1_u8, 2], None::<i64>],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!((i, r, t.as_str(), b, n), (7, 1.5, "x", vec![1, 2], None));
        let missing = conn
            .query_row("SELECT 1 WHERE 0", params![], |r| r.get::<i64>(0))
            .optional()
            .unwrap();
        assert_eq!(missing, None);
        let wrong = conn.query_row("SELECT 'a'", params![], |r| r.get::<i64>(0));
        assert!(matches!(wrong, Err(DbError::Convert { index: 0, .. })));
    }
}
