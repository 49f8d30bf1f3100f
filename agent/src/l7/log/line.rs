//! A request's line (method, target, version) as the access log and the
//! span read it.

use http::{HeaderValue, Method, Request, Uri, Version};

/// A request's method, target and version, kept for its line and its
/// span: shared with the request, not copied (a URI's and a header's
/// bytes are reference-counted).
pub(super) struct RequestLine {
    pub(super) method: Method,
    pub(super) uri: Uri,
    /// The `host` header, when the URI has no authority (HTTP/1.1).
    pub(super) host: Option<HeaderValue>,
    pub(super) version: Version,
}

impl RequestLine {
    pub(super) fn of<B>(request: &Request<B>) -> RequestLine {
        let uri = request.uri();
        RequestLine {
            method: request.method().clone(),
            host: match uri.authority() {
                Some(_) => None,
                None => request.headers().get(http::header::HOST).cloned(),
            },
            uri: uri.clone(),
            version: request.version(),
        }
    }

    /// The URI's authority, else the `host` header.
    pub(super) fn authority(&self) -> &str {
        match self.uri.authority() {
            Some(authority) => authority.as_str(),
            None => self
                .host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or(""),
        }
    }

    /// The path with its query.
    pub(super) fn path(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    /// Replaces the authority (left as it is if `authority` is not a
    /// header value).
    pub(super) fn set_authority(&mut self, authority: &str) {
        if self.authority() == authority {
            return;
        }
        if let Ok(host) = HeaderValue::from_str(authority) {
            // The URI's own authority would win over it.
            if self.uri.authority().is_some()
                && let Some(path) = self.uri.path_and_query()
                && let Ok(uri) = Uri::try_from(path.as_str())
            {
                self.uri = uri;
            }
            self.host = Some(host);
        }
    }

    /// Replaces the path and query (left as they are if `path_and_query`
    /// is not one).
    pub(super) fn set_path(&mut self, path_and_query: &str) {
        if let Ok(uri) = crate::l7::inbound::with_path(&self.uri, path_and_query) {
            self.uri = uri;
        }
    }
}

/// `%PROTOCOL%`.
pub(super) fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_authority_replaces_the_host_or_the_uris() {
        let http1 = Request::get("/a?b=1")
            .header(http::header::HOST, "api:80")
            .body(())
            .unwrap();
        let mut line = RequestLine::of(&http1);
        line.set_authority("api.internal");
        line.set_path("/x?y=2");
        assert_eq!((line.authority(), line.path()), ("api.internal", "/x?y=2"));
        let http2 = Request::get("http://api:80/a?b=1").body(()).unwrap();
        let mut line = RequestLine::of(&http2);
        assert_eq!(line.authority(), "api:80");
        line.set_authority("api.internal");
        assert_eq!((line.authority(), line.path()), ("api.internal", "/a?b=1"));
        // Not a header value: left as it was.
        line.set_authority("bad\nhost");
        assert_eq!(line.authority(), "api.internal");
    }
}
