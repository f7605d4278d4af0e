//! Who is calling, and what they may do.
//!
//! - **Users** have an argon2 password hash and a role; they log in with HTTP Basic
//!   credentials (Flight's Handshake, as JDBC, ADBC and pyarrow send them) and get a
//!   **bearer token**: `tarn1.<claims>.<HMAC-SHA256>`, signed with the server's secret and
//!   expiring after the configured time. Any node that shares the secret accepts it.
//! - **API tokens** are static bearer tokens for functions and jobs; the config file keeps
//!   only their SHA-256, never the token.
//! - **Roles**: `admin` may do everything; `reader` may query and read metadata, but not run
//!   DDL, ingest or crawls.
//!
//! The config file is TOML:
//!
//! ```toml
//! token_ttl_secs = 43200
//!
//! [[users]]
//! name = "alice"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # tarn auth hash-password
//! role = "admin"
//!
//! [[tokens]]
//! name = "nightly-export"
//! sha256 = "9f86d08188..."                              # tarn auth new-token
//! role = "reader"
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use tarn_lake::error::{Error, Result};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: queries, DDL, ingest, crawls.
    Admin,
    /// Queries and metadata only.
    Reader,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Reader => "reader",
        })
    }
}

/// An authenticated caller (or the anonymous admin when authentication is off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// The caller of a server without authentication: it may do everything.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            role: Role::Admin,
        }
    }

    /// Checks that this caller may change the catalog or the lake (`what` names the
    /// action, for the message).
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] for a reader.
    pub fn require_admin(&self, what: &str) -> Result<()> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Reader => Err(Error::PermissionDenied(format!(
                "user '{}' has role {}, and {what} needs role admin",
                self.name, self.role
            ))),
        }
    }
}

/// The auth section of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Lifetime of the bearer tokens issued at login, in seconds (default 12 hours).
    #[serde(default)]
    pub token_ttl_secs: Option<u64>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// A user who logs in with a password.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// An argon2 PHC string (`tarn auth hash-password` prints one).
    pub password_hash: String,
    pub role: Role,
}

/// A static API token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// Hex SHA-256 of the token (`tarn auth new-token` prints the token and its hash).
    pub sha256: String,
    pub role: Role,
}

impl AuthConfig {
    /// Reads and checks a config file.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read; [`Error::InvalidArgument`] when it is not
    /// valid TOML, has unknown keys, or holds a malformed password hash or token hash.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: AuthConfig = toml::from_str(&text).map_err(|e| {
            Error::InvalidArgument(format!("config file '{}': {e}", path.display()))
        })?;
        for user in &config.users {
            PasswordHash::new(&user.password_hash).map_err(|e| {
                Error::InvalidArgument(format!(
                    "config file '{}': user '{}' has a malformed password_hash ({e}); make one \
                     with `tarn auth hash-password`",
                    path.display(),
                    user.name
                ))
            })?;
        }
        for token in &config.tokens {
            if token.sha256.len() != 64 || !token.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::InvalidArgument(format!(
                    "config file '{}': token '{}' needs sha256 = 64 hex digits; make one with \
                     `tarn auth new-token`",
                    path.display(),
                    token.name
                )));
            }
        }
        Ok(config)
    }
}

/// HMAC-SHA256 with the server's secret: signs bearer tokens and statement handles.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

/// Length of a signature.
pub const SIGNATURE_LEN: usize = 32;

impl Signer {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    /// A signer with a fresh random key (for a single process, e.g. tests).
    pub fn random() -> Self {
        let mut key = vec![0u8; 32];
        OsRng.fill_bytes(&mut key);
        Self { key }
    }

    /// Loads the secret at `path`, creating it (32 random bytes, owner-only) if missing.
    /// Nodes that share the file accept each other's tokens and handles.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read or created; [`Error::InvalidArgument`] when it
    /// is shorter than 32 bytes.
    pub fn from_file(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(key) if key.len() >= 32 => Ok(Self { key }),
            Ok(_) => Err(Error::InvalidArgument(format!(
                "secret file '{}' is shorter than 32 bytes; delete it to have Tarn make a new one",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let signer = Self::random();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(path) {
                    Ok(mut file) => {
                        std::io::Write::write_all(&mut file, &signer.key)
                            .map_err(|e| Error::io(path, e))?;
                        Ok(signer)
                    }
                    // Another process made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::from_file(path)
                    }
                    Err(e) => Err(Error::io(path, e)),
                }
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // Cannot fail: `new_from_slice` errs only for fixed-length keys, and HMAC hashes a
        // key of any length down to its block size (RFC 2104), so no request can reach the
        // `unreachable!`.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    /// The signature of `data`.
    pub fn sign(&self, data: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut mac = self.mac();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Whether `signature` is `data`'s (compared in constant time).
    pub fn verify(&self, data: &[u8], signature: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(data);
        mac.verify_slice(signature).is_ok()
    }

    /// `data` followed by its signature.
    pub fn seal(&self, data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        out.extend_from_slice(&self.sign(data));
        out
    }

    /// The data of a [`Signer::seal`]ed message, if its signature holds.
    pub fn open<'a>(&self, sealed: &'a [u8]) -> Option<&'a [u8]> {
        let split = sealed.len().checked_sub(SIGNATURE_LEN)?;
        let (data, signature) = sealed.split_at(split);
        self.verify(data, signature).then_some(data)
    }
}

/// Claims inside a bearer token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    /// Expiry, seconds since the Unix epoch.
    exp: u64,
}

/// Standard base64 that accepts input with or without padding.
const STANDARD_INDIFFERENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

const TOKEN_PREFIX: &str = "tarn1.";
const DEFAULT_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a verified Basic credential is remembered (argon2 is slow on purpose).
const BASIC_CACHE_TTL: Duration = Duration::from_secs(60);
const BASIC_CACHE_MAX: usize = 1024;

/// Checks credentials and issues tokens.
#[derive(Debug)]
pub struct Authenticator {
    enabled: bool,
    users: HashMap<String, UserConfig>,
    /// API tokens by the hex SHA-256 of the token.
    tokens: HashMap<String, (String, Role)>,
    signer: Signer,
    ttl: Duration,
    /// Basic credentials verified recently: SHA-256 of `user:password` → (caller, when).
    basic_cache: Mutex<HashMap<[u8; 32], (Caller, SystemTime)>>,
}

impl Authenticator {
    /// No authentication: every caller is the anonymous admin.
    pub fn disabled(signer: Signer) -> Self {
        Self {
            enabled: false,
            users: HashMap::new(),
            tokens: HashMap::new(),
            signer,
            ttl: DEFAULT_TTL,
            basic_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Authentication with the users and tokens of `config`.
    pub fn new(config: &AuthConfig, signer: Signer) -> Self {
        Self {
            enabled: true,
            users: config
                .users
                .iter()
                .map(|u| (u.name.clone(), u.clone()))
                .collect(),
            tokens: config
                .tokens
                .iter()
                .map(|t| (t.sha256.to_ascii_lowercase(), (t.name.clone(), t.role)))
                .collect(),
            signer,
            ttl: config
                .token_ttl_secs
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_TTL),
            basic_cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Who sent a request with this `authorization` header value (`None`: no header).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for missing, malformed, wrong or expired credentials.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller> {
        if !self.enabled {
            return Ok(Caller::anonymous());
        }
        let header = authorization.ok_or_else(|| {
            Error::Unauthenticated(
                "this server requires credentials: log in with a user name and password \
                 (Basic) or send an API token (Bearer)"
                    .into(),
            )
        })?;
        let (scheme, value) = header.trim().split_once(' ').ok_or_else(|| {
            Error::Unauthenticated("the authorization header is not 'Basic …' or 'Bearer …'".into())
        })?;
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                // Some clients (Go's Flight client, so ADBC) leave out the padding.
                let decoded = STANDARD_INDIFFERENT
                    .decode(value.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        Error::Unauthenticated("Basic credentials are not base64 UTF-8".into())
                    })?;
                let (user, password) = decoded.split_once(':').ok_or_else(|| {
                    Error::Unauthenticated("Basic credentials are not 'user:password'".into())
                })?;
                self.login(user, password)
            }
            "bearer" => self.verify_token(value.trim()),
            other => Err(Error::Unauthenticated(format!(
                "unsupported authorization scheme '{other}'; use Basic or Bearer"
            ))),
        }
    }

    /// Checks a user's password.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for an unknown user or a wrong password (the message does
    /// not say which).
    pub fn login(&self, user: &str, password: &str) -> Result<Caller> {
        let key: [u8; 32] = Sha256::digest(format!("{user}:{password}").as_bytes()).into();
        let now = SystemTime::now();
        if let Ok(cache) = self.basic_cache.lock()
            && let Some((caller, at)) = cache.get(&key)
            && now.duration_since(*at).unwrap_or_default() < BASIC_CACHE_TTL
        {
            return Ok(caller.clone());
        }
        let refused = || Error::Unauthenticated("wrong user name or password".into());
        let entry = self.users.get(user).ok_or_else(refused)?;
        let hash = PasswordHash::new(&entry.password_hash).map_err(|_| refused())?;
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .map_err(|_| refused())?;
        let caller = Caller {
            name: entry.name.clone(),
            role: entry.role,
        };
        if let Ok(mut cache) = self.basic_cache.lock() {
            if cache.len() >= BASIC_CACHE_MAX {
                cache.clear();
            }
            cache.insert(key, (caller.clone(), now));
        }
        Ok(caller)
    }

    /// A signed bearer token for `caller`, valid for the configured time.
    pub fn issue(&self, caller: &Caller) -> String {
        let exp = SystemTime::now()
            .checked_add(self.ttl)
            .unwrap_or(SystemTime::now())
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: caller.name.clone(),
            role: caller.role,
            exp,
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signature = URL_SAFE_NO_PAD.encode(self.signer.sign(payload.as_bytes()));
        format!("{TOKEN_PREFIX}{payload}.{signature}")
    }

    fn verify_token(&self, token: &str) -> Result<Caller> {
        if let Some(rest) = token.strip_prefix(TOKEN_PREFIX) {
            let bad = || {
                Error::Unauthenticated(
                    "the bearer token is not valid here (bad signature: issued by another \
                     server?); log in again"
                        .into(),
                )
            };
            let (payload, signature) = rest.split_once('.').ok_or_else(bad)?;
            let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| bad())?;
            if !self.signer.verify(payload.as_bytes(), &signature) {
                return Err(bad());
            }
            let claims: Claims = URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(bad)?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            if claims.exp <= now {
                return Err(Error::Unauthenticated(
                    "the bearer token has expired; log in again".into(),
                ));
            }
            // A user removed from the config loses access even with a live token.
            if !self.users.contains_key(&claims.sub) {
                return Err(Error::Unauthenticated(format!(
                    "user '{}' no longer exists",
                    claims.sub
                )));
            }
            return Ok(Caller {
                name: claims.sub,
                role: claims.role,
            });
        }
        let digest = hex(&Sha256::digest(token.as_bytes()));
        match self.tokens.get(&digest) {
            Some((name, role)) => Ok(Caller {
                name: name.clone(),
                role: *role,
            }),
            None => Err(Error::Unauthenticated("unknown API token".into())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An argon2id PHC hash of `password`, for the config file.
///
/// # Errors
/// [`Error::Internal`] if hashing fails.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing the password: {e}")))
}

/// A new random API token and the hex SHA-256 the config file keeps.
pub fn new_api_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token = format!("tarn_{}", URL_SAFE_NO_PAD.encode(bytes));
    let digest = hex(&Sha256::digest(token.as_bytes()));
    (token, digest)
}

/// The caller the outer service authenticated (a reader when none was recorded, so a
/// path that skipped authentication cannot change anything).
pub(crate) fn caller<T>(request: &tonic::Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(|| Caller {
            name: "unauthenticated".into(),
            role: Role::Reader,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn config() -> (AuthConfig, String) {
        let (token, sha256) = new_api_token();
        let config = AuthConfig {
            token_ttl_secs: None,
            users: vec![
                UserConfig {
                    name: "alice".into(),
                    password_hash: hash_password("wonderland").unwrap(),
                    role: Role::Admin,
                },
                UserConfig {
                    name: "bob".into(),
                    password_hash: hash_password("builder").unwrap(),
                    role: Role::Reader,
                },
            ],
            tokens: vec![TokenConfig {
                name: "job".into(),
                sha256,
                role: Role::Reader,
            }],
        };
        (config, token)
    }

    #[test]
    fn basic_login_then_bearer_token() {
        let (config, api_token) = config();
        let auth = Authenticator::new(&config, Signer::random());
        let basic = format!("Basic {}", STANDARD.encode("bob:builder"));
        let bob = auth.authenticate(Some(&basic)).unwrap();
        assert_eq!(bob.role, Role::Reader);
        let token = auth.issue(&bob);
        assert_eq!(
            auth.authenticate(Some(&format!("Bearer {token}"))).unwrap(),
            bob
        );
        let job = auth
            .authenticate(Some(&format!("Bearer {api_token}")))
            .unwrap();
        assert_eq!(job.name, "job");
        assert!(job.require_admin("CREATE TABLE").is_err());
    }

    #[test]
    fn wrong_tampered_and_foreign_credentials_are_refused() {
        let (config, _) = config();
        let auth = Authenticator::new(&config, Signer::random());
        let wrong = format!("Basic {}", STANDARD.encode("alice:rabbit"));
        assert!(matches!(
            auth.authenticate(Some(&wrong)),
            Err(Error::Unauthenticated(_))
        ));
        assert!(auth.authenticate(None).is_err());
        let token = auth.issue(&Caller {
            name: "bob".into(),
            role: Role::Reader,
        });
        // Promote bob to admin in the claims, keep the signature: refused.
        let (payload, signature) = token
            .strip_prefix(TOKEN_PREFIX)
            .unwrap()
            .split_once('.')
            .unwrap();
        let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let forged = URL_SAFE_NO_PAD.encode(claims.replace("reader", "admin"));
        let forged = format!("Bearer {TOKEN_PREFIX}{forged}.{signature}");
        assert!(auth.authenticate(Some(&forged)).is_err());
        // Another server's secret: refused.
        let other = Authenticator::new(&config, Signer::random());
        assert!(
            other
                .authenticate(Some(&format!("Bearer {token}")))
                .is_err()
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        let (mut config, _) = config();
        config.token_ttl_secs = Some(0);
        let auth = Authenticator::new(&config, Signer::random());
        let token = auth.issue(&Caller {
            name: "alice".into(),
            role: Role::Admin,
        });
        let err = auth
            .authenticate(Some(&format!("Bearer {token}")))
            .unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[test]
    fn sealed_data_round_trips_and_tampering_is_caught() {
        let signer = Signer::random();
        let sealed = signer.seal(b"SELECT 1");
        assert_eq!(signer.open(&sealed), Some(&b"SELECT 1"[..]));
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert_eq!(signer.open(&tampered), None);
        assert_eq!(Signer::random().open(&sealed), None);
    }
}
