//! The environment every command reads: the process environment over a
//! dotenv file (`--env-file PATH`, else `MVP28_ENV_FILE`, else `./.env`
//! when present), so the original deployment's `.env` works as it is.
//!
//! The file is merged into a map handed to the config loader; the process
//! environment itself is never modified (changing it while threads run is
//! unsound, and a variable the operator exported must win anyway).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{bad, ConfigError};

/// Variables this binary reads itself; never config keys.
pub const ENV_FILE_VAR: &str = "MVP28_ENV_FILE";
pub const CONFIG_VAR: &str = "MVP28_CONFIG";
/// A log filter like RUST_LOG (it wins over `log.level`).
pub const LOG_VAR: &str = "MVP28_LOG";

pub struct Environment {
    pub vars: HashMap<String, String>,
    /// The dotenv file read, if any.
    pub file: Option<PathBuf>,
}

/// Names only: the values hold secrets.
impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.vars.keys().collect();
        names.sort();
        f.debug_struct("Environment")
            .field("vars", &names)
            .field("file", &self.file)
            .finish()
    }
}

impl Environment {
    /// The process environment over the dotenv file. A file named by the
    /// flag or `MVP28_ENV_FILE` must exist; `./.env` is optional.
    pub fn load(flag: Option<&Path>) -> Result<Environment, ConfigError> {
        let process: HashMap<String, String> = std::env::vars().collect();
        Self::merge(process, flag, Path::new(".env"))
    }

    /// `load` with the process environment and the default file given.
    pub fn merge(
        process: HashMap<String, String>,
        flag: Option<&Path>,
        default_file: &Path,
    ) -> Result<Environment, ConfigError> {
        let named = match flag {
            Some(p) => Some(("--env-file", p.to_path_buf())),
            None => process
                .get(ENV_FILE_VAR)
                .filter(|v| !v.is_empty())
                .map(|v| (ENV_FILE_VAR, PathBuf::from(v))),
        };
        let file = match named {
            Some((key, path)) => {
                if !path.is_file() {
                    return Err(bad(key, format!("{} does not exist", path.display())));
                }
                Some(path)
            }
            None => default_file.is_file().then(|| default_file.to_path_buf()),
        };
        let mut vars = process;
        if let Some(path) = &file {
            for (k, v) in read(path)? {
                // The real environment wins over the file.
                vars.entry(k).or_insert(v);
            }
        }
        Ok(Environment { vars, file })
    }
}

/// The file's variables, in dotenv syntax (quotes, `export`, comments,
/// `${VAR}` substitution).
fn read(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let key = format!("env file {}", path.display());
    let iter = dotenvy::from_path_iter(path).map_err(|e| bad(&key, e.to_string()))?;
    let mut out = vec![];
    for item in iter {
        let (k, v) = item.map_err(|e| match e {
            dotenvy::Error::LineParse(line, at) => {
                // The line may hold a secret: name its variable, not its text.
                let name: String = line
                    .trim_start()
                    .trim_start_matches("export ")
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                bad(
                    &key,
                    format!("cannot parse the line of {name:?} (at character {at})"),
                )
            }
            other => bad(&key, other.to_string()),
        })?;
        out.push((k, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".env");
        std::fs::write(
            &file,
            "# the original deployment\nexport WECHAT_APPID=wx123\nJWT_SECRET=\"from file\"\nAPP_BASE_URL='https://a.example'\n",
        )
        .unwrap();
        let process = [("JWT_SECRET".to_string(), "from env".to_string())].into();
        let env = Environment::merge(process, None, &file).unwrap();
        assert_eq!(env.vars["JWT_SECRET"], "from env");
        assert_eq!(env.vars["WECHAT_APPID"], "wx123");
        assert_eq!(env.vars["APP_BASE_URL"], "https://a.example");
        assert_eq!(env.file.as_deref(), Some(file.as_path()));
    }

    #[test]
    fn a_named_file_must_exist_and_a_bad_line_names_its_variable_only() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.env");
        let e = Environment::merge(HashMap::new(), Some(&missing), &missing).unwrap_err();
        assert_eq!(e.key, "--env-file");
        let via_var = [(ENV_FILE_VAR.to_string(), missing.display().to_string())].into();
        let e = Environment::merge(via_var, None, &missing).unwrap_err();
        assert_eq!(e.key, ENV_FILE_VAR);
        // No default file: nothing read, no error.
        let env = Environment::merge(HashMap::new(), None, &missing).unwrap();
        assert!(env.file.is_none());

        let bad_file = dir.path().join("bad.env");
        std::fs::write(&bad_file, "OK=1\nSECRET_THING=\"unterminated s3cr3t\n").unwrap();
        let e = Environment::merge(HashMap::new(), Some(&bad_file), &missing).unwrap_err();
        assert!(e.to_string().contains("SECRET_THING"), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }
}
