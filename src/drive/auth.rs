//! Google credentials and access tokens, for the three ways people authenticate:
//! a service account key (shared drive), a service account with domain-wide delegation
//! (`GOOGLE_IMPERSONATE_USER` becomes the JWT `sub`), and OAuth user credentials
//! (`authorized_user` JSON with a refresh token).
//!
//! Written by hand rather than with yup-oauth2: yup-oauth2 hard-codes the token endpoint of the
//! authorized-user flow (so it cannot be pointed at the `token_uri` of the credentials file or at
//! an emulator) and brings a second, async HTTP stack. The JWT grant is a signed JSON document and
//! a form POST; signing uses `ring`, already in the tree through rustls.
//!
//! Tokens are cached and refreshed before they expire, and on demand after a 401, so an upload
//! that outlives a token (they last an hour) carries on without restarting.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::Engine;

use crate::config::Settings;
use crate::error::config_error_hint;

pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
pub const DRIVE_SCOPE: &str = "https://www.googleapis.com/auth/drive";
/// How far a service account's JWT `iat` is set back, so that a host clock a few seconds ahead
/// of Google's does not get the assertion refused.
pub const JWT_CLOCK_SKEW_SECS: u64 = 10;

/// Parsed credentials. `Debug` never shows key material.
pub enum Credentials {
    ServiceAccount {
        client_email: String,
        key: ring::signature::RsaKeyPair,
        key_id: Option<String>,
        token_uri: String,
        subject: Option<String>,
        source: String,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_uri: String,
        /// The Cloud project billed for API calls (`x-goog-user-project`), as gcloud writes it.
        quota_project_id: Option<String>,
        source: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn pem_to_der(pem: &str) -> Option<(bool, Vec<u8>)> {
    let pkcs1 = pem.contains("BEGIN RSA PRIVATE KEY");
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()
        .map(|der| (pkcs1, der))
}

/// A credentials value as people paste it: without a UTF-8 byte order mark, surrounding blank
/// space and one pair of matching surrounding quotes.
fn unwrap_value(v: &str) -> &str {
    let v = v.trim_start_matches('\u{feff}').trim();
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner.trim_start_matches('\u{feff}').trim();
        }
    }
    v
}

/// Reads a key file named by `variable`. The value is shown only when it looks like a path
/// (short, one line, starting with `/`, `./`, `../` or `~/`, or ending in `.json`): anything else may be key material
/// pasted into the wrong place, and is described instead of quoted.
fn read_key_file(variable: &str, value: &str) -> Result<String> {
    let looks_like_path = value.len() <= 255
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && (["/", "./", "../", "~/"]
            .iter()
            .any(|p| value.starts_with(p))
            || value.ends_with(".json"));
    match std::fs::read_to_string(value) {
        Ok(text) => Ok(text),
        Err(e) if looks_like_path => Err(config_error_hint(
            format!("{variable} names a key file that cannot be read ({value}): {e}"),
            "set it to the key JSON itself or to the path of the key file downloaded from Google Cloud",
        )),
        Err(_) => {
            let what = if looks_like_base64_json(value) {
                "base64-encoded text, not JSON or a path: decode it first (base64 -d)".to_string()
            } else {
                format!("neither key JSON nor the path of a readable file ({} characters; not shown, it may be a secret)", value.chars().count())
            };
            Err(config_error_hint(
                format!("{variable} holds {what}"),
                "set it to the key JSON itself (starting with {) or to the absolute path of the key file downloaded from Google Cloud",
            ))
        }
    }
}

/// Whether a value is base64 (with or without padding) of something that starts like JSON.
fn looks_like_base64_json(value: &str) -> bool {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(compact.trim_end_matches('='))
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .is_some_and(|text| unwrap_value(&text).starts_with('{'))
}

impl Credentials {
    /// Reads `GOOGLE_SERVICE_ACCOUNT_JSON` (the key JSON itself or a path to it), else
    /// `GOOGLE_APPLICATION_CREDENTIALS` (a path). `Ok(None)` when neither is set. A UTF-8 BOM,
    /// surrounding blank space and one pair of surrounding quotes are accepted; any other value
    /// that is not JSON or a readable file is refused naming the variable and what is wrong, never
    /// quoting it (it may be a whole private key).
    pub fn from_settings(settings: &Settings) -> Result<Option<Credentials>> {
        let subject = settings.get("GOOGLE_IMPERSONATE_USER");
        let (text, source) = if let Some(v) = settings.get("GOOGLE_SERVICE_ACCOUNT_JSON") {
            let v = unwrap_value(&v);
            if v.starts_with('{') {
                (
                    v.to_string(),
                    "GOOGLE_SERVICE_ACCOUNT_JSON (inline JSON)".to_string(),
                )
            } else {
                (
                    read_key_file("GOOGLE_SERVICE_ACCOUNT_JSON", v)?,
                    v.to_string(),
                )
            }
        } else if let Some(v) = settings.get("GOOGLE_APPLICATION_CREDENTIALS") {
            let v = unwrap_value(&v);
            if v.starts_with('{') {
                return Err(config_error_hint(
                    "GOOGLE_APPLICATION_CREDENTIALS holds JSON, but it must be the path of a key file",
                    "put the key JSON in GOOGLE_SERVICE_ACCOUNT_JSON instead, or save it to a file (chmod 600) and set GOOGLE_APPLICATION_CREDENTIALS to its path",
                ));
            }
            (
                read_key_file("GOOGLE_APPLICATION_CREDENTIALS", v)?,
                v.to_string(),
            )
        } else {
            return Ok(None);
        };
        Credentials::parse(&text, &source, subject).map(Some)
    }

    /// Parses a service-account key or an authorized_user file. Errors never quote the content.
    pub fn parse(text: &str, source: &str, subject: Option<String>) -> Result<Credentials> {
        let json: serde_json::Value = serde_json::from_str(unwrap_value(text)).map_err(|e| {
            config_error_hint(
                format!("Google credentials from {source} are not valid JSON (line {}, column {})", e.line(), e.column()),
                "download the key again from Google Cloud (IAM > Service accounts > Keys > Add key > JSON)",
            )
        })?;
        let field = |name: &str| -> Result<String> {
            json.get(name)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    config_error_hint(format!(
                        "Google credentials from {source} lack the field {name:?}"
                    ), "use the JSON key downloaded from Google Cloud (IAM > Service accounts > Keys > Add key > JSON), or OAuth user credentials with client_id, client_secret and refresh_token")
                })
        };
        let token_uri = json
            .get("token_uri")
            .and_then(|v| v.as_str())
            .unwrap_or(GOOGLE_TOKEN_URI)
            .to_string();
        if !(token_uri.starts_with("https://") || token_uri.starts_with("http://")) {
            return Err(config_error_hint(
                format!("token_uri in {source} is not an http(s) URL"),
                "keep the key's token_uri as Google wrote it: https://oauth2.googleapis.com/token",
            ));
        }
        match json.get("type").and_then(|v| v.as_str()) {
            Some("service_account") => {
                let pem = field("private_key")?;
                crate::redact::register_key_material(&pem);
                let key = pem_to_der(&pem)
                    .and_then(|(pkcs1, der)| {
                        if pkcs1 {
                            ring::signature::RsaKeyPair::from_der(&der).ok()
                        } else {
                            ring::signature::RsaKeyPair::from_pkcs8(&der).ok()
                        }
                    })
                    .ok_or_else(|| {
                        config_error_hint(
                            format!("the private_key in {source} is not a usable RSA key"),
                            "download a new JSON key for the service account; the file must be used unmodified",
                        )
                    })?;
                Ok(Credentials::ServiceAccount {
                    client_email: field("client_email")?,
                    key,
                    key_id: json.get("private_key_id").and_then(|v| v.as_str()).map(str::to_string),
                    token_uri,
                    subject,
                    source: source.to_string(),
                })
            }
            Some("authorized_user") => {
                if subject.is_some() {
                    return Err(config_error_hint(
                        "GOOGLE_IMPERSONATE_USER needs a service account key; OAuth user credentials already act as their user", "unset GOOGLE_IMPERSONATE_USER, or use a service account key with domain-wide delegation"));
                }
                for secret in ["client_secret", "refresh_token"] {
                    crate::redact::register(&field(secret)?);
                }
                Ok(Credentials::AuthorizedUser {
                    client_id: field("client_id")?,
                    client_secret: field("client_secret")?,
                    refresh_token: field("refresh_token")?,
                    token_uri,
                    quota_project_id: json
                        .get("quota_project_id")
                        .and_then(|v| v.as_str())
                        .filter(|p| !p.is_empty())
                        .map(str::to_string),
                    source: source.to_string(),
                })
            }
            other => Err(config_error_hint(
                format!("Google credentials from {source} have type {:?}", other.unwrap_or("(none)")),
                "use a service account key (type service_account) or OAuth user credentials (type authorized_user)",
            )),
        }
    }

    /// The Cloud project that user credentials bill API calls to, when they name one.
    pub fn quota_project(&self) -> Option<&str> {
        match self {
            Credentials::AuthorizedUser {
                quota_project_id, ..
            } => quota_project_id.as_deref(),
            Credentials::ServiceAccount { .. } => None,
        }
    }

    /// Who is acting, for logs: never includes key material or secrets.
    pub fn describe(&self) -> String {
        match self {
            Credentials::ServiceAccount {
                client_email,
                subject: Some(s),
                ..
            } => {
                format!("service account {client_email} impersonating {s}")
            }
            Credentials::ServiceAccount { client_email, .. } => {
                format!("service account {client_email}")
            }
            Credentials::AuthorizedUser { client_id, .. } => {
                let short: String = client_id.chars().take(12).collect();
                format!("OAuth user credentials (client {short}…)")
            }
        }
    }

    /// A service account acting as itself: it owns no Drive storage, so it can only write into
    /// shared drives.
    pub fn is_plain_service_account(&self) -> bool {
        matches!(self, Credentials::ServiceAccount { subject: None, .. })
    }

    fn token_uri(&self) -> &str {
        match self {
            Credentials::ServiceAccount { token_uri, .. }
            | Credentials::AuthorizedUser { token_uri, .. } => token_uri,
        }
    }

    fn grant_form(&self) -> Result<Vec<(&'static str, String)>> {
        match self {
            Credentials::ServiceAccount {
                client_email,
                key,
                key_id,
                subject,
                ..
            } => {
                // back-dated: an `iat` ahead of Google's clock is refused ("a reasonable timeframe")
                let issued_at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs()
                    .saturating_sub(JWT_CLOCK_SKEW_SECS);
                let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
                if let Some(kid) = key_id {
                    header["kid"] = kid.clone().into();
                }
                let mut claims = serde_json::json!({
                    "iss": client_email,
                    "scope": DRIVE_SCOPE,
                    // Google documents the audience as always this constant, whatever token_uri says
                    "aud": GOOGLE_TOKEN_URI,
                    "iat": issued_at,
                    // Google's maximum lifetime, counted from `iat` as it requires
                    "exp": issued_at + 3600,
                });
                if let Some(sub) = subject {
                    claims["sub"] = sub.clone().into();
                }
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let signing_input = format!(
                    "{}.{}",
                    b64.encode(header.to_string()),
                    b64.encode(claims.to_string())
                );
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    signing_input.as_bytes(),
                    &mut signature,
                )
                .map_err(|_| anyhow::anyhow!("signing the token request failed"))?;
                let assertion = format!("{signing_input}.{}", b64.encode(signature));
                Ok(vec![
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                    ),
                    ("assertion", assertion),
                ])
            }
            Credentials::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                ..
            } => Ok(vec![
                ("grant_type", "refresh_token".into()),
                ("client_id", client_id.clone()),
                ("client_secret", client_secret.clone()),
                ("refresh_token", refresh_token.clone()),
            ]),
        }
    }
}

/// The token endpoint refused to issue a token.
#[derive(Debug)]
pub struct TokenError {
    pub status: u16,
    pub error: String,
    pub description: String,
    pub user_credentials: bool,
    pub impersonating: bool,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Google's token endpoint refused the credentials (HTTP {}): {}",
            self.status, self.error
        )?;
        if !self.description.is_empty() {
            write!(f, ": {}", self.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for TokenError {}

impl TokenError {
    /// Errors that no retry will fix: the credentials or the Google-side setup are wrong (exit
    /// 78); each of these has a [`hint`].
    ///
    /// [`hint`]: TokenError::hint
    pub fn is_configuration_problem(&self) -> bool {
        matches!(
            self.error.as_str(),
            "invalid_grant"
                | "unauthorized_client"
                | "invalid_client"
                | "invalid_scope"
                | "access_denied"
                | "invalid_request"
        )
    }

    /// The token endpoint's own retry rule (as in Google's auth libraries): retried, and after
    /// the last retry a transient failure (exit 69).
    pub fn is_transient(&self) -> bool {
        matches!(self.status, 408 | 429 | 500..=599)
            || matches!(
                self.error.as_str(),
                "internal_failure" | "server_error" | "temporarily_unavailable"
            )
    }

    pub fn hint(&self) -> Option<String> {
        let d = self.description.to_ascii_lowercase();
        let hint = match self.error.as_str() {
            "invalid_grant" if self.user_credentials => {
                "the refresh token has expired or was revoked: create new OAuth user credentials (OAuth apps left in \"Testing\" status issue refresh tokens that expire after 7 days; publish the app to avoid that)"
            }
            "invalid_grant" if d.contains("signature") => {
                "the service account key was deleted or revoked in Google Cloud: create a new JSON key and replace the old one"
            }
            "invalid_grant" if d.contains("account not found") => {
                "the service account no longer exists (or the key belongs to another project): check client_email in the key file"
            }
            "invalid_grant" if d.contains("iat") || d.contains("timeframe") => {
                "this host's clock is wrong: enable time synchronisation (NTP)"
            }
            "invalid_grant" => "the credentials were refused: download a new key or refresh token",
            "unauthorized_client" if self.impersonating => {
                "domain-wide delegation is not set up: in the Google Admin console (Security > API controls > Domain-wide delegation) authorize the service account's numeric client ID for the scope https://www.googleapis.com/auth/drive"
            }
            "unauthorized_client" | "invalid_client" => "the OAuth client ID or secret is wrong or was deleted",
            "invalid_scope" => "the credentials may not ask for the Drive scope (https://www.googleapis.com/auth/drive): with domain-wide delegation, authorize exactly that scope for the service account's client ID",
            "access_denied" => "the Google account refused access: check that the user (GOOGLE_IMPERSONATE_USER, or the OAuth user) may use Drive and granted the Drive scope",
            "invalid_request" => "Google rejected the token request as malformed: download a new key (or new OAuth user credentials) and check GOOGLE_IMPERSONATE_USER is a full address",
            _ => return None,
        };
        Some(hint.to_string())
    }
}

/// A cached access token and the credentials that renew it.
pub struct TokenSource {
    credentials: Credentials,
    cached: Option<(String, Instant, Duration)>,
}

impl TokenSource {
    pub fn new(credentials: Credentials) -> TokenSource {
        TokenSource {
            credentials,
            cached: None,
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Forgets the cached token (after a 401), so the next call fetches a new one.
    pub fn invalidate(&mut self) {
        self.cached = None;
    }

    /// A valid access token, refreshed when less than a fifth of its lifetime (at most five
    /// minutes) remains.
    pub fn token(
        &mut self,
        agent: &ureq::Agent,
        retry: &crate::drive::retry::RetryPolicy,
    ) -> Result<String> {
        if let Some((token, expires, lifetime)) = &self.cached {
            let margin = (*lifetime / 5).min(Duration::from_secs(300));
            if Instant::now() + margin < *expires {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = self.fetch(agent, retry)?;
        self.cached = Some((token.clone(), Instant::now() + lifetime, lifetime));
        crate::log::debug(
            "obtained an access token",
            &[("expires_in_s", lifetime.as_secs().to_string())],
        );
        Ok(token)
    }

    fn fetch(
        &self,
        agent: &ureq::Agent,
        retry: &crate::drive::retry::RetryPolicy,
    ) -> Result<(String, Duration)> {
        use crate::drive::retry::{classify_transport, Attempts, Next, Verdict};
        let form = self.credentials.grant_form()?;
        let uri = self.credentials.token_uri().to_string();
        let mut attempts = Attempts::new(retry);
        loop {
            crate::signals::check_run()?;
            let (verdict, error) = match agent
                .post(&uri)
                .send_form(form.iter().map(|(k, v)| (*k, v.as_str())))
            {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.body_mut().read_to_string().unwrap_or_default();
                    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    if status == 200 {
                        let token = json["access_token"]
                            .as_str()
                            .context("token endpoint answered without access_token")?;
                        let expires_in = json["expires_in"]
                            .as_u64()
                            .or_else(|| json["expires_in"].as_str().and_then(|s| s.parse().ok()))
                            .unwrap_or(3600);
                        crate::redact::register(token);
                        return Ok((token.to_string(), Duration::from_secs(expires_in.max(1))));
                    }
                    let err = TokenError {
                        status,
                        error: json["error"]
                            .as_str()
                            .unwrap_or("unknown_error")
                            .to_string(),
                        description: json["error_description"].as_str().unwrap_or("").to_string(),
                        user_credentials: matches!(
                            self.credentials,
                            Credentials::AuthorizedUser { .. }
                        ),
                        impersonating: matches!(
                            self.credentials,
                            Credentials::ServiceAccount {
                                subject: Some(_),
                                ..
                            }
                        ),
                    };
                    let verdict = if err.is_transient() {
                        Verdict::Retry
                    } else {
                        Verdict::Fatal
                    };
                    (
                        verdict,
                        anyhow::Error::new(err).context("obtaining a Google access token"),
                    )
                }
                Err(e) => (
                    classify_transport(&e),
                    anyhow::Error::new(e)
                        .context(format!("obtaining a Google access token from {uri}")),
                ),
            };
            crate::signals::check_run()?;
            match attempts.after(verdict, None) {
                Next::Backoff(delay) => {
                    crate::log::debug(
                        "token request failed, retrying",
                        &[("error", format!("{error:#}"))],
                    );
                    crate::signals::sleep(delay)?;
                }
                _ => return Err(error),
            }
        }
    }
}
