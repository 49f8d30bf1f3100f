//! Who agents are. Node bootstrap tokens:
//! `<node>.<hex(HMAC-SHA256(secret, "weft-node:" + node))>`; in
//! Kubernetes mode also service-account tokens ([`token_review`]); both
//! checked before every call by [`layer::AuthLayer`].
//!
//! The secret is 32 random bytes in `<state-dir>/bootstrap-secret`, created
//! (mode 0600) by whichever of `serve` and `bootstrap-token` runs first.
//! Every gRPC call carries `authorization: Bearer <token>`; the node name
//! it proves is what the CA authorizes against.

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use ring::{hmac, rand::SecureRandom};

mod layer;
pub mod token_review;

pub use layer::{AuthLayer, Authenticator};

/// File name of the secret inside the state directory.
pub const SECRET_FILE: &str = "bootstrap-secret";
const SECRET_LEN: usize = 32;
const MAC_PREFIX: &[u8] = b"weft-node:";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot {action} the bootstrap secret {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the bootstrap secret {} has {len} bytes, expected {SECRET_LEN}; delete it to make a new one (every node's token changes)", path.display())]
    BadSecret { path: PathBuf, len: usize },
    #[error("no randomness available to create the bootstrap secret")]
    Random,
    #[error("invalid node name `{0}`: it must be non-empty, printable ASCII, without spaces")]
    BadNodeName(String),
}

/// The secret that bootstrap tokens are derived from.
pub struct BootstrapSecret {
    key: hmac::Key,
}

impl std::fmt::Debug for BootstrapSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BootstrapSecret(..)")
    }
}

/// The node a valid token was issued to; put in each authenticated
/// request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedNode(pub String);

impl BootstrapSecret {
    /// Reads `<state_dir>/bootstrap-secret`, creating it if missing.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, AuthError> {
        let path = state_dir.join(SECRET_FILE);
        let io = |action| {
            let path = path.clone();
            move |source| AuthError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(state_dir).map_err(io("create the directory of"))?;
        if !path.exists() {
            let mut secret = [0u8; SECRET_LEN];
            ring::rand::SystemRandom::new()
                .fill(&mut secret)
                .map_err(|_| AuthError::Random)?;
            // Write a temporary file, then link it into place: a
            // concurrent reader never sees a half-written secret, and a
            // concurrent creator loses the race cleanly.
            let tmp = state_dir.join(format!(".{SECRET_FILE}.{}", std::process::id()));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create"))?;
            file.write_all(&secret)
                .and_then(|()| file.sync_all())
                .map_err(io("write"))?;
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => tracing::info!(path = %path.display(), "created the bootstrap secret"),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(io("create")(err)),
            }
        }
        let secret = std::fs::read(&path).map_err(io("read"))?;
        if secret.len() != SECRET_LEN {
            return Err(AuthError::BadSecret {
                path,
                len: secret.len(),
            });
        }
        Ok(Self::from_bytes(&secret))
    }

    pub fn from_bytes(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The bootstrap token of `node`.
    pub fn token_for(&self, node: &str) -> Result<String, AuthError> {
        if !valid_node_name(node) {
            return Err(AuthError::BadNodeName(node.to_string()));
        }
        let tag = hmac::sign(&self.key, &message(node));
        Ok(format!("{node}.{}", hex::encode(tag.as_ref())))
    }

    /// The node a token was issued to, if the token is valid.
    pub fn verify(&self, token: &str) -> Option<String> {
        let (node, mac) = token.rsplit_once('.')?;
        let mac = hex::decode(mac).ok()?;
        if !valid_node_name(node) {
            return None;
        }
        hmac::verify(&self.key, &message(node), &mac).ok()?;
        Some(node.to_string())
    }
}

fn message(node: &str) -> Vec<u8> {
    [MAC_PREFIX, node.as_bytes()].concat()
}

fn valid_node_name(node: &str) -> bool {
    !node.is_empty() && node.bytes().all(|b| b.is_ascii_graphic())
}

/// The bootstrap token of `node`, for `weft-control bootstrap-token` and
/// test harnesses. Creates the secret if missing.
pub fn bootstrap_token(state_dir: &Path, node: &str) -> Result<String, AuthError> {
    BootstrapSecret::load_or_create(state_dir)?.token_for(node)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn tokens_verify_and_are_node_specific() {
        let dir = tempfile::tempdir().unwrap();
        let secret = BootstrapSecret::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let token = secret.token_for("node-a").unwrap();
        assert!(token.starts_with("node-a."));
        assert_eq!(secret.verify(&token).as_deref(), Some("node-a"));
        // Same secret from disk, same token.
        assert_eq!(bootstrap_token(dir.path(), "node-a").unwrap(), token);

        let forged = token.replace("node-a.", "node-b.");
        assert_eq!(secret.verify(&forged), None);
        assert_eq!(secret.verify("node-a"), None);
        assert_eq!(secret.verify("node-a.zz"), None);
        let other = BootstrapSecret::from_bytes(&[7; 32]);
        assert_eq!(other.verify(&token), None);
        assert!(secret.token_for("bad node").is_err());
    }
}
