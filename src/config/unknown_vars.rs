//! `MVP28_*` variables that name no config key: a typo or a stray variable
//! in a shell or CI job. `serve` and the other commands warn about them
//! (naming the nearest real key) and go on; `config check` refuses them.

use std::collections::HashMap;

use super::secrets::SECRETS;
use super::Config;

/// `MVP28_*` variables the binary reads itself: never config keys.
/// (`MVP28_CONFIG_EXAMPLE` is read by scripts/setup-env.sh.)
pub(super) const RESERVED: &[&str] = &[
    super::dotenv::CONFIG_VAR,
    super::dotenv::ENV_FILE_VAR,
    super::dotenv::LOG_VAR,
    "MVP28_CONFIG_EXAMPLE",
];

/// An `MVP28_*` variable that names no config key.
pub(super) struct Unknown {
    pub(super) name: String,
    nearest: Option<(String, String)>,
}

impl Unknown {
    pub(super) fn key(&self) -> String {
        self.name
            .trim_start_matches("MVP28_")
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
            .join(".")
    }

    pub(super) fn describe(&self) -> String {
        match &self.nearest {
            Some((var, key)) => format!(
                "unknown variable {}: no such key (did you mean {var}, i.e. {key}?)",
                self.name
            ),
            None => format!("unknown variable {}: no such key", self.name),
        }
    }
}

/// Every `MVP28_*` variable (a `_FILE` one included) that names no key.
pub(super) fn unknown_vars(env: &HashMap<String, String>) -> Vec<Unknown> {
    let keys = known_keys();
    let secret_files: Vec<String> = SECRETS
        .iter()
        .map(|(_, n, _)| format!("{n}_FILE"))
        .collect();
    let mut out: Vec<Unknown> = env
        .keys()
        .filter(|k| k.starts_with("MVP28_") && !RESERVED.contains(&k.as_str()))
        .filter(|k| {
            if k.to_ascii_lowercase().ends_with("_file") {
                !secret_files.contains(k)
            } else {
                !keys.contains_key(&env_path(k).join("."))
            }
        })
        .map(|k| Unknown {
            name: k.clone(),
            nearest: keys
                .iter()
                .map(|(key, var)| (edit_distance(k, var), var, key))
                .min()
                .filter(|(d, _, _)| *d <= 3 + k.len() / 4)
                .map(|(_, var, key)| (var.clone(), key.clone())),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `MVP28_SECTION__KEY` → ["section", "key"].
fn env_path(var: &str) -> Vec<String> {
    var.trim_start_matches("MVP28_")
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Every key (tables included) with its `MVP28_` variable name.
fn known_keys() -> std::collections::BTreeMap<String, String> {
    fn walk(
        prefix: &str,
        v: &figment::value::Value,
        out: &mut std::collections::BTreeMap<String, String>,
    ) {
        let figment::value::Value::Dict(_, dict) = v else {
            return;
        };
        for (k, v) in dict {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            let var = format!("MVP28_{}", key.replace('.', "__").to_ascii_uppercase());
            out.insert(key.clone(), var);
            walk(&key, v, out);
        }
    }
    let defaults = figment::value::Value::serialize(Config::default()).expect("config serializes");
    let mut out = std::collections::BTreeMap::new();
    walk("", &defaults, &mut out);
    out
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
