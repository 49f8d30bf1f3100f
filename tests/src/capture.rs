//! Packet capture on a link of the fabric, with an `AF_PACKET` socket of
//! this process (no tcpdump needed). Every frame the kernel delivered to the
//! socket before [`Capture::stop`] is returned, and the capture fails if the
//! kernel dropped any; the frames are also written as a pcap file for
//! Wireshark.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;
use crate::pcap::{Frame, LINKTYPE_ETHERNET, Packets, write_pcap};

/// Socket receive buffer: room for bursts while the reader thread sleeps.
const RCVBUF: libc::c_int = 64 * 1024 * 1024;
/// Largest frame read (GSO frames on veths reach 64 KiB).
const MAX_FRAME: usize = 256 * 1024;
/// How often the reader checks for a stop request.
const POLL_MS: libc::c_int = 20;

/// A running capture; [`Capture::stop`] returns what it saw.
#[derive(Debug)]
pub struct Capture {
    what: String,
    pcap: PathBuf,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<Result<Vec<Frame>>>>,
}

// === impl Capture ===

impl Capture {
    /// Starts capturing every frame that crosses `iface` in `netns`
    /// (promiscuous, so a bridge shows the frames it forwards).
    pub fn start(netns: &Netns, iface: &str, pcap: PathBuf) -> Result<Capture> {
        let what = format!("capture on {iface} in netns {}", netns.name());
        let fd = netns
            .run(|| open_socket(iface))?
            .with_context(|| format!("starting {what}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let reader = std::thread::Builder::new()
            .name(format!("capture-{iface}"))
            .spawn(move || read_until_stopped(fd, &flag))?;
        Ok(Capture {
            what,
            pcap,
            stop,
            reader: Some(reader),
        })
    }

    /// Where [`Capture::stop`] writes the pcap file.
    pub fn pcap_path(&self) -> &Path {
        &self.pcap
    }

    /// Stops, writes the pcap file, and returns the TCP segments seen.
    pub fn stop(mut self) -> Result<Packets> {
        let frames = self.finish()?;
        write_pcap(&self.pcap, LINKTYPE_ETHERNET, &frames)?;
        Ok(Packets::from_frames(LINKTYPE_ETHERNET, &frames))
    }

    fn finish(&mut self) -> Result<Vec<Frame>> {
        self.stop.store(true, Ordering::SeqCst);
        let reader = self.reader.take().context("capture already stopped")?;
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("{} panicked", self.what))?
            .with_context(|| self.what.clone())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.finish();
        }
    }
}

/// An `AF_PACKET` socket for all protocols, bound to `iface`, promiscuous.
/// Must run inside the namespace owning `iface`.
fn open_socket(iface: &str) -> Result<OwnedFd> {
    let ifindex = nix::net::if_::if_nametoindex(iface)
        .with_context(|| format!("no interface {iface} in this namespace"))?;
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            proto as libc::c_int,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RCVBUF).context("SO_RCVBUFFORCE")?;
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: bind with a correctly sized sockaddr_ll.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context(format!("binding to {iface}"));
    }
    // SAFETY: packet_mreq is plain data; all-zero is a valid value.
    let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mreq.mr_ifindex = ifindex as i32;
    mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
    setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
        .context("PACKET_ADD_MEMBERSHIP promiscuous")?;
    // Frames queued before the bind may belong to any interface: drop them.
    drain(&fd, &mut vec![0u8; MAX_FRAME], &mut Vec::new())?;
    Ok(fd)
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> Result<()> {
    // SAFETY: `value` points to a live T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Reads frames until `stop` is set, then drains what is queued and checks
/// the kernel dropped nothing.
fn read_until_stopped(fd: OwnedFd, stop: &AtomicBool) -> Result<Vec<Frame>> {
    let mut frames = Vec::new();
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, if stopping { 0 } else { POLL_MS }) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err).context("poll");
            }
        }
        drain(&fd, &mut buf, &mut frames)?;
        if stopping {
            break;
        }
    }
    // SAFETY: tpacket_stats is plain data; getsockopt fills it.
    let mut stats: libc::tpacket_stats = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `stats` and `len` are valid for writes of the given size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    if rc == 0 && stats.tp_drops > 0 {
        bail!(
            "the kernel dropped {} of {} frames (receive buffer full): the capture is incomplete",
            stats.tp_drops,
            stats.tp_packets
        );
    }
    Ok(frames)
}

/// Reads every queued frame without blocking.
fn drain(fd: &OwnedFd, buf: &mut [u8], frames: &mut Vec<Frame>) -> Result<()> {
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            return match err.kind() {
                std::io::ErrorKind::WouldBlock => Ok(()),
                std::io::ErrorKind::Interrupted => continue,
                _ => Err(err).context("recv on the capture socket"),
            };
        }
        let n = n as usize;
        if n > buf.len() {
            bail!(
                "a {n}-byte frame exceeded the capture buffer of {} bytes",
                buf.len()
            );
        }
        // Microseconds, the precision of the pcap file written at stop.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let ts = std::time::Duration::from_micros(now.as_micros() as u64);
        frames.push(Frame {
            ts,
            data: buf[..n].to_vec(),
        });
    }
}
