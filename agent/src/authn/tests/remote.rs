//! `jwksUri`: key sets served by a loopback HTTP(S) server that can be
//! told to rotate keys, fail, send garbage, send too much, or hang.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_rustls::TlsAcceptor;

use super::{
    bearer,
    keys::{ISSUER, Signer, claims, jwks_json, now},
};
use crate::authn::{
    Authenticator, AuthnError, FetchConfig, FetchError, JwksRegistry, JwksState, JwtRule,
    KeySource, RemoteJwks,
};

/// What the server answers.
#[derive(Clone)]
enum Serve {
    Jwks(String),
    Status(u16),
    Garbage,
    Huge,
    Hang,
}

struct JwksServer {
    addr: SocketAddr,
    tls: bool,
    serve: Arc<Mutex<Serve>>,
    requests: Arc<AtomicU64>,
    /// The CA that signed the server's certificate, as a PEM file.
    ca_bundle: tempfile::NamedTempFile,
    task: JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(tls: bool, serve: Serve) -> JwksServer {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let ca_bundle = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca_bundle.path(), ca.pem()).unwrap();

        let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(server_config));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = Arc::new(Mutex::new(serve));
        let requests = Arc::new(AtomicU64::new(0));
        let (serve_, requests_) = (serve.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (serve, requests, acceptor) =
                    (serve_.clone(), requests_.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        requests.fetch_add(1, Ordering::SeqCst);
                        let serve = serve.lock().unwrap().clone();
                        async move { Ok::<_, Infallible>(answer(serve).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    if tls {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    } else {
                        let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                    }
                });
            }
        });
        JwksServer {
            addr,
            tls,
            serve,
            requests,
            ca_bundle,
            task,
        }
    }

    fn uri(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/.well-known/jwks.json", self.addr)
    }

    fn set(&self, serve: Serve) {
        *self.serve.lock().unwrap() = serve;
    }

    /// Fetching settings for the tests: quick refreshes and retries.
    fn config(&self) -> FetchConfig {
        FetchConfig {
            ca_bundle: self.ca_bundle.path().to_path_buf(),
            refresh: Duration::from_millis(200),
            retry_initial: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
            max_body: 64 * 1024,
        }
    }
}

async fn answer(serve: Serve) -> Response<Full<Bytes>> {
    let (status, body) = match serve {
        Serve::Jwks(body) => (200, body),
        Serve::Status(status) => (status, "unavailable".into()),
        Serve::Garbage => (200, "<html>not a key set".into()),
        Serve::Huge => (
            200,
            format!("{{\"keys\": [], \"pad\": \"{}\"}}", "x".repeat(1 << 20)),
        ),
        Serve::Hang => std::future::pending().await,
    };
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Waits (at most 10 s) for the key set's state to satisfy `done`.
async fn wait_for(remote: &RemoteJwks, what: &str, done: impl FnMut(&JwksState) -> bool) {
    let mut state = remote.subscribe();
    let waited = tokio::time::timeout(Duration::from_secs(10), state.wait_for(done)).await;
    let last = remote.state();
    assert!(
        matches!(waited, Ok(Ok(_))),
        "waiting for {what}: last state {last:?}"
    );
}

fn remote_rule(remote: &Arc<RemoteJwks>) -> Arc<JwtRule> {
    Arc::new(JwtRule::new(ISSUER, KeySource::Remote(remote.clone())))
}

#[tokio::test]
async fn https_keys_are_fetched_and_rotation_is_picked_up() {
    let (old, new) = (Signer::es256().kid(Some("old")), Signer::rsa("RS256"));
    let server = JwksServer::start(true, Serve::Jwks(jwks_json(&[&old]))).await;
    let registry = JwksRegistry::new(server.config());
    let remote = registry.get(&server.uri(), None).unwrap();
    let rules = [remote_rule(&remote)];
    let authn = Authenticator::default();
    wait_for(&remote, "the first fetch", |s| s.keys.is_some()).await;
    let old_token = old.token(&claims());
    let result = authn.authenticate(&rules, &mut bearer(&old_token), now());
    assert_eq!(result.unwrap().unwrap().subject, "alice");

    // The issuer rotates: the new key is served, the old one withdrawn.
    server.set(Serve::Jwks(jwks_json(&[&new])));
    wait_for(&remote, "the rotated keys", |s| {
        s.keys.as_ref().is_some_and(|k| **k == new.jwks())
    })
    .await;
    let new_token = new.token(&claims());
    assert!(
        authn
            .authenticate(&rules, &mut bearer(&new_token), now())
            .unwrap()
            .is_some()
    );
    // The old token was cached, but its key is gone.
    assert_eq!(
        authn.authenticate(&rules, &mut bearer(&old_token), now()),
        Err(AuthnError::KidAlgMismatch)
    );

    // Many rules naming the URI share one fetcher.
    let same = registry
        .get(&server.uri(), Some(Duration::from_secs(1)))
        .unwrap();
    assert!(Arc::ptr_eq(&same, &remote));
}

#[tokio::test]
async fn the_last_good_keys_are_kept_while_fetches_fail() {
    let signer = Signer::eddsa();
    let server = JwksServer::start(true, Serve::Jwks(jwks_json(&[&signer]))).await;
    let registry = JwksRegistry::new(server.config());
    let remote = registry
        .get(&server.uri(), Some(Duration::from_millis(300)))
        .unwrap();
    let rules = [remote_rule(&remote)];
    let authn = Authenticator::new(0, Duration::from_secs(60));
    wait_for(&remote, "the first fetch", |s| s.keys.is_some()).await;
    let token = signer.token(&claims());

    for (serve, error) in [
        (Serve::Garbage, "unusable key set"),
        (Serve::Status(500), "500"),
        (Serve::Huge, "more than 65536 bytes"),
        (Serve::Hang, "no complete answer"),
        (Serve::Jwks(r#"{"keys": []}"#.into()), "no usable key"),
    ] {
        let failures = remote.state().failures;
        server.set(serve);
        wait_for(&remote, error, |s| {
            s.failures > failures && s.last_error.as_deref().is_some_and(|e| e.contains(error))
        })
        .await;
        assert!(
            authn
                .authenticate(&rules, &mut bearer(&token), now())
                .unwrap()
                .is_some(),
            "after {error}"
        );
    }
    // And a good answer again clears the error.
    server.set(Serve::Jwks(jwks_json(&[&signer])));
    wait_for(&remote, "recovery", |s| s.last_error.is_none()).await;
    assert_eq!(authn.signature_checks(), 5);
}

#[tokio::test]
async fn before_the_first_fetch_tokens_fail_and_requests_without_pass() {
    let signer = Signer::es384();
    let server = JwksServer::start(false, Serve::Status(503)).await;
    let registry = JwksRegistry::new(server.config());
    // Plain http:// is allowed, as in Istio.
    let remote = registry.get(&server.uri(), None).unwrap();
    let rules = [remote_rule(&remote)];
    let authn = Authenticator::default();
    wait_for(&remote, "a failed fetch", |s| s.failures >= 2).await;
    let token = signer.token(&claims());
    let refused = authn
        .authenticate(&rules, &mut bearer(&token), now())
        .unwrap_err();
    assert_eq!(refused, AuthnError::JwksFetchFail);
    assert_eq!(refused.to_string(), "Jwks remote fetch is failed");
    let mut no_token = super::request("http://svc/", &[]);
    assert_eq!(authn.authenticate(&rules, &mut no_token, now()), Ok(None));

    server.set(Serve::Jwks(jwks_json(&[&signer])));
    wait_for(&remote, "the keys", |s| s.keys.is_some()).await;
    assert!(
        authn
            .authenticate(&rules, &mut bearer(&token), now())
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn an_untrusted_server_gives_no_keys() {
    let server = JwksServer::start(true, Serve::Jwks(jwks_json(&[&Signer::es256()]))).await;
    let other = JwksServer::start(true, Serve::Status(200)).await;
    // Trusting the other server's CA only.
    let registry = JwksRegistry::new(other.config());
    let remote = registry.get(&server.uri(), None).unwrap();
    wait_for(&remote, "a refused handshake", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("TLS handshake"))
    })
    .await;
    assert!(remote.keys().is_none());
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);

    let mut config = server.config();
    config.ca_bundle = "/nonexistent/ca.pem".into();
    let registry = JwksRegistry::new(config);
    let remote = registry.get(&server.uri(), None).unwrap();
    wait_for(&remote, "a missing CA bundle", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("reading the CA bundle"))
    })
    .await;
}

#[tokio::test]
async fn fetch_tasks_stop_with_their_handle_and_registry() {
    let server = JwksServer::start(false, Serve::Jwks(jwks_json(&[&Signer::es256()]))).await;
    let registry = JwksRegistry::new(server.config());
    let remote = registry.get(&server.uri(), None).unwrap();
    wait_for(&remote, "the first fetch", |s| s.keys.is_some()).await;
    let state = remote.subscribe();
    drop(remote);
    closes(state).await;
    // A new handle for the URI starts a new fetcher.
    let again = registry.get(&server.uri(), None).unwrap();
    wait_for(&again, "the first fetch", |s| s.keys.is_some()).await;
    let state = again.subscribe();
    drop(registry);
    closes(state).await;
    // The keys fetched stay usable.
    assert!(again.keys().is_some());
}

/// Waits (at most 10 s) until the fetch task behind `state` has stopped.
async fn closes(mut state: watch::Receiver<JwksState>) {
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        while state.changed().await.is_ok() {}
    })
    .await;
    assert!(stopped.is_ok(), "the fetch task did not stop");
}

#[tokio::test]
async fn unusable_uris_are_refused() {
    let registry = JwksRegistry::new(FetchConfig::default());
    for uri in [
        "ftp://keys.example.com/jwks",
        "/jwks.json",
        "https://",
        "not a uri",
    ] {
        let error = registry.get(uri, None).unwrap_err();
        assert!(matches!(error, FetchError::Uri { .. }), "{uri}: {error}");
        assert!(error.to_string().contains(uri), "{error}");
    }
}
