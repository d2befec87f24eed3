//! The Postgres side of [`crate::db::sql`]: connections (TLS through
//! rustls), the pool manager, statement caching, and the conversion of
//! values both ways. Nothing here knows a table.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{FromSql, IsNull, ToSql, Type};
use postgres::Client;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::sql::{to_postgres_placeholders, DbError, DbResult, Value, ValueRef};

/// What it takes to open a connection: the parsed URL plus our settings.
#[derive(Clone)]
pub struct PgConnector {
    config: postgres::Config,
    tls: MakeRustlsConnect,
    statement_timeout: Duration,
}

impl PgConnector {
    /// `url` is `postgres://user:pass@host:port/db?sslmode=…`; `ca_file`
    /// adds a CA to Mozilla's roots (Supabase's direct connections use
    /// their own CA).
    pub fn new(
        url: &str,
        ca_file: Option<&str>,
        statement_timeout: Duration,
        connect_timeout: Duration,
    ) -> anyhow::Result<PgConnector> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("database.url is not a valid postgres URL: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(connect_timeout);
        }
        config.application_name("mvp28");
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).with_context(|| format!("reading database.ca_file {path}"))?;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.with_context(|| format!("parsing database.ca_file {path}"))?;
                roots
                    .add(cert)
                    .with_context(|| format!("adding database.ca_file {path}"))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS settings for the database")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(PgConnector {
            config,
            tls: MakeRustlsConnect::new(tls),
            statement_timeout,
        })
    }

    /// Where it connects, without the password (for messages and logs).
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(h) => h.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "postgres://{}@{}:{port}/{}",
            self.config.get_user().unwrap_or("?"),
            hosts.join(","),
            self.config.get_dbname().unwrap_or("")
        )
    }

    pub fn connect(&self) -> Result<PgConn, postgres::Error> {
        let mut client = self.config.connect(self.tls.clone())?;
        client.batch_execute(&format!(
            "SET statement_timeout = {}; SET TIME ZONE 'UTC'",
            self.statement_timeout.as_millis()
        ))?;
        Ok(PgConn::new(client))
    }

    /// A client for refinery (migrations run outside our wrapper).
    pub fn connect_raw(&self) -> Result<Client, postgres::Error> {
        self.config.connect(self.tls.clone())
    }
}

/// One Postgres connection with its statement cache.
pub struct PgConn {
    /// Always Some until dropped (see `Drop`).
    client: RefCell<Option<Client>>,
    statements: RefCell<HashMap<String, postgres::Statement>>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Closing blocks on the client's own runtime, which cannot happen
        // on an async worker thread (a pool dropped when the server stops).
        if let Some(client) = self.client.get_mut().take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                std::thread::spawn(move || drop(client));
            }
        }
    }
}

impl PgConn {
    fn new(client: Client) -> PgConn {
        PgConn {
            client: RefCell::new(Some(client)),
            statements: RefCell::new(HashMap::new()),
        }
    }

    fn client(&self) -> std::cell::RefMut<'_, Client> {
        std::cell::RefMut::map(self.client.borrow_mut(), |c| {
            c.as_mut().expect("a live connection")
        })
    }

    pub fn is_closed(&self) -> bool {
        self.client().is_closed()
    }

    fn statement(&self, sql: &str) -> DbResult<postgres::Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let translated = to_postgres_placeholders(sql);
        let stmt = self.client().prepare(&translated).inspect_err(|e| {
            // a statement Postgres cannot parse or type is a bug: say which
            let why = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned());
            tracing::error!(error = %why, sql = %translated, "Postgres refused a statement");
        })?;
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    pub fn execute(&self, sql: &str, values: &[ValueRef<'_>]) -> DbResult<usize> {
        let stmt = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let n = self.client().execute(&stmt, &params)?;
        Ok(n as usize)
    }

    pub fn query(&self, sql: &str, values: &[ValueRef<'_>]) -> DbResult<Vec<Vec<Value>>> {
        let stmt = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let rows = self.client().query(&stmt, &params)?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        row.try_get::<_, AnyValue>(i)
                            .map(|v| v.0)
                            .map_err(|e| DbError::Convert {
                                index: i,
                                message: e.to_string(),
                            })
                    })
                    .collect()
            })
            .collect()
    }

    /// Runs `f` on each row as it arrives from the server (the result is
    /// never held whole in memory).
    pub fn for_each(
        &self,
        sql: &str,
        values: &[ValueRef<'_>],
        mut f: impl FnMut(&[Value]) -> DbResult<()>,
    ) -> DbResult<()> {
        use postgres::fallible_iterator::FallibleIterator;
        let stmt = self.statement(sql)?;
        let mut client = self.client();
        let mut rows = client.query_raw(&stmt, values.iter().map(|v| v as &dyn ToSql))?;
        let mut decoded = Vec::new();
        while let Some(row) = rows.next()? {
            decoded.clear();
            for i in 0..row.len() {
                decoded.push(row.try_get::<_, AnyValue>(i).map(|v| v.0).map_err(|e| {
                    DbError::Convert {
                        index: i,
                        message: e.to_string(),
                    }
                })?);
            }
            f(&decoded)?;
        }
        Ok(())
    }

    pub fn batch(&self, sql: &str) -> DbResult<()> {
        Ok(self.client().batch_execute(sql)?)
    }
}

/// The pool's view of Postgres connections.
pub struct PgManager {
    pub connector: PgConnector,
}

impl r2d2::ManageConnection for PgManager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        self.connector.connect()
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        conn.client().simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.is_closed()
    }
}

/// The server is gone, restarting, refusing connections or timed out: the
/// request failed before anything was committed and may be retried.
pub fn is_unavailable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::QUERY_CANCELED,
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                ]
                .contains(code)
        }
        // No server error: the socket failed (io, TLS, timeout).
        None => e.source().is_some(),
    }
}

fn wrong(v: &ValueRef<'_>, ty: &Type) -> Box<dyn StdError + Sync + Send> {
    format!("cannot send {v:?} as a Postgres {ty}").into()
}

/// Parameters adapt to the type the server inferred for them, so the same
/// `?N` SQL serves both backends.
impl ToSql for ValueRef<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match *self {
            ValueRef::Null => Ok(IsNull::Yes),
            ValueRef::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::FLOAT4 => (i as f32).to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::UNKNOWN => i.to_string().to_sql(ty, out),
                Type::NUMERIC => numeric_from_i64(i, out),
                _ => Err(wrong(self, ty)),
            },
            ValueRef::Real(r) => match *ty {
                Type::FLOAT8 => r.to_sql(ty, out),
                Type::FLOAT4 => (r as f32).to_sql(ty, out),
                _ => Err(wrong(self, ty)),
            },
            ValueRef::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.to_sql(ty, out)
                }
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => Err(wrong(self, ty)),
            },
            ValueRef::Blob(b) => match *ty {
                Type::BYTEA => b.to_sql(ty, out),
                _ => Err(wrong(self, ty)),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A NUMERIC parameter from an integer (binary form: digits in base 10000).
fn numeric_from_i64(i: i64, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
    use bytes::BufMut;
    let mut digits = Vec::new();
    let mut n = i.unsigned_abs();
    while n > 0 {
        digits.push((n % 10_000) as i16);
        n /= 10_000;
    }
    digits.reverse();
    out.put_i16(digits.len() as i16);
    out.put_i16(digits.len().saturating_sub(1) as i16);
    out.put_u16(if i < 0 { 0x4000 } else { 0 });
    out.put_u16(0);
    for d in digits {
        out.put_i16(d);
    }
    Ok(IsNull::No)
}

/// Any column, as one of the five value kinds.
struct AnyValue(Value);

impl<'a> FromSql<'a> for AnyValue {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(AnyValue(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)? as i64),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)? as i64),
            Type::OID => Value::Int(u32::from_sql(ty, raw)? as i64),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)? as i64),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)? as f64),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => Value::Blob(raw.to_vec()),
            _ => Value::Text(String::from_sql(&Type::TEXT, raw)?),
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(AnyValue(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// NUMERIC (what Postgres' SUM of BIGINT gives): an integer when it has no
/// fractional digits and fits, a real otherwise.
fn numeric(raw: &[u8]) -> Result<Value, Box<dyn StdError + Sync + Send>> {
    let word = |i: usize| -> Result<i16, Box<dyn StdError + Sync + Send>> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i32;
    let sign = word(2)? as u16;
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let mut int: i128 = 0;
    let mut real = 0f64;
    let mut fractional = false;
    for k in 0..ndigits {
        let d = word(4 + k)? as i128;
        let power = weight - k as i32;
        real += d as f64 * 10_000f64.powi(power);
        if power >= 0 {
            int = int.saturating_add(d.saturating_mul(10_000i128.saturating_pow(power as u32)));
        } else if d != 0 {
            fractional = true;
        }
    }
    let negative = sign == 0x4000;
    match (fractional, i64::try_from(int)) {
        (false, Ok(i)) => Ok(Value::Int(if negative { -i } else { i })),
        _ => Ok(Value::Real(if negative { -real } else { real })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_decode_to_integers_or_reals() {
        let mut buf = BytesMut::new();
        numeric_from_i64(-123_456_789, &mut buf).unwrap();
        assert_eq!(numeric(&buf).unwrap(), Value::Int(-123_456_789));
        buf.clear();
        numeric_from_i64(0, &mut buf).unwrap();
        assert_eq!(numeric(&buf).unwrap(), Value::Int(0));
        // 1.5 = digits [1, 5000], weight 0
        let raw = [0, 2, 0, 0, 0, 0, 0, 1, 0, 1, 0x13, 0x88];
        assert_eq!(numeric(&raw).unwrap(), Value::Real(1.5));
    }
}
