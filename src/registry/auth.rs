//! Registry credentials and authentication challenges.
//!
//! Credentials come from `$DOCKER_CONFIG/config.json` (or
//! `~/.docker/config.json`): `auths` entries, per-registry `credHelpers`, or
//! a global `credsStore`, the last two through `docker-credential-NAME get`.
//! Secrets stay inside [`Credentials`], whose `Debug` output hides them, and
//! never enter an error message.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

/// Why credentials could not be read: the docker config file, an entry in
/// it, or a credential helper. Never carries a secret (a helper's output
/// is not echoed).
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// `config.json` could not be read or is not docker's format.
    #[error("{}: {why}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// An `auths` entry that cannot be decoded.
    #[error("the auth entry for {registry} in config.json is not {expected}")]
    Entry {
        /// The registry the entry is for.
        registry: String,
        /// What it should have been.
        expected: &'static str,
    },
    /// A credential helper that could not run, failed or answered badly.
    #[error("credential helper {}: {why}", program.display())]
    Helper {
        /// The helper program.
        program: PathBuf,
        /// What went wrong.
        why: String,
    },
}

/// A user name and secret for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (`<token>` for identity tokens).
    pub username: String,
    /// The password or token.
    pub secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, secret: <hidden> }}",
            self.username
        )
    }
}

impl Credentials {
    /// The `Authorization: Basic …` value.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// Where credentials come from.
#[derive(Debug, Default)]
pub struct CredentialSource {
    config: ConfigFile,
    /// Extra directories searched for `docker-credential-*` helpers before `PATH`.
    pub helper_dirs: Vec<PathBuf>,
}

/// Normalises a registry key from config.json (`https://index.docker.io/v1/`).
fn host_of(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

impl CredentialSource {
    /// Loads `config.json` from `dir` (a `DOCKER_CONFIG` directory), or from
    /// `$DOCKER_CONFIG`, or `~/.docker`. A missing file means no credentials.
    pub fn load(dir: Option<&Path>) -> Result<CredentialSource, CredentialError> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => match std::env::var_os("DOCKER_CONFIG") {
                Some(d) => PathBuf::from(d),
                None => match std::env::var_os("HOME") {
                    Some(home) => PathBuf::from(home).join(".docker"),
                    None => return Ok(CredentialSource::default()),
                },
            },
        };
        let path = dir.join("config.json");
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CredentialSource::default())
            }
            Err(e) => {
                return Err(CredentialError::Config {
                    path,
                    why: format!("cannot read it: {e}"),
                })
            }
        };
        let config: ConfigFile =
            serde_json::from_slice(&text).map_err(|e| CredentialError::Config {
                path: path.clone(),
                why: format!("not valid docker config JSON: {e}"),
            })?;
        Ok(CredentialSource {
            config,
            helper_dirs: Vec::new(),
        })
    }

    /// Credentials for `registry` (e.g. `localhost:5000`), if any.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>, CredentialError> {
        if let Some((_, helper)) = self
            .config
            .cred_helpers
            .iter()
            .find(|(k, _)| host_of(k) == registry)
        {
            return self.query_helper(helper, registry);
        }
        if let Some((_, entry)) = self
            .config
            .auths
            .iter()
            .find(|(k, _)| host_of(k) == registry)
        {
            if let Some(token) = &entry.identity_token {
                return Ok(Some(Credentials {
                    username: "<token>".to_string(),
                    secret: token.clone(),
                }));
            }
            if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
                return Ok(Some(Credentials {
                    username: u.clone(),
                    secret: p.clone(),
                }));
            }
            if let Some(auth) = &entry.auth {
                let bad = |expected| CredentialError::Entry {
                    registry: registry.to_string(),
                    expected,
                };
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| bad("valid base64"))?;
                let text = String::from_utf8(decoded).map_err(|_| bad("UTF-8"))?;
                let (u, p) = text.split_once(':').ok_or_else(|| bad("user:password"))?;
                return Ok(Some(Credentials {
                    username: u.to_string(),
                    secret: p.to_string(),
                }));
            }
        }
        if let Some(store) = &self.config.creds_store {
            return self.query_helper(store, registry);
        }
        Ok(None)
    }

    fn helper_program(&self, name: &str) -> PathBuf {
        let file = format!("docker-credential-{name}");
        self.helper_dirs
            .iter()
            .map(|d| d.join(&file))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(file))
    }

    fn query_helper(
        &self,
        name: &str,
        registry: &str,
    ) -> Result<Option<Credentials>, CredentialError> {
        let program = self.helper_program(name);
        let failed = |why: String| CredentialError::Helper {
            program: program.clone(),
            why,
        };
        let mut child = Command::new(&program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // Helpers expect the server URL on stdin.
            let _ = stdin.write_all(registry.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| failed(e.to_string()))?;
        if !out.status.success() {
            let message = String::from_utf8_lossy(&out.stdout);
            if message.contains("credentials not found") {
                return Ok(None);
            }
            // The helper's own output is not echoed: it may hold secrets.
            return Err(failed(format!("failed for {registry} ({})", out.status)));
        }
        #[derive(Deserialize)]
        struct HelperReply {
            #[serde(rename = "Username")]
            username: String,
            #[serde(rename = "Secret")]
            secret: String,
        }
        let reply: HelperReply = serde_json::from_slice(&out.stdout)
            .map_err(|_| failed("returned invalid JSON".to_string()))?;
        Ok(Some(Credentials {
            username: reply.username,
            secret: reply.secret,
        }))
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// Service name to ask for.
        service: Option<String>,
        /// Scope the registry asked for.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut values = BTreeMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        values.insert(key, value.to_string());
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: values.get("realm")?.clone(),
            service: values.get("service").cloned(),
            scope: values.get("scope").cloned(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge("Basic realm=\"Registry Realm\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn cred_helpers_per_registry() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-unittest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\ncase \"$server\" in\n  reg.example:5000) printf '{\"Username\":\"ci\",\"Secret\":\"tok\"}' ;;\n  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"credHelpers":{"reg.example:5000":"unittest","other.example":"unittest"},"auths":{"reg.example:5000":{"auth":"bm90OnVzZWQ="}}}"#,
        )
        .unwrap();
        let mut source = CredentialSource::load(Some(dir.path())).unwrap();
        source.helper_dirs.push(dir.path().to_path_buf());
        let c = source.get("reg.example:5000").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.secret.as_str()),
            ("ci", "tok"),
            "the helper wins over auths"
        );
        assert_eq!(
            source.get("other.example").unwrap(),
            None,
            "helper says not found"
        );
        assert_eq!(source.get("unlisted.example").unwrap(), None);
    }

    #[test]
    fn config_json_auths() {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            dir.path().join("config.json"),
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"localhost:5000":{{"username":"bob","password":"pw"}}}}}}"#),
        )
        .unwrap();
        let source = CredentialSource::load(Some(dir.path())).unwrap();
        let hub = source.get("docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.secret.as_str()),
            ("alice", "s3cret")
        );
        assert_eq!(
            source.get("localhost:5000").unwrap().unwrap().username,
            "bob"
        );
        assert_eq!(source.get("other:1").unwrap(), None);
        assert!(
            !format!("{hub:?}").contains("s3cret"),
            "Debug hides the secret"
        );
    }
}
