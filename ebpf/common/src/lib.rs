//! Types and constants shared by weft's eBPF programs (`weft-ebpf`) and the
//! agent that loads them.
//!
//! Everything here is part of the contract between kernel and user space and,
//! because maps are pinned in bpffs, between one agent version and the next:
//! change a layout only together with the map's name.
#![no_std]

/// Port of the proxy's outbound listener, on the pod's loopback.
pub const OUTBOUND_PORT: u16 = 15001;
/// Port of the proxy's inbound plaintext listener.
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
/// Port of the proxy's HBONE (mTLS tunnel) listener, on the pod's IP.
pub const HBONE_PORT: u16 = 15008;

/// `SO_MARK` of the proxy's delivery sockets (inbound, to the app). The pod's
/// routing sends replies to this mark back to the proxy (table 133), which
/// is how the app sees the client's real IP.
pub const DELIVERY_MARK: u32 = 0x539;
/// `SO_MARK` of the proxy's outbound sockets (HBONE to a peer, or
/// passthrough). Routed normally, never captured.
pub const OUTBOUND_MARK: u32 = 0x53a;
/// Routing table that sends `DELIVERY_MARK` traffic to the local stack.
pub const DELIVERY_ROUTE_TABLE: u32 = 133;

/// Map: network-namespace cookie of an enrolled pod → [`PodRedirect`].
pub const MAP_ENROLLED: &str = "WEFT_ENROLLED";
/// Map: socket cookie → [`OrigDst`], written at `connect()`.
pub const MAP_DST_BY_COOKIE: &str = "WEFT_DST_COOKIE";
/// Map: [`PortKey`] → [`OrigDst`], written when the captured connection is
/// established; read (and removed) by the proxy on accept.
pub const MAP_DST_BY_PORT: &str = "WEFT_DST_PORT";
/// A map of [`PortKey`] → SYN time that agents before 2026-12-06 pinned
/// (the stamp is now [`OrigDst::syn_sent`]); an agent removes its pin.
pub const MAP_RETIRED_CAPTURED_AT: &str = "WEFT_CAPTURED_AT";
/// Global of the capture programs: `0` turns the capture timestamps
/// ([`OrigDst::syn_sent`]) off. Set by the agent at load.
pub const GLOBAL_CAPTURE_TIMES: &str = "WEFT_CAPTURE_TIMES";

/// Map: pod IPv4 (network order bytes as `u32`) → `u8`: the pod is
/// enrolled for inbound steering. Its plaintext connections are refused if
/// the proxy's listener is missing (agent restarting): fail closed.
pub const MAP_INBOUND_PODS: &str = "WEFT_IN_PODS";
/// Sockhash: pod IPv4 → the proxy's inbound plaintext listener (15006) for
/// that pod.
pub const MAP_INBOUND_LISTENERS: &str = "WEFT_INBOUND";
/// Map: [`DeliveryKey`] → `u8`: the proxy's own delivery connections, which
/// must reach the app and not be steered back to the proxy.
pub const MAP_DELIVERY: &str = "WEFT_DELIVERY";
/// Map: IPv4 → `u8`: the node's own addresses. Their plaintext connections
/// (kubelet health checks) reach the app directly, as in Istio.
pub const MAP_HOST_SOURCES: &str = "WEFT_HOST_SRC";

/// A TCP 4-tuple as the inbound steering program sees it; addresses are
/// IPv4 in network order (as `u32` read from memory), ports host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    pub remote_ip: u32,
    pub local_ip: u32,
    pub remote_port: u16,
    pub local_port: u16,
}

/// What the programs do for an enrolled pod.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodRedirect {
    /// `REDIRECT_*` bits.
    pub flags: u32,
    pub _pad: u32,
}

/// Capture the pod's outbound TCP connections to the proxy.
pub const REDIRECT_OUTBOUND: u32 = 1;

/// Address family values used in [`OrigDst::family`] (the kernel's `AF_*`).
pub const FAMILY_INET: u16 = 2;
pub const FAMILY_INET6: u16 = 10;

/// The destination an app asked for before `connect()` was rewritten.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrigDst {
    /// Address bytes in network order: IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// Port in host order.
    pub port: u16,
    /// [`FAMILY_INET`] or [`FAMILY_INET6`].
    pub family: u16,
    /// When the connection's SYN left the app, stamped at
    /// `TCP_CONNECT_CB` while capture timestamps are on: the low 32 bits
    /// of `bpf_ktime_get_ns() >> SYN_SHIFT` (`CLOCK_MONOTONIC` in units of
    /// 1.024 µs, wrapping every 73 minutes); `0`: not stamped. Carried
    /// with the destination, so that the proxy takes both in one
    /// `bpf()` call (the field was padding before, and the record's size
    /// is unchanged, so maps pinned by an older agent still fit).
    pub syn_sent: u32,
}

/// The shift of [`OrigDst::syn_sent`]'s clock.
pub const SYN_SHIFT: u32 = 10;

/// Finds a captured connection from the proxy's side of the accept: the
/// pod's network namespace and the client's source port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub netns_cookie: u64,
    /// The app socket's local (ephemeral) port, host order.
    pub port: u16,
    pub _pad: [u8; 6],
}

impl PortKey {
    pub const fn new(netns_cookie: u64, port: u16) -> Self {
        Self {
            netns_cookie,
            port,
            _pad: [0; 6],
        }
    }
}

/// Per-workload TCP health (`weft_tcp_health`, a `sockops` program
/// attached to the agent's own cgroup, so it sees the agent's sockets in
/// enrolled pods' namespaces: HBONE both ways, passthrough, plaintext
/// accepted for a pod). Not pinned: the running agent's.
///
/// Map: [`TcpPeerKey`] → [`TcpHealth`], LRU.
pub const MAP_TCP_HEALTH: &str = "WEFT_TCP_HEALTH";
/// Map: socket cookie → [`FollowedSocket`], from `connect()` (outbound)
/// or established (inbound) to close. LRU.
pub const MAP_TCP_FOLLOWED: &str = "WEFT_TCP_FOLLOWED";
/// Histogram buckets of [`TcpHealth`]: bucket `i` (below the last) counts
/// values of at most `2^(i + TCP_BUCKET_SHIFT)` microseconds; the last
/// counts the rest.
pub const TCP_BUCKETS: usize = 20;
/// The first bucket's bound is `2^TCP_BUCKET_SHIFT` µs (16 µs); the last
/// bounded one is `2^(TCP_BUCKETS - 2 + TCP_BUCKET_SHIFT)` µs (≈ 4.2 s).
pub const TCP_BUCKET_SHIFT: u32 = 4;
/// [`TcpPeerKey::direction`]: the pod's side opened the connection.
pub const TCP_OUTBOUND: u8 = 0;
/// [`TcpPeerKey::direction`]: the pod's side accepted it.
pub const TCP_INBOUND: u8 = 1;

/// Whose connections a [`TcpHealth`] entry counts: one enrolled pod's
/// (by network namespace) with one remote address, one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpPeerKey {
    pub netns_cookie: u64,
    /// Remote address bytes in network order: IPv4 in the first four.
    pub remote: [u8; 16],
    /// [`FAMILY_INET`] or [`FAMILY_INET6`].
    pub family: u16,
    /// [`TCP_OUTBOUND`] or [`TCP_INBOUND`].
    pub direction: u8,
    pub _pad: [u8; 5],
}

/// What the kernel saw of one [`TcpPeerKey`]'s connections, counted since
/// the entry was created (all fields only grow; an entry the LRU evicted
/// comes back from zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpHealth {
    /// Connections established.
    pub established: u64,
    /// Connections closed (their bytes are counted then).
    pub closed: u64,
    /// Segments retransmitted.
    pub retransmits: u64,
    /// Retransmission timeouts (RTO fired).
    pub rtos: u64,
    /// Segments received from the peer advertising a zero window.
    pub zero_windows: u64,
    /// Bytes sent and acknowledged, of closed connections.
    pub bytes_sent: u64,
    /// Bytes received, of closed connections.
    pub bytes_received: u64,
    /// Smoothed RTT after each RTT sample: count, sum (µs), buckets.
    pub rtt_count: u64,
    pub rtt_sum_us: u64,
    pub rtt_buckets: [u64; TCP_BUCKETS],
    /// `connect()` to established (outbound only): count, sum (µs),
    /// buckets.
    pub setup_count: u64,
    pub setup_sum_us: u64,
    pub setup_buckets: [u64; TCP_BUCKETS],
}

impl TcpHealth {
    pub const ZERO: TcpHealth = TcpHealth {
        established: 0,
        closed: 0,
        retransmits: 0,
        rtos: 0,
        zero_windows: 0,
        bytes_sent: 0,
        bytes_received: 0,
        rtt_count: 0,
        rtt_sum_us: 0,
        rtt_buckets: [0; TCP_BUCKETS],
        setup_count: 0,
        setup_sum_us: 0,
        setup_buckets: [0; TCP_BUCKETS],
    };
}

/// A socket `weft_tcp_health` follows: where it counts, and when its
/// `connect()` started (`bpf_ktime_get_ns()`; 0 for an accepted socket).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowedSocket {
    pub key: TcpPeerKey,
    pub connect_ns: u64,
}

/// The [`TcpHealth`] bucket of a value in microseconds.
#[inline(always)]
pub fn tcp_bucket(micros: u64) -> usize {
    let mut bucket = 0;
    while bucket < TCP_BUCKETS - 1 && micros > (1u64 << (bucket as u32 + TCP_BUCKET_SHIFT)) {
        bucket += 1;
    }
    bucket
}

/// On-demand CPU profiling (`weft-profile`, a `perf_event` program on the
/// software `cpu-clock` event). Not pinned: one copy per profile, gone when
/// the profile ends.
///
/// Map: stack id → instruction pointers (`BPF_MAP_TYPE_STACK_TRACE`), user
/// and kernel stacks alike.
pub const MAP_PROFILE_STACKS: &str = "WEFT_PROF_STACKS";
/// Per-CPU map: [`SampleKey`] → `u64` samples.
pub const MAP_PROFILE_COUNTS: &str = "WEFT_PROF_COUNTS";
/// Per-CPU array of `u64`: samples dropped, by [`PROFILE_LOST_STACK`] and
/// [`PROFILE_LOST_COUNT`].
pub const MAP_PROFILE_LOST: &str = "WEFT_PROF_LOST";
/// Index in [`MAP_PROFILE_LOST`]: a stack that did not fit the stack map.
pub const PROFILE_LOST_STACK: u32 = 0;
/// Index in [`MAP_PROFILE_LOST`]: a new stack pair that did not fit the
/// counts map.
pub const PROFILE_LOST_COUNT: u32 = 1;

/// Global `PROFILE_FILTER` (what is sampled): every process but the idle
/// task.
pub const PROFILE_ALL: u32 = 0;
/// Tasks whose cgroup is `PROFILE_CGROUP_ID` or below it (its ancestor at
/// level `PROFILE_CGROUP_LEVEL`): a pod.
pub const PROFILE_CGROUP: u32 = 1;
/// Threads of the process `PROFILE_TGID`: the agent itself.
pub const PROFILE_TGID: u32 = 2;

/// What one sample is counted under: the process, the thread's name and
/// the two stacks (ids in [`MAP_PROFILE_STACKS`]; negative: none, e.g. no
/// kernel stack for a sample taken in user mode).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    pub tgid: u32,
    pub user_stack: i32,
    pub kernel_stack: i32,
    pub _pad: u32,
    /// The thread's `comm`, NUL-padded.
    pub comm: [u8; 16],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, every padding byte is an explicit
    // field, so any byte pattern is a valid value.
    unsafe impl aya::Pod for super::PodRedirect {}
    unsafe impl aya::Pod for super::OrigDst {}
    unsafe impl aya::Pod for super::PortKey {}
    unsafe impl aya::Pod for super::DeliveryKey {}
    unsafe impl aya::Pod for super::SampleKey {}
    unsafe impl aya::Pod for super::TcpPeerKey {}
    unsafe impl aya::Pod for super::TcpHealth {}
    unsafe impl aya::Pod for super::FollowedSocket {}
}
