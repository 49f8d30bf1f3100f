//! Tests of JWT authentication: tokens made here with ring, requests run
//! through [`Authenticator::authenticate`], and remote key sets served by
//! a loopback HTTP(S) server.

mod jwks;
mod keys;
mod locations;
mod remote;
mod verify;

use std::sync::Arc;

use http::request::Parts;

use super::{Authenticated, Authenticator, AuthnError, JwtRule, KeySource};
use keys::{ISSUER, Signer, now};

/// The head of a GET of `uri` with these headers.
fn request(uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::get(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

/// A request carrying `token` as `Authorization: Bearer`.
fn bearer(token: &str) -> Parts {
    request(
        "http://svc.demo/path",
        &[("authorization", &format!("Bearer {token}"))],
    )
}

/// A rule for [`ISSUER`] trusting `signer`'s key, with Istio's defaults.
fn rule(signer: &Signer) -> JwtRule {
    JwtRule::new(ISSUER, KeySource::Inline(Arc::new(signer.jwks())))
}

/// Runs `rule` over a request bearing `token`.
fn check(
    authn: &Authenticator,
    rule: &JwtRule,
    token: &str,
) -> Result<Option<Arc<Authenticated>>, AuthnError> {
    authn.authenticate(&[Arc::new(rule.clone())], &mut bearer(token), now())
}
