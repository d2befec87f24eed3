//! The layers, lowest first: embedded defaults, the config file, the original
//! deployment's env names, `MVP28_SECTION__KEY` env vars, `<NAME>_FILE`
//! secrets. The environment always comes from `Source::env`, never from the
//! process, so tests can pass their own.

use std::collections::HashMap;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;

use super::secrets::SECRETS;
use super::unknown_vars::{unknown_vars, Unknown, RESERVED};
use super::{bad, Config, ConfigError, ProviderConfig, Source};

/// Every layer merged, not yet validated. An `MVP28_*` variable that names
/// no key is an error when `strict`, else it is left out and described in
/// the returned warnings (a stray variable in a shell must not stop a
/// server; `config check` still reports it as the mistake it is).
pub(super) fn layered(
    src: &Source<'_>,
    strict: bool,
) -> Result<(Config, Vec<String>), ConfigError> {
    let unknown = unknown_vars(src.env);
    if strict {
        if let Some(u) = unknown.first() {
            return Err(bad(&u.key(), u.describe()));
        }
    }
    let warnings = unknown.iter().map(Unknown::describe).collect();
    let skip: Vec<&str> = unknown.iter().map(|u| u.name.as_str()).collect();
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = src.file {
        fig = fig.merge(Toml::file_exact(file));
    }
    fig = fig.merge(Serialized::defaults(legacy_env(src.env)?));
    fig = fig.merge(EnvFromMap::new(src.env, &skip));
    let mut cfg: Config = fig.extract().map_err(figment_error)?;
    cfg.apply_openai_key(src.env);
    cfg.apply_secret_files(src.env)?;
    cfg.server.apply_tls_defaults();
    Ok((cfg, warnings))
}

impl Config {
    fn apply_openai_key(&mut self, env: &HashMap<String, String>) {
        let key = match env.get("OPENAI_API_KEY") {
            Some(k) if !k.is_empty() => k.clone(),
            _ => match env.get("OPENAI_API_KEY_FILE") {
                Some(p) => match std::fs::read_to_string(p) {
                    Ok(s) => s.trim_end_matches(['\n', '\r']).to_string(),
                    Err(_) => return,
                },
                None => return,
            },
        };
        match self.llm.providers.iter_mut().find(|p| p.name == "openai") {
            Some(p) if p.api_key.is_empty() => p.api_key = key,
            Some(_) => {}
            None => self.llm.providers.push(ProviderConfig {
                api_key: key,
                ..ProviderConfig::default()
            }),
        }
    }

    fn apply_secret_files(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        for (key, name, legacy) in SECRETS {
            let var = std::iter::once(format!("{name}_FILE"))
                .chain(legacy.map(|l| format!("{l}_FILE")))
                .find_map(|v| env.get(&v).map(|p| (v, p.clone())));
            let Some((var, path)) = var else { continue };
            let value = std::fs::read_to_string(&path)
                .map_err(|e| bad(key, format!("cannot read {var}={path}: {e}")))?;
            *self.secret_mut(key) = value.trim_end_matches(['\n', '\r']).to_string();
        }
        Ok(())
    }
}

/// The original deployment's variable names, as a partial config.
fn legacy_env(env: &HashMap<String, String>) -> Result<serde_json::Value, ConfigError> {
    use serde_json::{json, Map, Value};
    let mut root = Map::new();
    let mut set = |section: &str, key: &str, value: Value| {
        let mut node = &mut root;
        for part in section.split('.') {
            node = node
                .entry(part)
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("object");
        }
        node.insert(key.into(), value);
    };
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty());
    if let Some(url) = get("DATABASE_URL") {
        if is_postgres_url(url) {
            set("database", "url", json!(url));
        } else {
            set("database", "path", json!(database_path(url)?));
        }
    }
    if let Some(v) = get("JWT_SECRET") {
        set("auth", "jwt_secret", json!(v));
    }
    if let Some(v) = get("WECHAT_APPID") {
        set("wechat", "app_id", json!(v));
    }
    if let Some(v) = get("WECHAT_SECRET") {
        set("wechat", "app_secret", json!(v));
    }
    if let Some(v) = get("WECHAT_PAY_MCHID") {
        set("wechat_pay", "mch_id", json!(v));
    }
    if let Some(v) = get("WECHAT_PAY_V3KEY") {
        set("wechat_pay", "api_v3_key", json!(v));
    }
    if let Some(v) = get("WECHAT_PAY_SERIAL_NO") {
        set("wechat_pay", "serial_no", json!(v));
    }
    if let Some(v) = get("APP_BASE_URL") {
        set("server", "public_url", json!(v.trim_end_matches('/')));
    }
    for (key, value) in super::supabase::storage_settings(env) {
        match key.rsplit_once('.') {
            Some((section, k)) => set(&format!("storage.{section}"), k, value),
            None => set("storage", key, value),
        }
    }
    Ok(Value::Object(root))
}

/// `postgres://…` or `postgresql://…`: the Postgres backend.
pub fn is_postgres_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// `sqlite:PATH`, `sqlite://PATH` or a plain path; other servers are refused.
pub fn database_path(url: &str) -> Result<String, ConfigError> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("mysql:")
        || lower.starts_with("postgres:")
        || lower.starts_with("postgresql:")
    {
        return Err(bad(
            "database.path (DATABASE_URL)",
            "use SQLite (a sqlite: URL or file path) or Postgres (a postgres://user:pass@host/db \
             URL); no other database server is supported (README: Database)",
        ));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .or_else(|| url.strip_prefix("file:"))
        .unwrap_or(url);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() {
        return Err(bad("database.path (DATABASE_URL)", "empty path"));
    }
    Ok(path.to_string())
}

fn figment_error(e: figment::Error) -> ConfigError {
    let key = if e.path.is_empty() {
        "config".to_string()
    } else {
        e.path.join(".")
    };
    let message = match &e.kind {
        figment::error::Kind::UnknownField(f, _) => format!("unknown key `{f}`"),
        _ => e.kind.to_string(),
    };
    let message = match &e.metadata {
        Some(md) => format!("{message} (from {})", md.name),
        None => message,
    };
    ConfigError { key, message }
}

/// A figment provider reading `MVP28_*` variables out of a given map rather
/// than the process environment.
struct EnvFromMap {
    dict: figment::value::Dict,
}

impl EnvFromMap {
    /// `skip`: unknown variables, already reported.
    fn new(vars: &HashMap<String, String>, skip: &[&str]) -> Self {
        use figment::value::{Dict, Value};
        let defaults = Value::serialize(Config::default()).expect("config serializes");
        let mut dict = Dict::new();
        for (k, v) in vars {
            let Some(rest) = k.strip_prefix("MVP28_") else {
                continue;
            };
            if skip.contains(&k.as_str()) || RESERVED.contains(&k.as_str()) {
                continue;
            }
            if rest.to_ascii_lowercase().ends_with("_file") {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            // String keys take the value verbatim (a numeric mch_id or an
            // all-digit secret stays a string); others are parsed (numbers,
            // booleans, arrays).
            let is_string = matches!(defaults.find_ref(&path.join(".")), Some(Value::String(..)));
            let value: Value = if is_string {
                Value::from(v.clone())
            } else {
                v.parse().unwrap_or_else(|_| Value::from(v.clone()))
            };
            insert_path(&mut dict, &path, value);
        }
        EnvFromMap { dict }
    }
}

fn insert_path(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    use figment::value::{Dict, Value};
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

impl figment::Provider for EnvFromMap {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("MVP28_ environment variable")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Ok(figment::Profile::Default.collect(self.dict.clone()))
    }
}
