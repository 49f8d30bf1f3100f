//! Socket options and socket construction that the proxy needs and that the
//! standard library doesn't offer.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, FromRawFd, IntoRawFd},
};

use socket2::{Domain, Protocol, Socket, Type};

/// `SO_NETNS_COOKIE` (Linux 5.14): the cookie of the socket's namespace.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the network namespace `socket` lives in.
pub fn netns_cookie(socket: &impl AsRawFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid fd, out-pointer and length of a u64.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// A listening TCP socket bound to `addr`, non-blocking, ready for tokio.
/// Created in the calling thread's network namespace.
pub fn listener(addr: SocketAddr, freebind: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if freebind {
        // The pod's address may not be configured yet when a restarted
        // agent re-creates listeners; freebind lets the bind succeed anyway.
        socket.set_freebind_v4(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// An unconnected TCP socket for the proxy's outbound side, marked so that
/// the redirection programs never capture it.
pub fn outbound_socket(peer: SocketAddr, mark: u32) -> io::Result<tokio::net::TcpSocket> {
    let socket = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_mark(mark)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    into_tokio(socket)
}

/// An unconnected TCP socket for delivery to an app: bound to the client's
/// address (not local to this namespace, hence `IP_TRANSPARENT`) and marked
/// so that the app's replies are routed back to the proxy.
pub fn delivery_socket(
    source: std::net::IpAddr,
    target: SocketAddr,
    mark: u32,
) -> io::Result<tokio::net::TcpSocket> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_mark(mark)?;
    if target.is_ipv4() {
        socket.set_ip_transparent_v4(true)?;
    } else {
        set_ipv6_transparent(&socket)?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    into_tokio(socket)
}

fn set_ipv6_transparent(socket: &Socket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid fd and a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_IPV6,
            libc::IPV6_TRANSPARENT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn into_tokio(socket: Socket) -> io::Result<tokio::net::TcpSocket> {
    // SAFETY: we own the fd and hand ownership to tokio.
    Ok(unsafe { tokio::net::TcpSocket::from_raw_fd(socket.into_raw_fd()) })
}
