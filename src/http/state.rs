//! The state every handler shares: one `Arc`, built once at start with
//! everything the process owns (config, database, clock, providers,
//! storage, payments, live generations, limits, metrics).

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};

use crate::auth::jwt::JwtKeys;
use crate::auth::wechat::LoginProviders;
use crate::chat::live::Live;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::Db;
use crate::http::metrics::Metrics;
use crate::http::ratelimit::RateLimits;
use crate::ids::UserId;
use crate::llm::Llm;
use crate::pay::Payments;
use crate::storage::Storage;

/// `known_users` value of an account deleted by this process.
const DELETED: i64 = i64::MIN;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    db: Db,
    clock: SharedClock,
    jwt: JwtKeys,
    login: LoginProviders,
    llm: Llm,
    limits: RateLimits,
    storage: Storage,
    offset: FixedOffset,
    live: Arc<Live>,
    budget_guard: crate::billing::budget::Guard,
    metrics: Metrics,
    /// Live users seen with a valid token (id -> created_at), so most
    /// requests skip the account lookup. Accounts are only ever deleted
    /// through DELETE /api/me, which forgets the entry.
    known_users: std::sync::Mutex<std::collections::HashMap<UserId, i64>>,
    /// WeChat Pay, when `wechat_pay` is configured.
    payments: Option<Payments>,
    /// Batch jobs' concurrency bound and stop signal.
    jobs: crate::jobs::service::Runner,
    /// The app's WeChat access token, when `wechat.app_id` is set.
    wechat_tokens: Option<Arc<crate::moderation::AccessTokens>>,
    /// Content security, when `moderation.enabled`.
    moderation: Option<crate::moderation::Moderation>,
    /// The operator console's login limits and start time.
    console: crate::console::Console,
    /// Voice operations in flight, one at a time per media.
    voice_flights: crate::voice::service::Flights,
    /// GET /api/health's deep checks, cached.
    health_cache: crate::http::health::Cache,
    /// The served certificate, with `[server.tls]` (set once listening).
    tls: std::sync::OnceLock<Arc<crate::tls::CertStore>>,
}

impl AppState {
    pub fn new(
        config: Config,
        db: Db,
        clock: SharedClock,
        jwt_secret: &[u8],
        storage: Storage,
        payments: Option<Payments>,
    ) -> (AppState, Vec<String>) {
        let (llm, warnings) = Llm::from_config(&config.llm);
        let wechat_tokens = (!config.wechat.app_id.is_empty())
            .then(|| Arc::new(crate::moderation::AccessTokens::new(&config.wechat)));
        let moderation = match &wechat_tokens {
            Some(t) if config.moderation.enabled => Some(crate::moderation::Moderation::new(
                &config.moderation,
                &config.wechat,
                t.clone(),
            )),
            _ => None,
        };
        let state = AppState {
            inner: Arc::new(Inner {
                jwt: JwtKeys::new(jwt_secret, config.auth.token_ttl_secs)
                    .with_session_max(u64::from(config.auth.session_max_days) * 86_400),
                login: LoginProviders::from_config(&config),
                limits: RateLimits::new(&config.rate_limit, &config.server.trusted_proxies),
                offset: config.quota.offset(),
                live: Arc::new(Live::default()),
                budget_guard: Default::default(),
                metrics: Default::default(),
                known_users: Default::default(),
                payments,
                jobs: Default::default(),
                wechat_tokens,
                moderation,
                console: Default::default(),
                voice_flights: Default::default(),
                health_cache: Default::default(),
                tls: Default::default(),
                llm,
                storage,
                db,
                clock,
                config,
            }),
        };
        (state, warnings)
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    pub fn db(&self) -> &Db {
        &self.inner.db
    }
    pub fn jwt(&self) -> &JwtKeys {
        &self.inner.jwt
    }
    pub fn login(&self) -> &LoginProviders {
        &self.inner.login
    }
    pub fn llm(&self) -> &Llm {
        &self.inner.llm
    }
    pub fn limits(&self) -> &RateLimits {
        &self.inner.limits
    }
    pub fn known_user(&self, id: &UserId) -> Option<i64> {
        self.inner
            .known_users
            .lock()
            .expect("users lock")
            .get(id)
            .copied()
            .filter(|c| *c != DELETED)
    }
    pub fn remember_user(&self, id: &UserId, created_at: i64) {
        let mut m = self.inner.known_users.lock().expect("users lock");
        if m.len() >= 100_000 {
            m.clear(); // a bound, not an LRU: a miss only costs one query
        }
        // A request that read the account just before its deletion must
        // not bring it back into the cache.
        if m.get(id) != Some(&DELETED) {
            m.insert(id.clone(), created_at);
        }
    }
    /// The account is deleted: every token of it fails from now on, cached
    /// or not (a tombstone stays so a racing request cannot re-add it).
    pub fn forget_user(&self, id: &UserId) {
        self.inner
            .known_users
            .lock()
            .expect("users lock")
            .insert(id.clone(), DELETED);
    }
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
    pub fn budget_guard(&self) -> &crate::billing::budget::Guard {
        &self.inner.budget_guard
    }
    /// Replies being generated right now.
    pub fn live(&self) -> &Arc<Live> {
        &self.inner.live
    }
    pub fn health_cache(&self) -> &crate::http::health::Cache {
        &self.inner.health_cache
    }
    pub fn voice_flights(&self) -> &crate::voice::service::Flights {
        &self.inner.voice_flights
    }
    pub fn jobs(&self) -> &crate::jobs::service::Runner {
        &self.inner.jobs
    }
    /// The app's WeChat access token (server APIs), when configured.
    pub fn wechat_tokens(&self) -> Option<&Arc<crate::moderation::AccessTokens>> {
        self.inner.wechat_tokens.as_ref()
    }
    /// Content security, when enabled.
    pub fn moderation(&self) -> Option<&crate::moderation::Moderation> {
        self.inner.moderation.as_ref()
    }
    pub fn console(&self) -> &crate::console::Console {
        &self.inner.console
    }
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }
    /// WeChat Pay, when enabled.
    pub fn payments(&self) -> Option<&Payments> {
        self.inner.payments.as_ref()
    }
    /// Metering for model calls (prices, clock, spend periods).
    pub fn meter(&self) -> crate::billing::calls::Meter<'_> {
        crate::billing::calls::Meter {
            prices: &self.inner.config.llm,
            clock: self.inner.clock.clone(),
            offset: self.inner.offset,
        }
    }
    /// The served certificate, when HTTPS is on.
    pub fn tls(&self) -> Option<&Arc<crate::tls::CertStore>> {
        self.inner.tls.get()
    }
    pub fn set_tls(&self, store: Arc<crate::tls::CertStore>) {
        let _ = self.inner.tls.set(store);
    }
    /// Now, as the money rule reads it (local day and month).
    pub fn at(&self) -> crate::billing::At {
        crate::billing::At::new(self.now(), self.inner.offset)
    }
}
