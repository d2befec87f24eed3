//! What `config check` prints: the effective config as TOML, secrets hidden.

use figment::value::Value;

use super::secrets::SECRETS;
use super::Config;

impl Config {
    /// The effective config as TOML with every secret replaced.
    pub fn redacted_toml(&self) -> String {
        let mut c = self.clone();
        for (key, _, _) in SECRETS {
            redact(c.secret_mut(key));
        }
        for p in &mut c.llm.providers {
            redact(&mut p.api_key);
        }
        toml_string(&c)
    }
}

fn toml_string(c: &Config) -> String {
    // figment's toml dependency serializes via its Value type.
    let value = Value::serialize(c).expect("config serializes");
    let mut out = String::new();
    write_toml(&mut out, "", &value);
    out
}

/// Minimal TOML writer for the config's own shape (tables, arrays of tables,
/// scalars, arrays of scalars), so `config check` prints a file that can be
/// pasted back as config.toml.
fn write_toml(out: &mut String, prefix: &str, value: &Value) {
    let Value::Dict(_, dict) = value else { return };
    let is_table = |v: &Value| matches!(v, Value::Dict(..));
    let is_table_array =
        |v: &Value| matches!(v, Value::Array(_, a) if !a.is_empty() && a.iter().all(is_table));
    for (k, v) in dict
        .iter()
        .filter(|(_, v)| !is_table(v) && !is_table_array(v))
    {
        if matches!(v, Value::Empty(..)) {
            // An unset optional key (TOML has no null).
            out.push_str(&format!("# {k} is unset\n"));
            continue;
        }
        out.push_str(&format!("{k} = {}\n", scalar(v)));
    }
    for (k, v) in dict.iter().filter(|(_, v)| is_table(v)) {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        out.push_str(&format!("\n[{name}]\n"));
        write_toml(out, &name, v);
    }
    for (k, v) in dict.iter().filter(|(_, v)| is_table_array(v)) {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let Value::Array(_, items) = v {
            for item in items {
                out.push_str(&format!("\n[[{name}]]\n"));
                write_toml(out, &name, item);
            }
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(_, s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Array(_, a) => format!("[{}]", a.iter().map(scalar).collect::<Vec<_>>().join(", ")),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => match (n.to_i128(), n.to_u128()) {
            (Some(i), _) => i.to_string(),
            (None, Some(u)) => u.to_string(),
            (None, None) => n.to_f64().map(|f| f.to_string()).unwrap_or_default(),
        },
        Value::Char(_, c) => format!("\"{c}\""),
        Value::Empty(..) | Value::Dict(..) => "\"\"".into(),
    }
}

fn redact(s: &mut String) {
    if !s.is_empty() {
        *s = "<redacted>".into();
    }
}
