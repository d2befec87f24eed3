//! Whole-database copies between deployments, on either backend (`mvp28
//! migrate-data`): the tables and columns are read from the catalog, not
//! listed here, so a new migration is copied without touching this file.
//! Rows travel as [`Value`]s (the five storage classes both backends
//! share) in multi-row INSERTs with `?N` placeholders, ids included;
//! afterwards the counters behind numbered columns are moved past the
//! copied ids. What is dialect (catalog queries, snapshots, counters) is
//! in [`Backend`](super::sql::Backend).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context};

use super::sql::{Conn, DbResult, Tx, Value};

/// Migrations' own bookkeeping: each side keeps its own.
const NOT_COPIED: &[&str] = &["refinery_schema_history"];

/// Parameters per INSERT statement at most (SQLite allows 32766, Postgres
/// 65535), and rows per statement at most.
const MAX_PARAMS: usize = 30_000;
const MAX_ROWS: usize = 500;

/// One application table as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    /// In the table's own column order.
    pub columns: Vec<String>,
    /// Columns numbered from a counter that must follow copied ids
    /// (Postgres identity/serial columns; empty on SQLite).
    pub numbered: Vec<String>,
}

/// Every application table of the schema `conn` sees, ordered so that a
/// table comes after every table it references (the order to insert in).
pub fn tables(conn: &Conn<'_>) -> anyhow::Result<Vec<Table>> {
    let backend = conn.backend();
    let mut by_name: BTreeMap<String, Table> = BTreeMap::new();
    conn.for_each_row(backend.catalog_columns_sql(), Vec::<Value>::new(), |r| {
        let (name, column, numbered): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let t = by_name.entry(name.clone()).or_insert_with(|| Table {
            name,
            columns: vec![],
            numbered: vec![],
        });
        if numbered != 0 {
            t.numbered.push(column.clone());
        }
        t.columns.push(column);
        Ok(())
    })
    .context("reading the schema's tables")?;
    for skip in NOT_COPIED {
        by_name.remove(*skip);
    }
    for t in by_name.values() {
        for name in std::iter::once(&t.name).chain(&t.columns) {
            if !is_plain_identifier(name) {
                bail!(
                    "table {} has a name this copy does not quote: {name:?}",
                    t.name
                );
            }
        }
    }
    let mut references: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    conn.for_each_row(
        backend.catalog_foreign_keys_sql(),
        Vec::<Value>::new(),
        |r| {
            let (table, referenced): (String, String) = (r.get(0)?, r.get(1)?);
            // a table that references itself is inserted in id order
            if table != referenced && by_name.contains_key(&referenced) {
                references.entry(table).or_default().insert(referenced);
            }
            Ok(())
        },
    )
    .context("reading the schema's foreign keys")?;
    // Kahn's algorithm, by name among the ready ones (a stable order).
    let mut ordered = Vec::with_capacity(by_name.len());
    while !by_name.is_empty() {
        let ready: Vec<String> = by_name
            .keys()
            .filter(|name| {
                references
                    .get(*name)
                    .is_none_or(|refs| refs.iter().all(|r| !by_name.contains_key(r)))
            })
            .cloned()
            .collect();
        if ready.is_empty() {
            let left: Vec<&str> = by_name.keys().map(String::as_str).collect();
            bail!(
                "the foreign keys between {} form a cycle: no insert order exists",
                left.join(", ")
            );
        }
        for name in ready {
            ordered.extend(by_name.remove(&name));
        }
    }
    Ok(ordered)
}

/// Both schemas hold the same tables with the same columns (in any order).
pub fn check_same_schema(source: &[Table], target: &[Table]) -> anyhow::Result<()> {
    let columns = |ts: &[Table]| -> BTreeMap<String, BTreeSet<String>> {
        ts.iter()
            .map(|t| (t.name.clone(), t.columns.iter().cloned().collect()))
            .collect()
    };
    let (s, t) = (columns(source), columns(target));
    for (name, cols) in &s {
        match t.get(name) {
            None => bail!("the target has no table {name}"),
            Some(tc) if tc != cols => {
                let only_source: Vec<&String> = cols.difference(tc).collect();
                let only_target: Vec<&String> = tc.difference(cols).collect();
                bail!(
                    "table {name} differs: columns only in the source {only_source:?}, \
                     only in the target {only_target:?}"
                );
            }
            Some(_) => {}
        }
    }
    if let Some(name) = t.keys().find(|n| !s.contains_key(*n)) {
        bail!("the source has no table {name}");
    }
    Ok(())
}

/// Rows in each table, in the order given.
pub fn row_counts(conn: &Conn<'_>, tables: &[Table]) -> DbResult<Vec<(String, u64)>> {
    tables
        .iter()
        .map(|t| {
            let n: i64 = conn.query_row(
                &format!("SELECT count(*) FROM \"{}\"", t.name),
                Vec::<Value>::new(),
                |r| r.get(0),
            )?;
            Ok((t.name.clone(), n.max(0) as u64))
        })
        .collect()
}

/// Copies every row of `tables` (in that order, as the target's catalog
/// describes them) from `source` into `target`, columns by name, ids as
/// they are; then moves the target's counters past the copied ids. `source` should be in a snapshot
/// ([`begin_snapshot`]) so the tables agree with each other. Returns the
/// rows copied per table.
pub fn copy_tables(
    source: &Conn<'_>,
    target: &Tx<'_>,
    tables: &[Table],
) -> anyhow::Result<Vec<(String, u64)>> {
    let mut copied = Vec::with_capacity(tables.len());
    for t in tables {
        let n =
            copy_table(source, target, t).with_context(|| format!("copying table {}", t.name))?;
        copied.push((t.name.clone(), n));
    }
    let backend = target.backend();
    for t in tables {
        for column in &t.numbered {
            if let Some(sql) = backend.reset_counter_sql(&t.name, column) {
                target
                    .execute_batch(&sql)
                    .with_context(|| format!("moving the counter of {}.{column}", t.name))?;
            }
        }
    }
    Ok(copied)
}

fn copy_table(source: &Conn<'_>, target: &Tx<'_>, t: &Table) -> DbResult<u64> {
    let width = t.columns.len();
    let per_insert = (MAX_PARAMS / width.max(1)).clamp(1, MAX_ROWS);
    let list = t
        .columns
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let select = format!("SELECT {list} FROM \"{}\"", t.name);
    let insert = |rows: usize| {
        let tuples: Vec<String> = (0..rows)
            .map(|r| {
                let params: Vec<String> =
                    (1..=width).map(|c| format!("?{}", r * width + c)).collect();
                format!("({})", params.join(", "))
            })
            .collect();
        format!(
            "INSERT INTO \"{}\" ({list}) VALUES {}",
            t.name,
            tuples.join(", ")
        )
    };
    let full = insert(per_insert);
    let mut pending: Vec<Value> = Vec::with_capacity(per_insert * width);
    let mut total = 0u64;
    source.for_each_row(&select, Vec::<Value>::new(), |row| {
        for i in 0..width {
            pending.push(row.get_ref(i)?.to_owned());
        }
        if pending.len() == per_insert * width {
            target.execute(&full, std::mem::take(&mut pending))?;
            total += per_insert as u64;
        }
        Ok(())
    })?;
    if !pending.is_empty() {
        let rows = pending.len() / width;
        target.execute(&insert(rows), pending)?;
        total += rows as u64;
    }
    Ok(total)
}

/// Opens a read-only transaction on `conn` that sees one state of every
/// table; end it with [`end_snapshot`].
pub fn begin_snapshot(conn: &Conn<'_>) -> DbResult<()> {
    conn.execute_batch(conn.backend().begin_snapshot_sql())
}

pub fn end_snapshot(conn: &Conn<'_>) -> DbResult<()> {
    conn.execute_batch("ROLLBACK")
}

fn is_plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lite(sql: &str) -> rusqlite::Connection {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(sql).unwrap();
        c
    }

    #[test]
    fn tables_come_after_the_tables_they_reference() {
        let c = lite(
            "CREATE TABLE c (id INTEGER PRIMARY KEY, b_id INTEGER REFERENCES b(id), a_id INTEGER REFERENCES a(id));
             CREATE TABLE b (id INTEGER PRIMARY KEY AUTOINCREMENT, a_id INTEGER REFERENCES a(id), up INTEGER REFERENCES b(id));
             CREATE TABLE a (id TEXT PRIMARY KEY, n REAL);
             CREATE TABLE refinery_schema_history (version INTEGER);",
        );
        let ts = tables(&Conn::sqlite(&c)).unwrap();
        let names: Vec<&str> = ts.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["a", "b", "c"],
            "sqlite_sequence and refinery left out"
        );
        assert_eq!(ts[1].columns, ["id", "a_id", "up"]);
        assert!(ts[1].numbered.is_empty(), "SQLite counters follow inserts");
    }

    #[test]
    fn a_cycle_is_refused() {
        let c = lite(
            "CREATE TABLE a (id INTEGER PRIMARY KEY, b_id INTEGER REFERENCES b(id));
             CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a(id));",
        );
        let e = tables(&Conn::sqlite(&c)).unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn every_value_kind_and_id_is_copied_in_batches() {
        let schema = "CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT, t TEXT, r REAL, b BLOB, n INTEGER);";
        let src = lite(schema);
        for i in 1..=1203_i64 {
            src.execute(
                "INSERT INTO a (id, t, r, b, n) VALUES (?1, ?2, ?3, ?4, NULL)",
                rusqlite::params![i * 3, format!("row {i}"), i as f64 / 4.0, vec![i as u8, 0]],
            )
            .unwrap();
        }
        let mut dst = lite(schema);
        let ts = tables(&Conn::sqlite(&src)).unwrap();
        let tx = dst.transaction().unwrap();
        let copied = copy_tables(
            &Conn::sqlite(&src),
            &Tx::new(Conn::sqlite(&tx), "test"),
            &ts,
        )
        .unwrap();
        tx.commit().unwrap();
        assert_eq!(copied, [("a".to_string(), 1203)]);
        type Dump = Vec<(i64, String, f64, Vec<u8>, Option<i64>)>;
        let dump = |c: &rusqlite::Connection| -> Dump {
            c.prepare("SELECT id, t, r, b, n FROM a ORDER BY id")
                .unwrap()
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(dump(&src), dump(&dst));
        dst.execute("INSERT INTO a (t) VALUES ('next')", [])
            .unwrap();
        let next: i64 = dst
            .query_row("SELECT max(id) FROM a", [], |r| r.get(0))
            .unwrap();
        assert_eq!(next, 1203 * 3 + 1, "AUTOINCREMENT follows the copied ids");
        assert_eq!(
            row_counts(&Conn::sqlite(&dst), &ts).unwrap(),
            [("a".to_string(), 1204)]
        );
    }

    #[test]
    fn schemas_must_match_by_table_and_column() {
        let a = lite("CREATE TABLE t (x INTEGER, y TEXT);");
        let b = lite("CREATE TABLE t (y TEXT, x INTEGER);");
        let c = lite("CREATE TABLE t (x INTEGER);");
        let (ta, tb, tc) = (
            tables(&Conn::sqlite(&a)).unwrap(),
            tables(&Conn::sqlite(&b)).unwrap(),
            tables(&Conn::sqlite(&c)).unwrap(),
        );
        check_same_schema(&ta, &tb).unwrap();
        let e = check_same_schema(&ta, &tc).unwrap_err().to_string();
        assert!(e.contains("only in the source [\"y\"]"), "{e}");
    }
}
