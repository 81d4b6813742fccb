//! Who may use the intake: bearer tokens for promotion reports and queries, and the HMAC key of
//! Flux's `generic-hmac` provider for Flux events.
//!
//! Both secrets are read from files, so that a Kubernetes Secret can be mounted, and re-read
//! every few seconds ([`Auth::spawn_reload`]): a rotated Secret takes effect without a restart.
//! A file that becomes unreadable keeps the last good secret (and says so in the log).
//!
//! Comparisons are constant-time: a presented token is hashed and compared with
//! [`subtle::ConstantTimeEq`] against the hash of every configured token; an HMAC signature is
//! checked with `Mac::verify_slice`. Nothing here logs or returns a secret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why a request was not let in. The messages never contain a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing credentials: send `Authorization: Bearer <token>`")]
    MissingToken,
    #[error("the bearer token is not valid")]
    InvalidToken,
    #[error("the agent has no bearer tokens configured (--token-file), so it accepts none")]
    NoTokens,
    #[error("missing `X-Signature: sha256=<hex>` (generic-hmac provider)")]
    MissingSignature,
    #[error("`X-Signature` must be `sha256=<hex>`")]
    MalformedSignature,
    #[error("the `X-Signature` HMAC does not match the body")]
    InvalidSignature,
}

impl AuthError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            AuthError::MissingToken | AuthError::MissingSignature => "missing_credentials",
            AuthError::InvalidToken
            | AuthError::NoTokens
            | AuthError::MalformedSignature
            | AuthError::InvalidSignature => "invalid_credentials",
        }
    }
}

/// A secret file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no {what}")]
    Empty { path: PathBuf, what: &'static str },
}

impl SecretFileError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            SecretFileError::Read { .. } => "unreadable",
            SecretFileError::Empty { .. } => "empty",
        }
    }
}

/// SHA-256 of each accepted token: equal-length values to compare in constant time, and no
/// token kept in memory as such.
#[derive(Default)]
struct Tokens(Vec<[u8; 32]>);

impl Tokens {
    /// One token a line; blank lines and lines starting with `#` are skipped; surrounding
    /// whitespace is not part of a token.
    fn parse(text: &str) -> Tokens {
        Tokens(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|t| Sha256::digest(t.as_bytes()).into())
                .collect(),
        )
    }

    fn accepts(&self, presented: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every configured token is compared, whichever matches.
        let mut ok = subtle::Choice::from(0);
        for t in &self.0 {
            ok |= t.ct_eq(&h);
        }
        ok.into()
    }
}

/// The HMAC key, with surrounding whitespace removed as Flux does with the Provider secret's
/// `token`.
struct HmacKey(Vec<u8>);

/// A secret loaded from a file, and what the file held when it was loaded.
struct Watched<T> {
    path: PathBuf,
    what: &'static str,
    parse: fn(&[u8]) -> Option<T>,
    current: RwLock<Arc<T>>,
    /// SHA-256 of the file content last loaded: a re-read that finds the same bytes changes
    /// nothing.
    loaded: RwLock<[u8; 32]>,
}

impl<T> Watched<T> {
    fn load(
        path: &Path,
        what: &'static str,
        parse: fn(&[u8]) -> Option<T>,
    ) -> Result<Watched<T>, SecretFileError> {
        let bytes = read(path)?;
        let value = parse(&bytes).ok_or_else(|| SecretFileError::Empty {
            path: path.to_path_buf(),
            what,
        })?;
        Ok(Watched {
            path: path.to_path_buf(),
            what,
            parse,
            current: RwLock::new(Arc::new(value)),
            loaded: RwLock::new(Sha256::digest(&bytes).into()),
        })
    }

    fn get(&self) -> Arc<T> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the file; `Ok(true)` when the secret changed.
    fn reload(&self) -> Result<bool, SecretFileError> {
        let bytes = read(&self.path)?;
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if self.loaded.read().is_ok_and(|h| *h == hash) {
            return Ok(false);
        }
        let value = (self.parse)(&bytes).ok_or_else(|| SecretFileError::Empty {
            path: self.path.clone(),
            what: self.what,
        })?;
        if let Ok(mut c) = self.current.write() {
            *c = Arc::new(value);
        }
        if let Ok(mut h) = self.loaded.write() {
            *h = hash;
        }
        Ok(true)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    std::fs::read(path).map_err(|source| SecretFileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_tokens(bytes: &[u8]) -> Option<Tokens> {
    let t = Tokens::parse(&String::from_utf8_lossy(bytes));
    (!t.0.is_empty()).then_some(t)
}

fn parse_key(bytes: &[u8]) -> Option<HmacKey> {
    let key = bytes.trim_ascii();
    (!key.is_empty()).then(|| HmacKey(key.to_vec()))
}

enum Source<T> {
    None,
    Fixed(Arc<T>),
    File(Watched<T>),
}

impl<T> Source<T> {
    fn get(&self) -> Option<Arc<T>> {
        match self {
            Source::None => None,
            Source::Fixed(t) => Some(Arc::clone(t)),
            Source::File(w) => Some(w.get()),
        }
    }
}

/// The intake's credentials. Shared (`Arc`) by the HTTP and gRPC servers; checks never block.
pub struct Auth {
    /// `--insecure-no-auth`: every request is let in.
    disabled: bool,
    tokens: Source<Tokens>,
    hmac: Source<HmacKey>,
}

impl Auth {
    /// No authentication at all (`--insecure-no-auth`).
    pub fn disabled() -> Auth {
        Auth {
            disabled: true,
            tokens: Source::None,
            hmac: Source::None,
        }
    }

    /// Reads the token file (one token a line) and the HMAC key file. A file that is given must
    /// exist and hold a secret. With no token file, every report and query is refused.
    pub fn from_files(
        token_file: Option<&Path>,
        hmac_key_file: Option<&Path>,
    ) -> Result<Auth, SecretFileError> {
        let tokens = match token_file {
            Some(p) => Source::File(Watched::load(p, "bearer token", parse_tokens)?),
            None => Source::None,
        };
        let hmac = match hmac_key_file {
            Some(p) => Source::File(Watched::load(p, "HMAC key", parse_key)?),
            None => Source::None,
        };
        Ok(Auth {
            disabled: false,
            tokens,
            hmac,
        })
    }

    /// Fixed secrets (tests, benchmarks, embedding).
    pub fn with_secrets(tokens: &[&str], hmac_key: Option<&[u8]>) -> Auth {
        let t = Tokens::parse(&tokens.join("\n"));
        Auth {
            disabled: false,
            tokens: if t.0.is_empty() {
                Source::None
            } else {
                Source::Fixed(Arc::new(t))
            },
            hmac: match hmac_key.and_then(parse_key) {
                Some(k) => Source::Fixed(Arc::new(k)),
                None => Source::None,
            },
        }
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Whether Flux events are checked by HMAC signature (and so need the body first).
    pub fn flux_uses_hmac(&self) -> bool {
        !self.disabled && !matches!(self.hmac, Source::None)
    }

    /// Checks an `Authorization` header value (`Bearer <token>`, scheme case-insensitive).
    pub fn check_bearer(&self, authorization: Option<&[u8]>) -> Result<(), AuthError> {
        if self.disabled {
            return Ok(());
        }
        let Some(tokens) = self.tokens.get() else {
            return Err(AuthError::NoTokens);
        };
        let value = authorization.ok_or(AuthError::MissingToken)?;
        let value = std::str::from_utf8(value).map_err(|_| AuthError::InvalidToken)?;
        let (scheme, token) = value
            .trim()
            .split_once(' ')
            .ok_or(AuthError::InvalidToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::InvalidToken);
        }
        let token = token.trim();
        if token.is_empty() || !tokens.accepts(token) {
            return Err(AuthError::InvalidToken);
        }
        Ok(())
    }

    /// Checks a Flux event: the `X-Signature` HMAC of the body when a key is configured
    /// (`generic-hmac` provider), else the bearer token (`generic` provider with an
    /// `Authorization` header in its secret's `headers`).
    pub fn check_flux(
        &self,
        authorization: Option<&[u8]>,
        signature: Option<&[u8]>,
        body: &[u8],
    ) -> Result<(), AuthError> {
        if self.disabled {
            return Ok(());
        }
        let Some(key) = self.hmac.get() else {
            return self.check_bearer(authorization);
        };
        let sig = signature.ok_or(AuthError::MissingSignature)?;
        let sig = std::str::from_utf8(sig).map_err(|_| AuthError::MalformedSignature)?;
        let hex_sig = sig
            .trim()
            .strip_prefix("sha256=")
            .ok_or(AuthError::MalformedSignature)?;
        let expected = hex::decode(hex_sig).map_err(|_| AuthError::MalformedSignature)?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&key.0).map_err(|_| AuthError::InvalidSignature)?;
        mac.update(body);
        mac.verify_slice(&expected)
            .map_err(|_| AuthError::InvalidSignature)
    }

    /// Re-reads the secret files every `every` until `stop`; a changed file takes effect at
    /// once. Does nothing for fixed secrets or with auth disabled.
    pub fn spawn_reload(
        self: &Arc<Self>,
        every: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let auth = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            // The last failure of each file, so that a lasting problem is logged once.
            let mut failing: [Option<&'static str>; 2] = [None, None];
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Source::File(w) = &auth.tokens {
                    reload_logged(w, &mut failing[0], || w.get().0.len());
                }
                if let Source::File(w) = &auth.hmac {
                    reload_logged(w, &mut failing[1], || 1);
                }
            }
        })
    }
}

fn reload_logged<T>(w: &Watched<T>, failing: &mut Option<&'static str>, count: impl Fn() -> usize) {
    match w.reload() {
        Ok(changed) => {
            if changed {
                info!(message = "Reloaded a secret file.", what = w.what, path = %w.path.display(), entries = count());
            }
            *failing = None;
        }
        Err(error) => {
            if *failing != Some(error.metric_label()) {
                warn!(message = "Cannot reload a secret file; keeping the last good one.", what = w.what, %error);
            }
            *failing = Some(error.metric_label());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let auth = Auth::with_secrets(&["s3cret", "other"], None);
        assert_eq!(auth.check_bearer(Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(auth.check_bearer(Some(b"bearer  other ")), Ok(()));
        assert_eq!(auth.check_bearer(None), Err(AuthError::MissingToken));
        assert_eq!(
            auth.check_bearer(Some(b"Bearer s3cre")),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            auth.check_bearer(Some(b"Basic s3cret")),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            auth.check_bearer(Some(b"Bearer ")),
            Err(AuthError::InvalidToken)
        );
        let none = Auth::with_secrets(&[], None);
        assert_eq!(
            none.check_bearer(Some(b"Bearer x")),
            Err(AuthError::NoTokens)
        );
        assert_eq!(Auth::disabled().check_bearer(None), Ok(()));
    }

    #[test]
    fn token_file_skips_comments_and_blank_lines() {
        let t = Tokens::parse("# ci tokens\n\n  alpha  \nbeta\n");
        assert_eq!(t.0.len(), 2);
        assert!(t.accepts("alpha"));
        assert!(!t.accepts("# ci tokens"));
    }

    #[test]
    fn hmac_key_is_trimmed_like_flux_does() {
        let k = parse_key(b"  key\n").expect("key");
        assert_eq!(k.0, b"key");
        assert!(parse_key(b" \n").is_none());
    }

    #[test]
    fn reload_picks_up_a_changed_file_and_keeps_the_last_good_one() {
        let dir = std::env::temp_dir().join(format!("fluxtrace-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("tokens");
        std::fs::write(&path, "first\n").expect("write");
        let auth = Auth::from_files(Some(&path), None).expect("load");
        assert_eq!(auth.check_bearer(Some(b"Bearer first")), Ok(()));
        let Source::File(w) = &auth.tokens else {
            panic!("a file source")
        };
        assert_eq!(w.reload().ok(), Some(false));
        std::fs::write(&path, "second\n").expect("write");
        assert_eq!(w.reload().ok(), Some(true));
        assert_eq!(
            auth.check_bearer(Some(b"Bearer first")),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(auth.check_bearer(Some(b"Bearer second")), Ok(()));
        std::fs::write(&path, "\n").expect("write");
        assert!(w.reload().is_err());
        std::fs::remove_file(&path).expect("remove");
        assert!(w.reload().is_err());
        assert_eq!(auth.check_bearer(Some(b"Bearer second")), Ok(()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
