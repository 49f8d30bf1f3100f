//! The handoff socket: a unix `SOCK_SEQPACKET` socket, one JSON message
//! per packet, listening sockets passed beside it as `SCM_RIGHTS`.
//!
//! Packets keep their boundaries, so a message and its descriptors always
//! arrive together; a zero-length read is the peer closing.

use std::{
    io::{self, IoSlice, IoSliceMut},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

use nix::{
    fcntl::{FcntlArg, OFlag, fcntl},
    sys::socket::{
        self, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
        SockType, UnixAddr,
    },
};
use tokio::io::{Interest, unix::AsyncFd};

use super::{HandoffError, Message};

/// The largest message: a pod's event and its listeners take well under
/// 4 KiB.
const MAX_MESSAGE: usize = 64 * 1024;
/// The most descriptors one message carries (a pod has at most five
/// listeners).
const MAX_FDS: usize = 8;

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> HandoffError {
    move |errno| HandoffError::Io {
        what,
        source: io::Error::from(errno),
    }
}

fn new_socket() -> Result<OwnedFd, HandoffError> {
    socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sys("creating the handoff socket"))
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), HandoffError> {
    fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .map(drop)
        .map_err(sys("making the handoff socket non-blocking"))
}

fn register(fd: OwnedFd, what: &'static str) -> Result<AsyncFd<OwnedFd>, HandoffError> {
    // SAFETY: the AsyncFd owns the descriptor, which stays open and the
    // same for as long as it is registered.
    unsafe { AsyncFd::register(fd) }.map_err(|err| HandoffError::Io {
        what,
        source: err.into_parts().1,
    })
}

/// The listening side (the running agent): `path` is replaced, owner-only.
pub(super) struct Listener(AsyncFd<OwnedFd>);

impl Listener {
    pub(super) fn bind(path: &Path) -> Result<Self, HandoffError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| HandoffError::Io {
                what: "creating the handoff socket's directory",
                source,
            })?;
        }
        let _ = std::fs::remove_file(path);
        let fd = new_socket()?;
        let addr = UnixAddr::new(path).map_err(sys("the handoff socket's path"))?;
        socket::bind(fd.as_raw_fd(), &addr).map_err(sys("binding the handoff socket"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| HandoffError::Io {
                what: "restricting the handoff socket to its owner",
                source,
            },
        )?;
        socket::listen(&fd, Backlog::new(4).expect("a small backlog is valid"))
            .map_err(sys("listening on the handoff socket"))?;
        set_nonblocking(&fd)?;
        register(fd, "registering the handoff socket").map(Self)
    }

    pub(super) async fn accept(&self) -> Result<Channel, HandoffError> {
        let raw = self
            .0
            .async_io(Interest::READABLE, |fd| {
                socket::accept4(
                    fd.as_raw_fd(),
                    SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                )
                .map_err(io::Error::from)
            })
            .await
            .map_err(|source| HandoffError::Io {
                what: "accepting on the handoff socket",
                source,
            })?;
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        Channel::new(unsafe { OwnedFd::from_raw_fd(raw) })
    }
}

/// One connection between the two agents.
pub(super) struct Channel(AsyncFd<OwnedFd>);

impl Channel {
    /// Connects to the agent listening at `path`.
    pub(super) fn connect(path: &Path) -> Result<Self, HandoffError> {
        let fd = new_socket()?;
        let addr = UnixAddr::new(path).map_err(sys("the handoff socket's path"))?;
        socket::connect(fd.as_raw_fd(), &addr).map_err(|errno| HandoffError::Connect {
            source: io::Error::from(errno),
        })?;
        set_nonblocking(&fd)?;
        Self::new(fd)
    }

    fn new(fd: OwnedFd) -> Result<Self, HandoffError> {
        register(fd, "registering the handoff connection").map(Self)
    }

    /// Sends `message` with `fds` beside it.
    pub(super) async fn send(
        &self,
        message: &Message,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), HandoffError> {
        assert!(
            fds.len() <= MAX_FDS,
            "a handoff message carries few listeners"
        );
        let bytes = serde_json::to_vec(message).expect("handoff messages serialise");
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
        self.0
            .async_io(Interest::WRITABLE, |fd| {
                socket::sendmsg::<()>(
                    fd.as_raw_fd(),
                    &[IoSlice::new(&bytes)],
                    cmsgs,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from)
            })
            .await
            .map(drop)
            .map_err(|source| HandoffError::Io {
                what: "sending to the other agent",
                source,
            })
    }

    /// The next message and the descriptors that came with it; `None` when
    /// the other agent has closed the connection.
    pub(super) async fn recv(&self) -> Result<Option<(Message, Vec<OwnedFd>)>, HandoffError> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (len, fds, truncated) = self
            .0
            .async_io(Interest::READABLE, |fd| receive(fd.as_fd(), &mut buf))
            .await
            .map_err(|source| HandoffError::Io {
                what: "receiving from the other agent",
                source,
            })?;
        if truncated {
            return Err(HandoffError::Protocol(format!(
                "a message longer than {MAX_MESSAGE} bytes or with more than {MAX_FDS} descriptors"
            )));
        }
        if len == 0 {
            return Ok(None);
        }
        let message = serde_json::from_slice(&buf[..len])
            .map_err(|err| HandoffError::Protocol(format!("a message that is not valid: {err}")))?;
        Ok(Some((message, fds)))
    }
}

/// One `recvmsg`: the bytes' length, the descriptors (owned from here on),
/// and whether anything was cut off.
fn receive(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>, bool)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = socket::recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel installed these descriptors for us.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let truncated = msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    Ok((msg.bytes, fds, truncated))
}
