//! `jwksUri`: key sets fetched over HTTP or HTTPS in the background.
//!
//! A [`JwksRegistry`] holds one [`RemoteJwks`] per URI, shared by every
//! rule naming it. Each has a task that fetches the set, then refreshes it
//! every [`FetchConfig::refresh`] (Envoy's `cache_duration`, 5 minutes
//! for Istio). A failed fetch is retried sooner, backing off from
//! [`FetchConfig::retry_initial`], and the last good keys stay in use
//! meanwhile. Requests only read the keys in hand: they never wait for a
//! fetch (Envoy, without `async_fetch`, holds the first request until the
//! fetch ends).
//!
//! The task stops when its `RemoteJwks` is dropped (no rule uses the URI
//! any more) or when the registry is dropped.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    pin::pin,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Empty, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    runtime::Handle,
    sync::watch,
};
use tokio_rustls::TlsConnector;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Jwks, JwksError};

/// How `jwksUri`s are fetched.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// PEM bundle of the CAs trusted for `https://` URIs. Read at each
    /// fetch, so an updated bundle is picked up.
    pub ca_bundle: PathBuf,
    /// How long fetched keys are used before they are fetched again
    /// (Envoy's `cache_duration`; Istio sets 5 minutes).
    pub refresh: Duration,
    /// The wait before retrying a failed fetch; it doubles at each failure
    /// up to `refresh`.
    pub retry_initial: Duration,
    /// A fetch's deadline when the rule gives no `timeout` (Istio: 5 s).
    pub timeout: Duration,
    /// The largest key set accepted, in bytes.
    pub max_body: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            ca_bundle: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            refresh: Duration::from_secs(5 * 60),
            retry_initial: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            max_body: 1024 * 1024,
        }
    }
}

/// Why fetching a key set failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("jwksUri `{uri}` is not usable: {reason}")]
    Uri { uri: String, reason: &'static str },
    #[error("connecting to {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("reading the CA bundle {path}: {source}")]
    CaBundle {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CA bundle {path} holds no usable certificate")]
    CaBundleEmpty { path: PathBuf },
    #[error("TLS settings for fetching JWKS: {0}")]
    Tls(#[source] rustls::Error),
    #[error("TLS handshake with {authority}: {source}")]
    Handshake {
        authority: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange with {authority}: {source}")]
    Http {
        authority: String,
        source: hyper::Error,
    },
    #[error("reading the answer of {uri}: {source}")]
    Body {
        uri: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{uri} answered {status}; a key set needs 200")]
    Status { uri: String, status: StatusCode },
    #[error("{uri} sent more than {limit} bytes")]
    TooLarge { uri: String, limit: usize },
    #[error("no complete answer from {uri} within {timeout:?}")]
    Timeout { uri: String, timeout: Duration },
    #[error("{uri} served an unusable key set: {source}")]
    Jwks { uri: String, source: JwksError },
}

/// What is known of a remote key set.
#[derive(Debug, Clone, Default)]
pub struct JwksState {
    /// The last keys fetched successfully; `None` until the first success.
    pub keys: Option<Arc<Jwks>>,
    /// Fetches finished, good or bad.
    pub attempts: u64,
    /// Fetches that failed.
    pub failures: u64,
    /// Why the last fetch failed; `None` after a success.
    pub last_error: Option<String>,
    /// When the last fetch succeeded.
    pub last_success: Option<SystemTime>,
}

/// A key set fetched from a `jwksUri`, kept fresh by a background task.
#[derive(Debug)]
pub struct RemoteJwks {
    uri: String,
    state: watch::Receiver<JwksState>,
    timeout_ms: Arc<AtomicU64>,
    _stop: DropGuard,
}

impl RemoteJwks {
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The keys in hand: `None` until a fetch has succeeded.
    pub fn keys(&self) -> Option<Arc<Jwks>> {
        self.state.borrow().keys.clone()
    }

    pub fn state(&self) -> JwksState {
        self.state.borrow().clone()
    }

    /// Follows the state; the channel closes when the fetch task stops.
    pub fn subscribe(&self) -> watch::Receiver<JwksState> {
        self.state.clone()
    }
}

/// The remote key sets in use, one fetch task per URI.
#[derive(Debug)]
pub struct JwksRegistry {
    config: Arc<FetchConfig>,
    runtime: Handle,
    stop: CancellationToken,
    entries: Mutex<HashMap<String, Weak<RemoteJwks>>>,
}

impl JwksRegistry {
    /// A registry whose fetch tasks run on the current Tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, like `tokio::spawn`.
    pub fn new(config: FetchConfig) -> JwksRegistry {
        JwksRegistry {
            config: Arc::new(config),
            runtime: Handle::current(),
            stop: CancellationToken::new(),
            entries: Mutex::default(),
        }
    }

    /// The key set at `uri`, fetched with `timeout` (the rule's, or the
    /// configured default). A URI already in use returns the same set; its
    /// timeout becomes `timeout` if one is given.
    pub fn get(&self, uri: &str, timeout: Option<Duration>) -> Result<Arc<RemoteJwks>, FetchError> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|_, remote| remote.strong_count() > 0);
        if let Some(remote) = entries.get(uri).and_then(Weak::upgrade) {
            if let Some(timeout) = timeout {
                remote.timeout_ms.store(millis(timeout), Ordering::Relaxed);
            }
            return Ok(remote);
        }
        let target = Target::parse(uri)?;
        let timeout_ms = Arc::new(AtomicU64::new(millis(
            timeout.unwrap_or(self.config.timeout),
        )));
        let (state_tx, state) = watch::channel(JwksState::default());
        let stop = self.stop.child_token();
        let remote = Arc::new(RemoteJwks {
            uri: uri.to_string(),
            state,
            timeout_ms: timeout_ms.clone(),
            _stop: stop.clone().drop_guard(),
        });
        self.runtime.spawn(refresh_loop(
            target,
            self.config.clone(),
            timeout_ms,
            state_tx,
            stop,
        ));
        entries.insert(uri.to_string(), Arc::downgrade(&remote));
        Ok(remote)
    }
}

impl Drop for JwksRegistry {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Fetches, then refetches after `refresh`, or sooner after a failure.
async fn refresh_loop(
    target: Target,
    config: Arc<FetchConfig>,
    timeout_ms: Arc<AtomicU64>,
    state: watch::Sender<JwksState>,
    stop: CancellationToken,
) {
    let mut backoff = config.retry_initial;
    loop {
        let timeout = Duration::from_millis(timeout_ms.load(Ordering::Relaxed));
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            result = fetch(&target, &config, timeout) => result,
        };
        let wait = match result {
            Ok(jwks) => {
                let changed = state.borrow().keys.as_deref() != Some(&jwks);
                if changed {
                    tracing::info!(
                        uri = %target.uri,
                        keys = jwks.len(),
                        skipped = ?jwks.skipped(),
                        "JWKS fetched; keys changed"
                    );
                }
                state.send_modify(|s| {
                    if changed {
                        s.keys = Some(Arc::new(jwks));
                    }
                    s.attempts += 1;
                    s.last_error = None;
                    s.last_success = Some(SystemTime::now());
                });
                backoff = config.retry_initial;
                config.refresh
            }
            Err(error) => {
                tracing::warn!(
                    uri = %target.uri,
                    %error,
                    retry_in = ?backoff,
                    keeping_last_keys = state.borrow().keys.is_some(),
                    "JWKS fetch failed"
                );
                state.send_modify(|s| {
                    s.attempts += 1;
                    s.failures += 1;
                    s.last_error = Some(error.to_string());
                });
                let wait = backoff.min(config.refresh);
                backoff = backoff.saturating_mul(2).min(config.refresh);
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// A `jwksUri` taken apart.
#[derive(Debug, Clone)]
struct Target {
    uri: String,
    tls: bool,
    /// Host to connect to and, for TLS, the server name (no brackets).
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    path_and_query: String,
}

impl Target {
    fn parse(raw: &str) -> Result<Target, FetchError> {
        let error = |reason| FetchError::Uri {
            uri: raw.to_string(),
            reason,
        };
        let uri: Uri = raw.parse().map_err(|_| error("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(error("the scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| error("no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(error("no host"));
        }
        if tls && ServerName::try_from(host.to_string()).is_err() {
            return Err(error("the host is not a valid TLS server name"));
        }
        let authority_no_userinfo = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, rest)| rest);
        Ok(Target {
            uri: raw.to_string(),
            tls,
            host: host.to_string(),
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: authority_no_userinfo.to_string(),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        })
    }
}

/// One fetch, as a whole bounded by `timeout`.
async fn fetch(
    target: &Target,
    config: &FetchConfig,
    timeout: Duration,
) -> Result<Jwks, FetchError> {
    let body = tokio::time::timeout(timeout, get(target, config))
        .await
        .map_err(|_| FetchError::Timeout {
            uri: target.uri.clone(),
            timeout,
        })??;
    Jwks::parse(&body).map_err(|source| FetchError::Jwks {
        uri: target.uri.clone(),
        source,
    })
}

async fn get(target: &Target, config: &FetchConfig) -> Result<Bytes, FetchError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| FetchError::Connect {
            authority: target.authority.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    if !target.tls {
        return exchange(TokioIo::new(tcp), target, config.max_body).await;
    }
    let connector = tls_connector(&config.ca_bundle).await?;
    let name = ServerName::try_from(target.host.clone()).map_err(|_| FetchError::Uri {
        uri: target.uri.clone(),
        reason: "the host is not a valid TLS server name",
    })?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|source| FetchError::Handshake {
            authority: target.authority.clone(),
            source,
        })?;
    exchange(TokioIo::new(tls), target, config.max_body).await
}

async fn tls_connector(ca_bundle: &Path) -> Result<TlsConnector, FetchError> {
    let pem = tokio::fs::read(ca_bundle)
        .await
        .map_err(|source| FetchError::CaBundle {
            path: ca_bundle.to_path_buf(),
            source,
        })?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
        // A bundle may hold certificates webpki refuses; the others count.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(FetchError::CaBundleEmpty {
            path: ca_bundle.to_path_buf(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(FetchError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// `GET` over an established connection, HTTP/1.1.
async fn exchange<T>(io: TokioIo<T>, target: &Target, limit: usize) -> Result<Bytes, FetchError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_error = |source| FetchError::Http {
        authority: target.authority.clone(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(http_error)?;
    let request = Request::get(target.path_and_query.as_str())
        .header(header::HOST, target.authority.as_str())
        .header(header::USER_AGENT, "weft-agent")
        .header(header::ACCEPT, "application/json")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|_| FetchError::Uri {
            uri: target.uri.clone(),
            reason: "the path cannot be requested",
        })?;
    let answer = async {
        let response = sender.send_request(request).await.map_err(http_error)?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status {
                uri: target.uri.clone(),
                status: response.status(),
            });
        }
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|source| {
                if source.is::<LengthLimitError>() {
                    FetchError::TooLarge {
                        uri: target.uri.clone(),
                        limit,
                    }
                } else {
                    FetchError::Body {
                        uri: target.uri.clone(),
                        source,
                    }
                }
            })?;
        Ok(body.to_bytes())
    };
    let mut answer = pin!(answer);
    let mut connection = pin!(connection);
    tokio::select! {
        biased;
        result = &mut answer => result,
        // The connection ended: a complete answer is still in the body
        // channel, an incomplete one fails the request.
        ended = &mut connection => match ended {
            Ok(()) => answer.await,
            Err(source) => Err(http_error(source)),
        },
    }
}
