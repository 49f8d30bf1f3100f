//! `weft_tcp_health` (`sockops`): per-workload TCP health, always on.
//!
//! The agent attaches it to its own cgroup, so it runs for the agent's
//! sockets only; of those it follows the ones that live in an enrolled
//! pod's network namespace (`WEFT_ENROLLED`, the capture object's pinned
//! map, reused) and talk to another address: HBONE both ways, passthrough,
//! plaintext accepted for a pod; not the delivery sockets (`DELIVERY_MARK`),
//! which stay inside the pod. Those are the pod's connections on the
//! wire; the app's own sockets only reach the proxy over loopback.
//!
//! When such a connection is established the program asks the kernel for
//! the callbacks it needs (RTT, retransmit, RTO, state change, every
//! received header) and from then on counts, per (pod, remote address,
//! direction) in `WEFT_TCP_HEALTH` (the socket's key is kept in
//! `WEFT_TCP_FOLLOWED` by socket cookie until it closes): the smoothed RTT after each sample, the
//! retransmitted segments, the RTOs, the received segments that advertise a
//! zero window, the connection setup time (outbound: `connect()` to
//! established), and at close the
//! bytes the connection moved. Entries are shared by all CPUs: every
//! addition is atomic.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// `AtomicU64::fetch_add` does not exist for the BPF target (no
// compare-and-swap); the intrinsic is the kernel's atomic add.
#![cfg_attr(target_arch = "bpf", allow(internal_features))]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]

#[cfg(target_arch = "bpf")]
mod program {
    use core::intrinsics::{AtomicOrdering, atomic_xadd};

    use aya_ebpf::{
        EbpfContext,
        bindings::{
            BPF_NOEXIST, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB,
            BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG, BPF_SOCK_OPS_PARSE_HDR_OPT_CB,
            BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_RETRANS_CB,
            BPF_SOCK_OPS_RETRANS_CB_FLAG, BPF_SOCK_OPS_RTO_CB, BPF_SOCK_OPS_RTO_CB_FLAG,
            BPF_SOCK_OPS_RTT_CB, BPF_SOCK_OPS_RTT_CB_FLAG, BPF_SOCK_OPS_STATE_CB,
            BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
        },
        helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_ns},
        macros::{map, sock_ops},
        maps::{HashMap, LruHashMap},
        programs::SockOpsContext,
    };
    use weft_ebpf_common::{
        DELIVERY_MARK, FAMILY_INET, FAMILY_INET6, FollowedSocket, PodRedirect, TCP_INBOUND,
        TCP_OUTBOUND, TcpHealth, TcpPeerKey, tcp_bucket,
    };

    /// The capture object's map of enrolled pods, opened from its pin.
    #[map]
    static WEFT_ENROLLED: HashMap<u64, PodRedirect> = HashMap::pinned(16_384, 0);

    #[map]
    static WEFT_TCP_HEALTH: LruHashMap<TcpPeerKey, TcpHealth> =
        LruHashMap::with_max_entries(8_192, 0);

    #[map]
    static WEFT_TCP_FOLLOWED: LruHashMap<u64, FollowedSocket> =
        LruHashMap::with_max_entries(32_768, 0);

    /// The template a new entry starts from (read-only data, so the
    /// verifier accepts it as a map value).
    static EMPTY: TcpHealth = TcpHealth::ZERO;

    const TCP_CLOSE: u32 = 7;
    const TCP_FLAG_RST: u32 = 0x04;
    const FOLLOW: i32 = (BPF_SOCK_OPS_RTT_CB_FLAG
        | BPF_SOCK_OPS_RETRANS_CB_FLAG
        | BPF_SOCK_OPS_RTO_CB_FLAG
        | BPF_SOCK_OPS_STATE_CB_FLAG
        | BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG) as i32;

    #[sock_ops]
    pub fn weft_tcp_health(ctx: SockOpsContext) -> u32 {
        match ctx.op() {
            BPF_SOCK_OPS_TCP_CONNECT_CB => connecting(&ctx),
            BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => active_established(&ctx),
            BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
                if let Some(key) = key(&ctx, TCP_INBOUND) {
                    follow(&ctx, key, 0);
                }
            }
            // Every received segment and state change of a followed
            // socket: most of the program's runs. Nothing is looked up
            // unless the segment closes the window, or the socket closes.
            BPF_SOCK_OPS_PARSE_HDR_OPT_CB if !zero_window(&ctx) => {}
            BPF_SOCK_OPS_STATE_CB if ctx.arg(1) != TCP_CLOSE => {}
            // Only followed sockets (callbacks asked for at established)
            // get here.
            op @ (BPF_SOCK_OPS_RTT_CB
            | BPF_SOCK_OPS_RETRANS_CB
            | BPF_SOCK_OPS_RTO_CB
            | BPF_SOCK_OPS_STATE_CB
            | BPF_SOCK_OPS_PARSE_HDR_OPT_CB) => followed(&ctx, op),
            // What the kernel asks every socket (timeouts, windows, ECN,
            // the base RTT) is left to its defaults (the reply stays 0).
            // These were a socket cookie and a map lookup each, for every
            // socket of the agent, followed or not.
            _ => {}
        }
        1
    }

    /// Whether the segment being parsed advertises a zero window (an RST
    /// does not count: its window means nothing).
    fn zero_window(ctx: &SockOpsContext) -> bool {
        let ops = unsafe { &*ctx.ops };
        if ops.skb_tcp_flags & TCP_FLAG_RST != 0 {
            return false;
        }
        let data = unsafe { ops.__bindgen_anon_3.skb_data } as usize;
        let end = unsafe { ops.__bindgen_anon_4.skb_data_end } as usize;
        // The TCP header's window field: bytes 14 and 15.
        data + 16 <= end && unsafe { *((data + 14) as *const u16) } == 0
    }

    /// The entry a socket counts in; `None` for a socket that is not
    /// followed (not in an enrolled pod's namespace, or to its own address
    /// or loopback).
    fn key(ctx: &SockOpsContext, direction: u8) -> Option<TcpPeerKey> {
        // The proxy's delivery sockets reach the app in the same pod: not
        // on the wire.
        let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
        if sk.is_null() || unsafe { (*sk).mark } == DELIVERY_MARK {
            return None;
        }
        let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
        unsafe { WEFT_ENROLLED.get(&netns_cookie) }?;
        let mut key = TcpPeerKey {
            netns_cookie,
            remote: [0; 16],
            family: 0,
            direction,
            _pad: [0; 5],
        };
        let family = ctx.family();
        if family == u32::from(FAMILY_INET) {
            let remote = ctx.remote_ip4();
            if remote.to_ne_bytes()[0] == 127 || remote == ctx.local_ip4() {
                return None;
            }
            key.family = FAMILY_INET;
            key.remote[..4].copy_from_slice(&remote.to_ne_bytes());
        } else if family == u32::from(FAMILY_INET6) {
            let remote = ctx.remote_ip6();
            let loopback = remote[0] == 0
                && remote[1] == 0
                && remote[2] == 0
                && remote[3] == u32::from_ne_bytes([0, 0, 0, 1]);
            // (Not compared with the local address: the verifier refuses
            // the 8-byte context loads such a comparison compiles to.)
            if loopback {
                return None;
            }
            key.family = FAMILY_INET6;
            for (i, word) in remote.iter().enumerate() {
                key.remote[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
        } else {
            return None;
        }
        Some(key)
    }

    fn cookie(ctx: &SockOpsContext) -> u64 {
        unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
    }

    /// The counters of `key`, created at zero the first time.
    fn entry(key: &TcpPeerKey) -> Option<&'static TcpHealth> {
        if let Some(entry) = WEFT_TCP_HEALTH.get_ptr_mut(key) {
            return Some(unsafe { &*entry });
        }
        // Another CPU may have created it meanwhile: NOEXIST keeps theirs.
        let _ = WEFT_TCP_HEALTH.insert(key, &EMPTY, u64::from(BPF_NOEXIST));
        WEFT_TCP_HEALTH
            .get_ptr_mut(key)
            .map(|entry| unsafe { &*entry })
    }

    fn add(counter: &u64, n: u64) {
        // SAFETY: `counter` is in a map value, which stays mapped while
        // the program runs; every writer adds atomically.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                counter as *const u64 as *mut u64,
                n,
            )
        };
    }

    /// Outbound `connect()`: remember when, to time the setup.
    fn connecting(ctx: &SockOpsContext) {
        if let Some(key) = key(ctx, TCP_OUTBOUND) {
            let socket = FollowedSocket {
                key,
                connect_ns: unsafe { bpf_ktime_get_ns() },
            };
            // A full map costs this connection its figures, nothing else.
            let _ = WEFT_TCP_FOLLOWED.insert(&cookie(ctx), &socket, 0);
        }
    }

    /// An outbound connection is up: followed with its setup time if its
    /// `connect()` was recorded (see [`connecting`]), else (the record was
    /// evicted, or the program came after the `connect()`) keyed now,
    /// without one.
    fn active_established(ctx: &SockOpsContext) {
        if let Some(socket) = unsafe { WEFT_TCP_FOLLOWED.get(&cookie(ctx)) } {
            follow(ctx, socket.key, socket.connect_ns);
        } else if let Some(key) = key(ctx, TCP_OUTBOUND) {
            follow(ctx, key, 0);
        }
    }

    /// Counts the connection established in `key`'s entry, its setup
    /// time when `connect_ns` is known, and asks for its callbacks.
    fn follow(ctx: &SockOpsContext, key: TcpPeerKey, connect_ns: u64) {
        if connect_ns == 0 {
            let socket = FollowedSocket { key, connect_ns };
            if WEFT_TCP_FOLLOWED.insert(&cookie(ctx), &socket, 0).is_err() {
                return;
            }
        }
        if ctx.set_cb_flags(FOLLOW).is_err() {
            return;
        }
        let Some(health) = entry(&key) else {
            return;
        };
        add(&health.established, 1);
        if connect_ns != 0 {
            let micros = (unsafe { bpf_ktime_get_ns() }).saturating_sub(connect_ns) / 1_000;
            add(&health.setup_count, 1);
            add(&health.setup_sum_us, micros);
            add(&health.setup_buckets[tcp_bucket(micros)], 1);
        }
    }

    fn followed(ctx: &SockOpsContext, op: u32) {
        let cookie = cookie(ctx);
        let Some(socket) = (unsafe { WEFT_TCP_FOLLOWED.get(&cookie) }) else {
            return;
        };
        let Some(health) = entry(&socket.key) else {
            return;
        };
        let ops = unsafe { &*ctx.ops };
        match op {
            BPF_SOCK_OPS_RTT_CB => {
                // The second argument is the new smoothed RTT, in µs × 8.
                let micros = u64::from(ctx.arg(1) >> 3);
                add(&health.rtt_count, 1);
                add(&health.rtt_sum_us, micros);
                add(&health.rtt_buckets[tcp_bucket(micros)], 1);
            }
            // Arguments: the first segment's sequence, the segment count.
            BPF_SOCK_OPS_RETRANS_CB => add(&health.retransmits, u64::from(ctx.arg(1))),
            BPF_SOCK_OPS_RTO_CB => add(&health.rtos, 1),
            // Only the close gets here (see the program).
            BPF_SOCK_OPS_STATE_CB => {
                add(&health.closed, 1);
                add(&health.bytes_sent, ops.bytes_acked);
                add(&health.bytes_received, ops.bytes_received);
                let _ = WEFT_TCP_FOLLOWED.remove(&cookie);
            }
            // Only a zero-window segment gets here (see the program).
            BPF_SOCK_OPS_PARSE_HDR_OPT_CB => add(&health.zero_windows, 1),
            _ => {}
        }
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

/// Built for the host, the binary is empty: the program only exists for
/// the BPF target.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
