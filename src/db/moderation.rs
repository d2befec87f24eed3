//! moderation_blocks: every block by content security, counted by day.

use crate::db::sql::{params, Conn, Tx};

use crate::error::AppResult;
use crate::moderation::Direction;

/// Records one block on the local `day`.
pub fn record_block(
    tx: &Tx<'_>,
    day: &str,
    direction: Direction,
    label: i64,
    now: i64,
) -> AppResult<()> {
    tx.prepare_cached(
        "INSERT INTO moderation_blocks (day, direction, label, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![day, direction, label, now])?;
    Ok(())
}

/// Blocks on one day in one direction with one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockCount {
    pub day: String,
    pub direction: Direction,
    pub label: i64,
    pub count: i64,
}

/// Blocks counted by day, direction and label from `first_day` (local,
/// `YYYY-MM-DD`) on, oldest day first.
pub fn blocks_since(conn: &Conn, first_day: &str) -> AppResult<Vec<BlockCount>> {
    let mut stmt = conn.prepare_cached(
        "SELECT day, direction, label, count(*) FROM moderation_blocks
         WHERE day >= ?1 GROUP BY day, direction, label ORDER BY day, direction, label",
    )?;
    let rows = stmt.query_map([first_day], |r| {
        Ok(BlockCount {
            day: r.get(0)?,
            direction: r.get(1)?,
            label: r.get(2)?,
            count: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
