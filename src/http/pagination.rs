//! `?limit=&cursor=` listings answering `{"items": […], "next_cursor": …}`.

use serde::Deserialize;

use crate::error::AppError;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-100, default 20
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<u32, AppError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(AppError::validation(
                "limit",
                format!("must be 1-{MAX_LIMIT}"),
            )),
        }
    }

    /// Cursors are opaque to clients: "<a>.<b>" of our own making.
    pub fn cursor_parts(&self) -> Result<Option<(i64, String)>, AppError> {
        let Some(c) = self.cursor.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let bad = || AppError::validation("cursor", "not a cursor this server issued");
        let (a, b) = c.split_once('.').ok_or_else(bad)?;
        Ok(Some((a.parse().map_err(|_| bad())?, b.to_string())))
    }
}

pub fn cursor(a: i64, b: &str) -> String {
    format!("{a}.{b}")
}

/// Fetch `limit + 1` rows, pass them here: the extra row only says there is
/// a next page. Returns the page's rows and its `next_cursor`.
pub fn page<T>(
    mut rows: Vec<T>,
    limit: u32,
    to_cursor: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(&to_cursor)
    } else {
        None
    };
    (rows, next)
}
