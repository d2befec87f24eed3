//! The console's pages under `/admin/`: server-rendered HTML over the same
//! `service` as the admin API, with one small stylesheet and one small
//! script embedded in the binary (no CDN, no build step). Reads render on
//! the server; every action is a form or button that the script sends to
//! `/api/admin/*` as JSON with the session's CSRF token.

use std::fmt::Write as _;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;

use super::auth::{self, Admin};
use super::service;
use super::views::*;
use crate::error::AppError;
use crate::http::AppState;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route("/admin", get(|| async { Redirect::to("/admin/") }))
        .route("/admin/", get(overview))
        .route("/admin/login", get(login))
        .route("/admin/users", get(users))
        .route("/admin/users/{id}", get(user))
        .route("/admin/payments", get(payments))
        .route("/admin/usage", get(usage))
        .route("/admin/settings", get(settings))
        .route("/admin/providers", get(providers))
        .route("/admin/system", get(system))
        .route("/admin/admins", get(admins))
        .route(
            "/admin/assets/console.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/admin/assets/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Fen as yuan text: 1234 -> "12.34".
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", fen.abs() / 100, fen.abs() % 100)
}

/// Percent-encodes a query value.
fn q(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The admin of a page request, or the redirect to the login page.
/// The admin a page is rendered for; without a valid session, a redirect
/// to the login page (an extractor, so every page checks it the same way).
struct PageAdmin(Admin);

impl FromRequestParts<AppState> for PageAdmin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        auth::authenticate(state, &parts.headers, &Method::GET)
            .await
            .map(PageAdmin)
            .map_err(|_| Redirect::to("/admin/login").into_response())
    }
}

fn html(body: String) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    res
}

const NAV: [(&str, &str); 8] = [
    ("/admin/", "Overview"),
    ("/admin/users", "Users"),
    ("/admin/payments", "Payments"),
    ("/admin/usage", "Usage"),
    ("/admin/settings", "Settings"),
    ("/admin/providers", "Providers"),
    ("/admin/system", "System"),
    ("/admin/admins", "Admins"),
];

fn layout(admin: Option<&Admin>, title: &str, active: &str, content: &str) -> Response {
    let mut s = String::new();
    let csrf = admin.and_then(|a| a.csrf()).unwrap_or("");
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"csrf-token\" content=\"{}\">\
         <title>{} · mvp28 console</title>\
         <link rel=\"stylesheet\" href=\"/admin/assets/console.css\">\
         <script src=\"/admin/assets/console.js\" defer></script></head><body>",
        esc(csrf),
        esc(title)
    );
    if let Some(a) = admin {
        s.push_str("<header><nav><strong>mvp28</strong>");
        for (href, name) in NAV.iter() {
            let cls = if *name == active {
                " class=\"active\""
            } else {
                ""
            };
            let _ = write!(s, "<a href=\"{href}\"{cls}>{name}</a>");
        }
        let _ = write!(
            s,
            "<span class=\"who\">{} <button data-api=\"/api/admin/logout\" data-method=\"POST\" \
             data-then=\"goto:/admin/login\" id=\"logout\">Log out</button></span></nav></header>",
            esc(&a.name)
        );
    }
    let _ = write!(
        s,
        "<main><h1>{}</h1><div id=\"flash\" role=\"status\"></div>{content}</main></body></html>",
        esc(title)
    );
    html(s)
}

fn error_page(admin: &Admin, title: &str, e: AppError) -> Response {
    layout(
        Some(admin),
        title,
        "",
        &format!("<p class=\"error\">{}</p>", esc(&e.message)),
    )
}

async fn login() -> Response {
    layout(
        None,
        "Log in",
        "",
        "<form id=\"login\" class=\"card\" data-api=\"/api/admin/login\" data-method=\"POST\" data-then=\"goto:/admin/\">\
         <label>Name <input name=\"name\" autocomplete=\"username\" required></label>\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Log in</button></form>\
         <p class=\"muted\">No account yet? On the server: <code>mvp28 admin create-admin NAME</code></p>",
    )
}

/// A grouped bar chart as inline SVG: one group per day, one bar per series.
pub fn bar_chart(title: &str, labels: &[String], series: &[(&str, &str, Vec<i64>)]) -> String {
    let (w, h, pad) = (640.0_f64, 180.0_f64, 24.0_f64);
    let max = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = labels.len().max(1) as f64;
    let group = (w - pad) / n;
    let bar = (group * 0.8 / series.len().max(1) as f64).max(1.0);
    let mut s = format!(
        "<figure class=\"chart\"><figcaption>{}</figcaption>\
         <svg viewBox=\"0 0 {w} {h}\" width=\"100%\" role=\"img\" aria-label=\"{}\">\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{w}\" y2=\"{}\" stroke=\"#999\"/>\
         <text x=\"0\" y=\"12\" font-size=\"10\" fill=\"#555\">{}</text>",
        esc(title),
        esc(title),
        h - pad,
        h - pad,
        max as i64
    );
    for (si, (_, color, values)) in series.iter().enumerate() {
        for (i, v) in values.iter().enumerate() {
            let bh = (*v as f64 / max) * (h - pad - 16.0);
            let x = pad + i as f64 * group + si as f64 * bar;
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{bh:.1}\" fill=\"{color}\"><title>{}: {v}</title></rect>",
                h - pad - bh,
                esc(&labels[i])
            );
        }
    }
    if let (Some(first), Some(last)) = (labels.first(), labels.last()) {
        let _ = write!(
            s,
            "<text x=\"{pad}\" y=\"{}\" font-size=\"10\" fill=\"#555\">{}</text>\
             <text x=\"{w}\" y=\"{}\" font-size=\"10\" fill=\"#555\" text-anchor=\"end\">{}</text>",
            h - 6.0,
            esc(first),
            h - 6.0,
            esc(last)
        );
    }
    s.push_str("</svg><div class=\"legend\">");
    for (name, color, _) in series {
        let _ = write!(
            s,
            "<span><svg width=\"10\" height=\"10\"><rect width=\"10\" height=\"10\" fill=\"{color}\"/></svg> {}</span>",
            esc(name)
        );
    }
    s.push_str("</div></figure>");
    s
}

fn stat(label: &str, value: &str) -> String {
    format!(
        "<div class=\"stat\"><span>{}</span><b>{}</b></div>",
        esc(label),
        esc(value)
    )
}

fn totals_block(t: &Totals) -> String {
    [
        stat("Active users", &t.active_users.to_string()),
        stat("Messages free", &t.free_messages.to_string()),
        stat("Messages paid", &t.paid_messages.to_string()),
        stat("Top-ups CNY", &yuan(t.topup_fen)),
        stat("Charges CNY", &yuan(t.charges_fen)),
        stat("Model spend", &t.spend),
        stat("Margin CNY", &yuan(t.margin_fen)),
        stat(
            "Calls (failed)",
            &format!("{} ({})", t.calls, t.failed_calls),
        ),
        stat("402s (quota refused)", &t.quota_refusals.to_string()),
    ]
    .concat()
}

async fn overview(
    State(state): State<AppState>,
    PageAdmin(admin): PageAdmin,
    Query(dq): Query<DaysQuery>,
) -> Response {
    let o = match service::overview(&state, dq.days).await {
        Ok(o) => o,
        Err(e) => return error_page(&admin, "Overview", e),
    };
    let labels: Vec<String> = o.days.iter().map(|d| d.day.clone()).collect();
    let mut c = String::new();
    let _ = write!(
        c,
        "<h2>Today ({})</h2><div class=\"stats\" id=\"today\">{}</div>",
        esc(&o.today),
        totals_block(&o.today_totals),
    );
    let _ = write!(
        c,
        "<h2>Last {} days</h2><div class=\"stats\" id=\"period\">{}{}</div>",
        o.period_days,
        totals_block(&o.period_totals),
        stat(
            "Users (live / all)",
            &format!("{} / {}", o.users_live, o.users_total)
        )
    );
    c.push_str(&bar_chart(
        "Top-ups and charges (fen) vs model spend (fen)",
        &labels,
        &[
            (
                "top-ups",
                "#2a9d8f",
                o.days.iter().map(|d| d.topup_fen).collect(),
            ),
            (
                "charges",
                "#457b9d",
                o.days.iter().map(|d| d.charges_fen).collect(),
            ),
            (
                "model spend",
                "#e76f51",
                o.days.iter().map(|d| d.spend_nanos / 10_000_000).collect(),
            ),
        ],
    ));
    c.push_str(&bar_chart(
        "Messages per day",
        &labels,
        &[
            (
                "free",
                "#8ab17d",
                o.days.iter().map(|d| d.free_messages).collect(),
            ),
            (
                "paid",
                "#264653",
                o.days.iter().map(|d| d.paid_messages).collect(),
            ),
        ],
    ));
    c.push_str(&bar_chart(
        "402s per day (no free message left, balance below the price)",
        &labels,
        &[(
            "402s",
            "#b5838d",
            o.days.iter().map(|d| d.quota_refusals).collect(),
        )],
    ));
    c.push_str(&bar_chart(
        "Active users per day",
        &labels,
        &[(
            "active users",
            "#6d597a",
            o.days.iter().map(|d| d.active_users).collect(),
        )],
    ));
    layout(Some(&admin), "Overview", "Overview", &c)
}

fn user_table(items: &[UserSummary]) -> String {
    let mut s = String::from(
        "<div class=\"scroll\"><table><tr><th>User</th><th>openid (hashed)</th><th>Created</th><th>Last login</th><th>Messages</th><th>State</th></tr>",
    );
    for u in items {
        let _ = write!(
            s,
            "<tr><td><a href=\"/admin/users/{}\">{}</a></td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            q(&u.id),
            esc(&u.id),
            esc(u.openid_hash.as_deref().unwrap_or("–")),
            esc(&u.created_at),
            esc(&u.last_login_at),
            u.messages,
            if u.deleted_at.is_some() { "erased" } else { "live" }
        );
    }
    s.push_str("</table></div>");
    s
}

#[derive(serde::Deserialize)]
struct SearchQuery {
    q: Option<String>,
}

async fn users(
    State(state): State<AppState>,
    PageAdmin(admin): PageAdmin,
    Query(sq): Query<SearchQuery>,
) -> Response {
    let query = sq.q.unwrap_or_default();
    let list = match service::find_users(&state, Some(query.clone()), Some(50)).await {
        Ok(l) => l,
        Err(e) => return error_page(&admin, "Users", e),
    };
    let mut c = format!(
        "<form method=\"get\" action=\"/admin/users\" class=\"inline\" id=\"find\">\
         <input name=\"q\" value=\"{}\" placeholder=\"user id (usr_…) or its beginning\">\
         <button type=\"submit\">Find</button></form>",
        esc(&query)
    );
    if list.items.len() == 1 && !query.is_empty() {
        let _ = write!(
            c,
            "<p>One match: <a id=\"only-match\" href=\"/admin/users/{}\">{}</a></p>",
            q(&list.items[0].id),
            esc(&list.items[0].id)
        );
    }
    c.push_str(&user_table(&list.items));
    layout(Some(&admin), "Users", "Users", &c)
}

fn orders_table(items: &[OrderView], settle: bool) -> String {
    let mut s = String::from(
        "<div class=\"scroll\"><table><tr><th>Order</th><th>User</th><th>CNY</th><th>Status</th><th>Created</th><th>Paid</th><th></th></tr>",
    );
    for o in items {
        let action = if settle && o.status == "pending" {
            format!(
                "<button data-api=\"/api/admin/payments/{}/settle\" data-method=\"POST\" data-then=\"reload\" class=\"settle\">Query WeChat Pay &amp; settle</button>",
                q(&o.out_trade_no)
            )
        } else {
            String::new()
        };
        let _ = write!(
            s,
            "<tr data-order=\"{}\"><td><code>{}</code></td><td><a href=\"/admin/users/{}\">{}</a></td><td>{}</td><td class=\"status-{}\">{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            esc(&o.out_trade_no),
            esc(&o.out_trade_no),
            q(&o.user_id),
            esc(&o.user_id),
            yuan(o.amount_fen),
            esc(&o.status),
            esc(&o.status),
            esc(&o.created_at),
            esc(o.paid_at.as_deref().unwrap_or("–"))
        );
    }
    s.push_str("</table></div>");
    s
}

async fn user(
    State(state): State<AppState>,
    PageAdmin(admin): PageAdmin,
    Path(id): Path<String>,
) -> Response {
    let d = match service::user_detail(&state, id.clone()).await {
        Ok(d) => d,
        Err(e) => return error_page(&admin, "User", e),
    };
    let u = &d.user;
    let mut c = String::new();
    let _ = write!(
        c,
        "<div class=\"stats\" id=\"quota\">{}{}{}{}{}</div>",
        stat("Balance CNY", &yuan(d.quota.balance_fen)),
        stat("Held CNY", &yuan(d.quota.held_fen)),
        stat(
            "Free today",
            &format!("{}/{}", d.quota.free_used_today, d.quota.free_limit)
        ),
        stat(
            "Messages / media / locations",
            &format!("{} / {} / {}", u.messages, u.media, u.locations)
        ),
        stat(
            "openid (hashed)",
            u.openid_hash.as_deref().unwrap_or("erased")
        ),
    );
    let _ = write!(
        c,
        "<p class=\"muted\">Created {} · last login {}{}</p>",
        esc(&u.created_at),
        esc(&u.last_login_at),
        u.deleted_at
            .as_deref()
            .map(|t| format!(" · erased {}", esc(t)))
            .unwrap_or_default()
    );
    let _ = write!(
        c,
        "<form id=\"grant\" class=\"card\" data-api=\"/api/admin/users/{}/grant\" data-method=\"POST\" data-then=\"reload\">\
         <h2>Grant or debit</h2>\
         <label>Amount CNY (negative debits) <input name=\"fen\" data-type=\"yuan\" inputmode=\"decimal\" required></label>\
         <label>Reason <input name=\"reason\" required maxlength=\"200\"></label>\
         <button type=\"submit\">Apply</button></form>",
        q(&u.id)
    );
    c.push_str("<h2>Holds in flight</h2>");
    if d.holds.is_empty() {
        c.push_str("<p class=\"muted\">none</p>");
    } else {
        c.push_str("<table><tr><th>Kind</th><th>CNY</th><th>Since</th></tr>");
        for h in &d.holds {
            let _ = write!(
                c,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&h.kind),
                yuan(h.amount_fen),
                esc(&h.created_at)
            );
        }
        c.push_str("</table>");
    }
    c.push_str("<h2>Ledger</h2><div class=\"scroll\"><table id=\"ledger\"><tr><th>#</th><th>When</th><th>Kind</th><th>CNY</th><th>Balance</th><th>Reference</th></tr>");
    for r in &d.ledger {
        let _ = write!(
            c,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.id,
            esc(&r.created_at),
            esc(&r.kind),
            yuan(r.delta_fen),
            yuan(r.balance_after),
            esc(&r.reference)
        );
    }
    c.push_str("</table></div><h2>Orders</h2>");
    c.push_str(&orders_table(&d.orders, true));
    if u.deleted_at.is_none() {
        let _ = write!(
            c,
            "<h2>Erase</h2><p>Deletes messages, sessions, media and locations; payments and ledger rows stay, anonymised.</p>\
             <button class=\"danger\" id=\"erase\" data-api=\"/api/admin/users/{}\" data-method=\"DELETE\" \
             data-confirm=\"Erase this account's personal data? This cannot be undone.\" data-then=\"reload\">Erase account</button>",
            q(&u.id)
        );
    }
    layout(Some(&admin), &format!("User {}", u.id), "Users", &c)
}

async fn payments(
    State(state): State<AppState>,
    PageAdmin(admin): PageAdmin,
    Query(oq): Query<OrdersQuery>,
) -> Response {
    let status = oq.status.clone().filter(|s| !s.is_empty());
    let list = match service::orders(
        &state,
        OrdersQuery {
            status: status.clone(),
            user_id: None,
            limit: Some(200),
        },
    )
    .await
    {
        Ok(l) => l,
        Err(e) => return error_page(&admin, "Payments", e),
    };
    let mut c = String::from("<p class=\"tabs\">");
    let _ = write!(
        c,
        "<a href=\"/admin/payments\"{}>all</a>",
        if status.is_none() {
            " class=\"active\""
        } else {
            ""
        }
    );
    for s in ["pending", "paid", "closed", "failed"] {
        let _ = write!(
            c,
            "<a href=\"/admin/payments?status={s}\"{}>{s} ({})</a>",
            if status.as_deref() == Some(s) {
                " class=\"active\""
            } else {
                ""
            },
            list.counts.get(s).copied().unwrap_or(0)
        );
    }
    c.push_str("</p>");
    if state.payments().is_none() {
        c.push_str("<p class=\"muted\">WeChat Pay is not configured on this server (wechat_pay.mch_id is empty).</p>");
    } else {
        c.push_str(
            "<form id=\"reconcile\" class=\"inline\" data-api=\"/api/admin/payments/reconcile\" data-method=\"POST\" data-show=\"lines\">\
             <label>Reconcile pending orders older than <input name=\"older_than_minutes\" data-type=\"int\" value=\"10\" size=\"4\"> min</label>\
             <button type=\"submit\">Run reconcile</button></form>",
        );
    }
    c.push_str(&orders_table(&list.items, state.payments().is_some()));
    layout(Some(&admin), "Payments", "Payments", &c)
}

fn usage_table(id: &str, first: &str, rows: &[UsageRowView]) -> String {
    let mut s = format!(
        "<div class=\"scroll\"><table id=\"{id}\"><tr><th>{first}</th><th>Calls</th><th>Failed</th><th>Tokens in/out</th><th>Spend</th><th>Charges CNY</th><th>p50/p95 ms</th></tr>"
    );
    for r in rows {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}/{}</td></tr>",
            esc(&r.key),
            r.calls,
            r.failures,
            r.prompt_tokens,
            r.completion_tokens,
            esc(&r.spend),
            yuan(r.charges_fen),
            r.p50_ms.map(|v| v.to_string()).unwrap_or("–".into()),
            r.p95_ms.map(|v| v.to_string()).unwrap_or("–".into()),
        );
    }
    s.push_str("</table></div>");
    s
}

fn blocks_table(days: &[crate::billing::report::BlocksDay]) -> String {
    if days.is_empty() {
        return "<p class=\"muted\" id=\"blocks\">None in this period.</p>".into();
    }
    let mut s = String::from(
        "<div class=\"scroll\"><table id=\"blocks\"><tr><th>Day</th><th>Messages</th><th>Replies</th><th>Images</th><th>Total</th><th>Labels</th></tr>",
    );
    for d in days {
        let labels: Vec<String> = d
            .labels
            .iter()
            .map(|l| format!("{} {} ({}) ×{}", l.direction, l.label, l.name, l.count))
            .collect();
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.day),
            d.input,
            d.output,
            d.image,
            d.total,
            esc(&labels.join(", ")),
        );
    }
    s.push_str("</table></div>");
    s
}

async fn usage(
    State(state): State<AppState>,
    PageAdmin(admin): PageAdmin,
    Query(dq): Query<DaysQuery>,
) -> Response {
    let u = match service::usage(&state, dq.days).await {
        Ok(u) => u,
        Err(e) => return error_page(&admin, "Usage and cost", e),
    };
    let b = &u.budgets;
    let mut c = format!(
        "<p class=\"tabs\"><a href=\"/admin/usage?days=1\">today</a><a href=\"/admin/usage?days=7\">7 days</a><a href=\"/admin/usage?days=30\">30 days</a></p>\
         <p class=\"muted\">Since {} ({} day(s)).</p><div class=\"stats\" id=\"budgets\">{}{}</div>",
        esc(&u.since),
        u.days,
        stat(
            "Daily budget / spent / left",
            &format!("{} / {} / {}", b.daily_budget, b.daily_spent, b.daily_left.as_deref().unwrap_or("no budget"))
        ),
        stat(
            "Monthly budget / spent / left",
            &format!("{} / {} / {}", b.monthly_budget, b.monthly_spent, b.monthly_left.as_deref().unwrap_or("no budget"))
        ),
    );
    c.push_str("<h2>By model</h2>");
    c.push_str(&usage_table("by-model", "Model", &u.by_model));
    c.push_str("<h2>By provider</h2>");
    c.push_str(&usage_table("by-provider", "Provider", &u.by_provider));
    c.push_str("<h2>By day</h2>");
    c.push_str(&usage_table("by-day", "Day", &u.by_day));
    c.push_str("<h2>Content security blocks</h2>");
    c.push_str(&blocks_table(&u.blocks));
    layout(Some(&admin), "Usage and cost", "Usage", &c)
}

async fn settings(State(state): State<AppState>, PageAdmin(admin): PageAdmin) -> Response {
    let s = match service::settings(&state).await {
        Ok(s) => s,
        Err(e) => return error_page(&admin, "Settings", e),
    };
    let c = format!(
        "<form id=\"settings\" class=\"card\" data-api=\"/api/admin/settings\" data-method=\"PUT\" data-then=\"reload\">\
         <label>Price of a message beyond the free quota (fen) <input name=\"price_fen\" data-type=\"int\" value=\"{}\" inputmode=\"numeric\"></label>\
         <label>Free messages per user per day <input name=\"free_daily\" data-type=\"int\" value=\"{}\" inputmode=\"numeric\"></label>\
         <label>Daily model budget (upstream currency, 0 = none) <input name=\"daily_budget\" data-type=\"float\" value=\"{}\" inputmode=\"decimal\"></label>\
         <label>Monthly model budget <input name=\"monthly_budget\" data-type=\"float\" value=\"{}\" inputmode=\"decimal\"></label>\
         <label>Top-up amounts a checkout may ask for (fen, comma-separated, 1 to 10) <input name=\"topup_amounts_fen\" data-type=\"intlist\" value=\"{}\" inputmode=\"numeric\"></label>\
         <button type=\"submit\">Save (live)</button></form>\
         <p class=\"muted\">Top-ups offered now: {} CNY. The same settings as <code>mvp28 admin set-price</code>, \
         <code>set-free-quota</code>, <code>set-budget</code> and <code>set-topups</code>; every change is in the audit trail.</p>",
        s.price_fen,
        s.free_daily,
        esc(&s.daily_budget),
        esc(&s.monthly_budget),
        s.topup_amounts_fen
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(","),
        s.topup_amounts_fen
            .iter()
            .map(|f| yuan(*f))
            .collect::<Vec<_>>()
            .join(", ")
    );
    layout(Some(&admin), "Settings", "Settings", &c)
}

async fn providers(State(state): State<AppState>, PageAdmin(admin): PageAdmin) -> Response {
    let list = match service::providers(&state).await {
        Ok(l) => l,
        Err(e) => return error_page(&admin, "Providers", e),
    };
    let mut c = String::new();
    for p in &list.items {
        let _ = write!(
            c,
            "<section class=\"card provider\" data-provider=\"{}\"><h2>{} <span class=\"breaker breaker-{}\">{}</span></h2>\
             <p>Models: {} · failures in a row: {}{} · last success: {}</p>\
             <button data-api=\"/api/admin/providers/{}/test\" data-method=\"POST\" data-show=\"detail\">Test now</button>",
            esc(&p.name),
            esc(&p.name),
            esc(&p.breaker),
            esc(&p.breaker),
            esc(&p.models.join(", ")),
            p.failures,
            p.open_until
                .as_deref()
                .map(|t| format!(" · open until {}", esc(t)))
                .unwrap_or_default(),
            esc(p.last_success_at.as_deref().unwrap_or("never")),
            q(&p.name)
        );
        if p.recent_failures.is_empty() {
            c.push_str("<p class=\"muted\">No failed calls recorded.</p>");
        } else {
            c.push_str("<div class=\"scroll\"><table class=\"failures\"><tr><th>When</th><th>Model</th><th>Outcome</th><th>ms</th><th>Error</th></tr>");
            for f in &p.recent_failures {
                let _ = write!(
                    c,
                    "<tr><td>{}</td><td>{}</td><td class=\"status-failed\">{}</td><td>{}</td><td class=\"wrap error-text\">{}</td></tr>",
                    esc(&f.at),
                    esc(&f.provider_model),
                    esc(&f.outcome),
                    f.latency_ms,
                    esc(f.error.as_deref().unwrap_or("–"))
                );
            }
            c.push_str("</table></div>");
        }
        c.push_str("</section>");
    }
    layout(Some(&admin), "Providers", "Providers", &c)
}

async fn system(State(state): State<AppState>, PageAdmin(admin): PageAdmin) -> Response {
    let (s, audit, backups) = match tokio::try_join!(
        service::system(&state),
        service::audit_log(&state, Some(100)),
        service::backups(&state)
    ) {
        Ok(v) => v,
        Err(e) => return error_page(&admin, "System", e),
    };
    let doctor = service::doctor(&state);
    let mut c = format!(
        "<div class=\"stats\">{}{}{}{}{}{}</div>",
        stat("Version", &s.version),
        stat("Uptime", &format!("{} min", s.uptime_secs / 60)),
        stat("Database", &format!("{} KiB", s.database_bytes / 1024)),
        stat("WAL", &format!("{} KiB", s.wal_bytes / 1024)),
        stat("Payments", if s.payments_enabled { "on" } else { "off" }),
        stat(
            "Ledger audit",
            &if s.ledger_audit_mismatches.is_empty() {
                format!("ok ({} balances)", s.ledger_audit_checked)
            } else {
                format!("{} MISMATCH(ES)", s.ledger_audit_mismatches.len())
            }
        ),
    );
    for m in &s.ledger_audit_mismatches {
        let _ = write!(c, "<p class=\"error\">{}</p>", esc(m));
    }
    let _ = write!(
        c,
        "<h2>Backups</h2><p class=\"muted\">In <code>{}</code>.</p>\
         <button id=\"backup\" data-api=\"/api/admin/backups\" data-method=\"POST\" data-then=\"reload\">Back up now</button>\
         <div class=\"scroll\"><table id=\"backups\"><tr><th>File</th><th>KiB</th><th>Written</th></tr>",
        esc(&backups.dir)
    );
    for b in &backups.items {
        let _ = write!(
            c,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&b.name),
            b.bytes / 1024,
            esc(b.modified_at.as_deref().unwrap_or(""))
        );
    }
    c.push_str("</table></div>");
    c.push_str(
        "<form id=\"backup-copy\" class=\"inline\" data-api=\"/api/admin/backups/copy\" data-method=\"POST\" data-show=\"to\" data-label=\"Backup written to \">\
         <label>Or back up to <input name=\"to\" placeholder=\"name.db under the directory above, or s3://bucket/key\" required></label>\
         <button type=\"submit\">Back up there</button></form>\
         <p class=\"muted\">A file name (sub-directories allowed) under the backup directory, ending in <code>.db</code>, \
         or <code>s3://bucket/key</code> with the keys of <code>[storage.s3]</code>; an existing target is never overwritten. \
         Other places on the server: <code>mvp28 admin backup --to PATH</code>.</p>",
    );
    c.push_str(&doctor_section(&doctor));
    c.push_str("<h2>Audit trail</h2><div class=\"scroll\"><table id=\"audit\"><tr><th>When</th><th>Who</th><th>Action</th><th>Target</th><th>Before</th><th>After</th></tr>");
    for a in &audit.items {
        let _ = write!(
            c,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>",
            esc(&a.at),
            esc(&a.actor),
            esc(&a.action),
            esc(&a.target),
            esc(a.before.as_deref().unwrap_or("")),
            esc(a.after.as_deref().unwrap_or(""))
        );
    }
    c.push_str("</table></div>");
    layout(Some(&admin), "System", "System", &c)
}

/// `mvp28 doctor`'s checks as last run from the console, and the button
/// that runs them (they take seconds: never on a page load).
fn doctor_section(d: &DoctorReport) -> String {
    let mut c = String::from("<h2>Doctor</h2>");
    match &d.ran_at {
        None => c.push_str(
            "<p class=\"muted\" id=\"doctor-summary\">Not run since the server started. \
             The checks ask storage, the models, WeChat and WeChat Pay, so they run only on demand.</p>",
        ),
        Some(at) => {
            let _ = write!(
                c,
                "<p id=\"doctor-summary\">{} ok, {} warn, {} fail · run {}</p>",
                d.ok_count,
                d.warn_count,
                d.fail_count,
                esc(at)
            );
        }
    }
    c.push_str(
        "<button id=\"doctor-run\" data-api=\"/api/admin/doctor\" data-method=\"POST\" data-then=\"reload\">Run checks now</button>",
    );
    if !d.checks.is_empty() {
        c.push_str("<div class=\"scroll\"><table id=\"doctor\"><tr><th>Status</th><th>Part</th><th>Check</th><th>Fix</th></tr>");
        for k in &d.checks {
            let _ = write!(
                c,
                "<tr><td class=\"check-{}\">{}</td><td>{}</td><td class=\"wrap\">{}</td><td class=\"wrap\">{}{}</td></tr>",
                esc(&k.status),
                esc(&k.status),
                esc(&k.part),
                esc(&k.message),
                k.key
                    .as_deref()
                    .map(|key| format!("<code>{}</code> ", esc(key)))
                    .unwrap_or_default(),
                esc(k.fix.as_deref().unwrap_or(""))
            );
        }
        c.push_str("</table></div>");
    }
    c
}

async fn admins(State(state): State<AppState>, PageAdmin(admin): PageAdmin) -> Response {
    let list = match super::accounts::admins(&state).await {
        Ok(l) => l,
        Err(e) => return error_page(&admin, "Admins", e),
    };
    let mut c = String::from(
        "<p class=\"muted\">Console accounts and their API tokens. Passwords and tokens are shown once, \
         when made, and stored only hashed. The same as <code>mvp28 admin create-admin</code>, \
         <code>reset-admin</code>, <code>list-admins</code>, <code>create-token</code> and <code>revoke-token</code>.</p>",
    );
    c.push_str("<div class=\"scroll\"><table id=\"admins\"><tr><th>Name</th><th>Created</th><th>Last login</th><th>Sessions</th><th></th></tr>");
    for a in &list.items {
        let reset = if a.name == admin.name {
            "<span class=\"muted\">you</span>".to_string()
        } else {
            format!(
                "<button class=\"danger reset\" data-api=\"/api/admin/admins/{}/reset\" data-method=\"POST\" data-show=\"password\" \
                 data-label=\"New one-time password for {} (shown once; their sessions ended): \" \
                 data-confirm=\"Give {} a new one-time password and end their sessions?\">Reset password</button>",
                q(&a.name),
                esc(&a.name),
                esc(&a.name)
            )
        };
        let _ = write!(
            c,
            "<tr data-admin=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{reset}</td></tr>",
            esc(&a.name),
            esc(&a.name),
            esc(&a.created_at),
            esc(a.last_login_at.as_deref().unwrap_or("never")),
            a.sessions
        );
    }
    c.push_str("</table></div>");
    c.push_str(
        "<form id=\"new-admin\" class=\"card\" data-api=\"/api/admin/admins\" data-method=\"POST\" data-show=\"password\" \
         data-label=\"One-time password (shown once, hand it over now): \">\
         <h2>New admin</h2>\
         <label>Name <input name=\"name\" required maxlength=\"64\" autocomplete=\"off\"></label>\
         <button type=\"submit\">Create</button></form>",
    );
    c.push_str("<h2>API tokens</h2><div class=\"scroll\"><table id=\"tokens\"><tr><th>#</th><th>Admin</th><th>Label</th><th>Created</th><th>State</th><th></th></tr>");
    for a in &list.items {
        for t in &a.tokens {
            let action = if t.revoked_at.is_none() {
                format!(
                    "<button class=\"danger revoke\" data-api=\"/api/admin/tokens/{}\" data-method=\"DELETE\" data-then=\"reload\" \
                     data-confirm=\"Revoke token #{}? Scripts using it stop working.\">Revoke</button>",
                    t.id, t.id
                )
            } else {
                String::new()
            };
            let _ = write!(
                c,
                "<tr data-token=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
                t.id,
                t.id,
                esc(&a.name),
                esc(&t.label),
                esc(&t.created_at),
                t.revoked_at
                    .as_deref()
                    .map(|r| format!("revoked {}", esc(r)))
                    .unwrap_or_else(|| "live".into())
            );
        }
    }
    c.push_str("</table></div>");
    let _ = write!(
        c,
        "<form id=\"new-token\" class=\"card\" data-api=\"/api/admin/tokens\" data-method=\"POST\" data-show=\"token\" \
         data-label=\"API token (shown once; send as Authorization: Bearer …): \">\
         <h2>New API token for {}</h2>\
         <label>What it is for <input name=\"label\" required maxlength=\"100\" placeholder=\"e.g. nightly report\"></label>\
         <button type=\"submit\">Create token</button></form>",
        esc(&admin.name)
    );
    layout(Some(&admin), "Admins", "Admins", &c)
}
