//! The top-up amounts a checkout may ask for: a live setting (rows
//! `topup.0`, `topup.1`, … of `settings`), seeded once from
//! `quota.topup_amounts_fen`, changed by `admin set-topups` and the
//! console with the same rules ([`validate`]).

use crate::db::sql::Conn;

use crate::db::billing as repo;
use crate::error::AppResult;

/// At most this many amounts (the mini-program shows them as buttons).
pub const MAX_COUNT: usize = 10;
/// The largest amount, in fen (100000 CNY).
pub const MAX_FEN: i64 = 10_000_000;

/// Why a list of amounts is refused, or Ok: 1 to [`MAX_COUNT`] distinct
/// whole amounts of 1 to [`MAX_FEN`] fen.
pub fn validate(amounts: &[i64]) -> Result<(), String> {
    if amounts.is_empty() || amounts.len() > MAX_COUNT {
        return Err(format!("1 to {MAX_COUNT} amounts"));
    }
    if let Some(a) = amounts.iter().find(|a| !(1..=MAX_FEN).contains(*a)) {
        return Err(format!("{a} is not an amount of 1 to {MAX_FEN} fen"));
    }
    let mut seen = amounts.to_vec();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != amounts.len() {
        return Err("each amount once".into());
    }
    Ok(())
}

/// `600,1200,3000` (the CLI's form) → the amounts, validated.
pub fn parse(text: &str) -> Result<Vec<i64>, String> {
    let amounts = text
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<i64>()
                .map_err(|_| format!("{:?} is not a whole number of fen", s.trim()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    validate(&amounts)?;
    Ok(amounts)
}

/// The live amounts; `fallback` (the config's) before any are stored.
pub fn live(conn: &Conn, fallback: &[i64]) -> AppResult<Vec<i64>> {
    let stored = repo::topups(conn)?;
    Ok(if stored.is_empty() {
        fallback.to_vec()
    } else {
        stored
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_positive_distinct_and_bounded() {
        assert_eq!(parse("600, 1200,3000"), Ok(vec![600, 1200, 3000]));
        assert!(parse("").is_err());
        assert!(parse("600,abc").is_err());
        assert!(parse("600,0").is_err());
        assert!(parse("-5").is_err());
        assert!(parse("600,600").is_err());
        assert!(parse("1.5").is_err());
        assert!(parse("1,2,3,4,5,6,7,8,9,10,11").is_err());
        assert!(validate(&[MAX_FEN + 1]).is_err());
        assert!(validate(&[MAX_FEN]).is_ok());
    }
}
