//! Netem-style impairment of one namespace's link: added latency and random
//! loss on the TCP packets that leave a network namespace, so that the
//! kernel's TCP in that namespace sees a larger round trip, and retransmits.
//!
//! The test kernel has no `sch_netem` (nor `sch_fq`), so this is done with
//! netfilter instead: inside the namespace, an iptables rule
//! `-t mangle -A POSTROUTING ! -o lo -p tcp -j NFQUEUE --queue-num 0
//! --queue-bypass` hands every outgoing TCP packet to a queue, and a thread
//! of this process, whose netlink socket was opened inside the namespace,
//! holds each packet for the delay (or drops it) before letting it go.
//!
//! - Only IPv4 TCP packets *leaving* the namespace through a non-loopback
//!   interface are impaired (data and ACKs alike), so a request/response
//!   round trip grows by the delay once. Impair both ends for a symmetric
//!   link.
//! - Packets are released in arrival order, up to about a millisecond
//!   later than the delay (the reader polls its socket every [`POLL`],
//!   which costs a few percent of a core per impairment).
//! - Lost packets are dropped on arrival; the drop decisions come from a
//!   PRNG seeded with the namespace's name.
//! - One [`Impaired`] per namespace at a time (queue numbers are per
//!   namespace, so every namespace uses queue 0; a second one fails).
//! - Held packets still count against the sending socket's TCP small-queue
//!   budget (netem orphans them, NFQUEUE cannot), so a *bulk sender* in the
//!   impaired namespace crawls: about 1.4 Mbit/s under 30 ms. To delay a
//!   bulk transfer, impair the receiver's namespace instead (its ACKs are
//!   held, which TCP small queues do not limit): the sender then sees the
//!   longer round trip at full speed.

use std::collections::VecDeque;
use std::collections::hash_map::DefaultHasher;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::fd::RawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nfq::{Message, Queue, Verdict};
use nix::sched::{CloneFlags, setns};

use crate::netns::Netns;

/// The legacy (x_tables) iptables: the kernel has its mangle table and the
/// NFQUEUE target (`CONFIG_IP_NF_IPTABLES_LEGACY`), and Debian's `iptables`
/// package ships it here (`apt-get install -y iptables`; `cargo xtask
/// setup` installs it).
const IPTABLES: &str = "/usr/sbin/iptables-legacy";
/// Queue numbers are per network namespace: each impaired one uses 0
/// (also spelled out in [`RULE`]).
const QUEUE_NUM: u16 = 0;
/// The rule, after `-t mangle -A` / `-D`. `--queue-bypass` lets packets
/// through untouched whenever no reader is bound (e.g. after a crash).
const RULE: &[&str] = &[
    "POSTROUTING",
    "!",
    "-o",
    "lo",
    "-p",
    "tcp",
    "-j",
    "NFQUEUE",
    "--queue-num",
    "0",
    "--queue-bypass",
];
/// Packets held at once (queued in the kernel and not yet given a
/// verdict); past that the kernel drops new ones, like netem's `limit`.
const QUEUE_MAX_LEN: u32 = 10_000;
/// How often the reader looks for new packets, due packets and a stop
/// request (nfq's socket is not exposed for poll(2)).
pub const POLL: Duration = Duration::from_millis(1);

/// What to do to the packets that leave a network namespace (netem-style).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairment {
    /// Added to every packet's departure.
    pub delay: Duration,
    /// Probability (0.0..=1.0) that a packet is dropped instead.
    pub loss: f64,
}

/// Packets the reader has let through or dropped so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Let through (after the delay, or at removal).
    pub accepted: u64,
    /// Dropped (the `loss` draw).
    pub dropped: u64,
}

/// While alive, every TCP packet leaving the namespace through a
/// non-loopback interface is delayed and/or dropped; dropping it removes
/// the rule and stops the thread (also on panic), leaving nothing behind.
#[derive(Debug)]
pub struct Impaired {
    what: String,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    reader: Option<JoinHandle<Result<()>>>,
}

/// Starts impairing the TCP packets that leave `netns`. Fails (naming the
/// cause) if iptables-legacy or the kernel's NFQUEUE is missing, or if the
/// namespace is impaired already.
pub fn impair(netns: &Netns, what: Impairment) -> Result<Impaired> {
    if !(0.0..=1.0).contains(&what.loss) {
        bail!(
            "impairment loss {} is not a probability in 0..=1",
            what.loss
        );
    }
    let name = netns.name().to_string();
    let label = format!("impairment {what:?} of netns {name}");
    let file = netns.open()?;
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let (started_tx, started_rx) = mpsc::channel();
    let reader = {
        let (stop, counters) = (stop.clone(), counters.clone());
        std::thread::Builder::new()
            .name(format!("impair-{name}"))
            .spawn(move || serve(file, &name, what, &stop, &counters, started_tx))
            .with_context(|| format!("starting the thread of {label}"))?
    };
    match started_rx.recv() {
        Ok(Ok(())) => Ok(Impaired {
            what: label,
            stop,
            counters,
            reader: Some(reader),
        }),
        Ok(Err(e)) => Err(e.context(format!("starting {label}"))),
        Err(_) => {
            let _ = reader.join();
            bail!("the thread of {label} ended before it started")
        }
    }
}

// === impl Impaired ===

impl Impaired {
    /// Packets let through and dropped so far.
    pub fn counts(&self) -> Counts {
        Counts {
            accepted: self.counters.accepted.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }

    /// Stops, as dropping does, but returns what went wrong (dropping only
    /// prints it).
    pub fn remove(mut self) -> Result<Counts> {
        self.finish()?;
        Ok(self.counts())
    }

    /// Removes the rule, releases the held packets, joins the thread.
    fn finish(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        let reader = self.reader.take().context("impairment already removed")?;
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("the thread of {} panicked", self.what))?
            .with_context(|| format!("removing {}", self.what))
    }
}

impl Drop for Impaired {
    fn drop(&mut self) {
        if self.reader.is_some()
            && let Err(e) = self.finish()
        {
            eprintln!("weft-sim: {e:#}");
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    dropped: AtomicU64,
}

/// The reader thread: enters the namespace, binds the queue, adds the rule,
/// reports that to [`impair`], relays packets until stopped, then removes
/// the rule and releases whatever it still holds.
fn serve(
    file: File,
    name: &str,
    what: Impairment,
    stop: &AtomicBool,
    counters: &Counters,
    started: mpsc::Sender<Result<()>>,
) -> Result<()> {
    let set_up = setns(&file, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns into network namespace {name}"))
        .and_then(|()| open_queue())
        .and_then(|queue| Ok((queue, Rule::add()?)));
    let (queue, mut rule) = match set_up {
        Ok(ready) => ready,
        Err(e) => {
            let _ = started.send(Err(e));
            return Ok(());
        }
    };
    let _ = started.send(Ok(()));
    let mut relay = Relay::new(queue, what, seed(name), counters);
    let relayed = relay.run(stop);
    // The rule goes first, so nothing new is queued while the held
    // packets are released.
    let removed = rule.remove();
    let released = relay.release_all();
    relayed.and(removed).and(released)
}

/// Opens a netfilter queue socket (in the calling thread's namespace),
/// bound to [`QUEUE_NUM`], copying packet metadata only.
fn open_queue() -> Result<Queue> {
    let mut queue = Queue::open().context(
        "opening a netfilter queue socket (is CONFIG_NETFILTER_NETLINK_QUEUE in the kernel?)",
    )?;
    close_on_exec_nfnetlink().context("marking the netfilter queue socket close-on-exec")?;
    queue.bind(QUEUE_NUM).with_context(|| {
        format!("binding netfilter queue {QUEUE_NUM} (is this namespace impaired already?)")
    })?;
    queue
        .set_copy_range(QUEUE_NUM, 0)
        .context("setting the queue's copy range")?;
    queue
        .set_queue_max_len(QUEUE_NUM, QUEUE_MAX_LEN)
        .context("setting the queue's length")?;
    queue.set_nonblocking(true);
    Ok(queue)
}

/// nfq opens its socket without `SOCK_CLOEXEC` and does not expose it, so
/// every process spawned while it is open would inherit it (and keep the
/// namespace alive). This marks every netfilter netlink socket of this
/// process close-on-exec.
fn close_on_exec_nfnetlink() -> Result<()> {
    for entry in
        std::fs::read_dir("/proc/thread-self/fd").context("listing /proc/thread-self/fd")?
    {
        let Ok(fd) = entry?.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        if socket_option(fd, libc::SO_DOMAIN) == Some(libc::AF_NETLINK)
            && socket_option(fd, libc::SO_PROTOCOL) == Some(libc::NETLINK_NETFILTER)
        {
            // SAFETY: fcntl on a descriptor number; at worst EBADF.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
                return Err(std::io::Error::last_os_error()).context(format!("fcntl({fd})"));
            }
        }
    }
    Ok(())
}

/// An integer `SOL_SOCKET` option of `fd`, or `None` if it is no socket.
fn socket_option(fd: RawFd, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

/// The iptables rule in the calling thread's namespace; removed on drop
/// if [`Rule::remove`] was not called (e.g. the reader panicked).
struct Rule {
    present: bool,
}

// === impl Rule ===

impl Rule {
    fn add() -> Result<Rule> {
        iptables("-A")?;
        Ok(Rule { present: true })
    }

    fn remove(&mut self) -> Result<()> {
        if std::mem::take(&mut self.present) {
            iptables("-D")?;
        }
        Ok(())
    }
}

impl Drop for Rule {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("weft-sim: {e:#}");
        }
    }
}

/// Runs `iptables-legacy -t mangle <op> <RULE>` in the calling thread's
/// namespace (a child inherits the namespaces of the thread that forks it).
fn iptables(op: &str) -> Result<()> {
    let mut args = vec!["-w", "10", "-t", "mangle", op];
    args.extend_from_slice(RULE);
    let line = format!("{IPTABLES} {}", args.join(" "));
    let out = Command::new(IPTABLES)
        .args(&args)
        .output()
        .with_context(|| {
            format!(
                "running `{line}` (is iptables-legacy installed? `apt-get install -y iptables`)"
            )
        })?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The PRNG's seed: from the namespace's name, so a name always gives the
/// same sequence of drop decisions.
fn seed(name: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish() | 1
}

/// Holds packets until their deadline, in arrival order.
struct Relay<'a> {
    queue: Queue,
    what: Impairment,
    rng: XorShift,
    held: VecDeque<(Instant, Message)>,
    counters: &'a Counters,
}

// === impl Relay ===

impl<'a> Relay<'a> {
    fn new(queue: Queue, what: Impairment, seed: u64, counters: &'a Counters) -> Relay<'a> {
        Relay {
            queue,
            what,
            rng: XorShift(seed),
            held: VecDeque::new(),
            counters,
        }
    }

    /// Relays until `stop` is set.
    fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let got = self.receive(now)?;
            self.release_due(now)?;
            if !got {
                let next = self
                    .held
                    .front()
                    .map(|(due, _)| due.saturating_duration_since(now));
                std::thread::sleep(next.map_or(POLL, |next| next.min(POLL)));
            }
        }
        Ok(())
    }

    /// Takes every packet the kernel has queued: drops it with probability
    /// `loss`, else holds it until `now + delay`. Returns whether any came.
    fn receive(&mut self, now: Instant) -> Result<bool> {
        let mut got = false;
        while let Some(msg) = self.next_message()? {
            got = true;
            if self.what.loss > 0.0 && self.rng.next_f64() < self.what.loss {
                self.verdict(msg, Verdict::Drop)?;
            } else {
                self.held.push_back((now + self.what.delay, msg));
            }
        }
        Ok(got)
    }

    /// The next queued packet, or `None` if there is none right now.
    fn next_message(&mut self) -> Result<Option<Message>> {
        match self.queue.recv() {
            Ok(msg) => Ok(Some(msg)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e).context("reading the netfilter queue"),
        }
    }

    /// Lets through the held packets whose deadline has come.
    fn release_due(&mut self, now: Instant) -> Result<()> {
        while self.held.front().is_some_and(|(due, _)| *due <= now) {
            let (_, msg) = self.held.pop_front().expect("checked above");
            self.verdict(msg, Verdict::Accept)?;
        }
        Ok(())
    }

    /// Lets through everything held or still queued (once the rule is
    /// gone), then unbinds the queue.
    fn release_all(&mut self) -> Result<()> {
        let mut result = Ok(());
        while let Some((_, msg)) = self.held.pop_front() {
            result = result.and(self.verdict(msg, Verdict::Accept));
        }
        loop {
            match self.next_message() {
                Ok(Some(msg)) => result = result.and(self.verdict(msg, Verdict::Accept)),
                Ok(None) => break,
                Err(e) => {
                    result = result.and(Err(e));
                    break;
                }
            }
        }
        let unbound = self
            .queue
            .unbind(QUEUE_NUM)
            .context("unbinding the netfilter queue");
        result.and(unbound)
    }

    fn verdict(&mut self, mut msg: Message, verdict: Verdict) -> Result<()> {
        let counter = match verdict {
            Verdict::Drop => &self.counters.dropped,
            _ => &self.counters.accepted,
        };
        msg.set_verdict(verdict);
        self.queue
            .verdict(msg)
            .with_context(|| format!("giving a packet verdict {verdict:?}"))?;
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// xorshift64*: plenty for drop decisions.
struct XorShift(u64);

// === impl XorShift ===

impl XorShift {
    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};

    use super::*;
    use crate::cleanup::RunId;
    use crate::netns::delete_netns;

    const SERVER: &str = "10.250.0.1:7000";
    const ROUNDS: usize = 10;
    const DELAY: Duration = Duration::from_millis(30);

    /// Deletes the test's namespaces when dropped, also when it fails.
    #[derive(Default)]
    struct Namespaces(Vec<String>);

    impl Namespaces {
        fn create(&mut self, name: &str) -> Result<Netns> {
            let ns = Netns::create(name)?;
            self.0.push(name.to_string());
            Ok(ns)
        }
    }

    impl Drop for Namespaces {
        fn drop(&mut self) {
            for name in &self.0 {
                if let Err(e) = delete_netns(name) {
                    eprintln!("deleting netns {name}: {e:#}");
                }
            }
        }
    }

    /// Two namespaces joined by a veth pair: server `10.250.0.1`, client
    /// `10.250.0.2`.
    fn veth_pair(run: &RunId, namespaces: &mut Namespaces) -> Result<(Netns, Netns)> {
        let server = namespaces.create(&run.netns("impair-server"))?;
        let client = namespaces.create(&run.netns("impair-client"))?;
        client.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            server.name(),
        ])?;
        for (ns, ip) in [(&server, "10.250.0.1/24"), (&client, "10.250.0.2/24")] {
            ns.ip(&["addr", "add", ip, "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
        }
        Ok((server, client))
    }

    /// Echoes one connection until it closes.
    fn echo_server(ns: &Netns) -> Result<JoinHandle<std::io::Result<()>>> {
        let listener = ns.run(|| TcpListener::bind(SERVER))??;
        Ok(std::thread::spawn(move || {
            let (mut conn, _) = listener.accept()?;
            conn.set_nodelay(true)?;
            let mut buf = [0u8; 64];
            loop {
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                conn.write_all(&buf[..n])?;
            }
        }))
    }

    fn connect(ns: &Netns) -> Result<TcpStream> {
        let addr: SocketAddr = SERVER.parse()?;
        let stream = ns.run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5)))??;
        stream.set_nodelay(true)?;
        // Long enough for a message whose segments 30% loss drops
        // several times in a row: each retransmission waits twice as long
        // as the one before (seven in a row take over 25 s).
        stream.set_read_timeout(Some(Duration::from_secs(90)))?;
        Ok(stream)
    }

    /// The median round trip of `rounds` 16-byte messages, each checked.
    fn round_trip(stream: &mut TcpStream, rounds: usize) -> Result<Duration> {
        let mut times = Vec::new();
        for i in 0..rounds {
            let sent = [i as u8; 16];
            let mut echoed = [0u8; 16];
            let start = Instant::now();
            stream.write_all(&sent).context("sending")?;
            stream.read_exact(&mut echoed).context("reading the echo")?;
            times.push(start.elapsed());
            assert_eq!(sent, echoed, "the echo of message {i}");
        }
        times.sort();
        Ok(times[times.len() / 2])
    }

    /// `RetransSegs` of `/proc/net/snmp` as seen from `ns` (per namespace;
    /// `/proc/net` would follow the main thread's namespace).
    fn retransmits(ns: &Netns) -> Result<u64> {
        let snmp = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
        let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
        let (names, values) = (
            tcp.next().context("no Tcp: header")?,
            tcp.next().context("no Tcp: values")?,
        );
        let at = names
            .split_whitespace()
            .position(|n| n == "RetransSegs")
            .context("no RetransSegs")?;
        Ok(values
            .split_whitespace()
            .nth(at)
            .context("no RetransSegs value")?
            .parse()?)
    }

    /// The mangle table's rules in `ns`.
    fn mangle_rules(ns: &Netns) -> Result<String> {
        let out = ns.run(|| {
            Command::new(IPTABLES)
                .args(["-w", "10", "-t", "mangle", "-S"])
                .output()
        })??;
        assert!(out.status.success(), "{IPTABLES} -t mangle -S: {out:?}");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn assert_no_rule(ns: &Netns) -> Result<()> {
        let rules = mangle_rules(ns)?;
        assert!(
            !rules.contains("NFQUEUE"),
            "rule left in {}:\n{rules}",
            ns.name()
        );
        Ok(())
    }

    /// Needs root, iptables-legacy and the kernel's NFQUEUE; fails (never
    /// skips) without them.
    #[test]
    fn impair_delays_and_drops_outgoing_tcp() -> Result<()> {
        let run = RunId::new();
        let mut namespaces = Namespaces::default();
        let (server, client) = veth_pair(&run, &mut namespaces)?;
        let echo = echo_server(&server)?;
        let mut stream = connect(&client)?;

        let baseline = round_trip(&mut stream, ROUNDS)?;
        println!("round trip, unimpaired: {baseline:?}");

        let delayed = impair(
            &client,
            Impairment {
                delay: DELAY,
                ..Default::default()
            },
        )?;
        assert!(
            mangle_rules(&client)?.contains("NFQUEUE"),
            "no rule while impaired"
        );
        let slow = round_trip(&mut stream, ROUNDS)?;
        let counts = delayed.remove()?;
        println!("round trip, client delayed {DELAY:?}: {slow:?} ({counts:?})");
        assert_no_rule(&client)?;
        let grown = slow.saturating_sub(baseline);
        assert!(
            (Duration::from_millis(25)..=Duration::from_millis(200)).contains(&grown),
            "round trip grew by {grown:?} ({baseline:?} -> {slow:?}) under a {DELAY:?} delay"
        );

        // Queue 0 in each of two namespaces at once: queue numbers are per
        // namespace, and both directions add up.
        let both = [
            impair(
                &client,
                Impairment {
                    delay: DELAY,
                    ..Default::default()
                },
            )?,
            impair(
                &server,
                Impairment {
                    delay: DELAY,
                    ..Default::default()
                },
            )?,
        ];
        assert!(
            impair(&client, Impairment::default()).is_err(),
            "a second impairment of one namespace must fail"
        );
        let slower = round_trip(&mut stream, ROUNDS)?;
        drop(both);
        println!("round trip, both ends delayed {DELAY:?}: {slower:?}");
        assert_no_rule(&client)?;
        assert_no_rule(&server)?;
        let grown = slower.saturating_sub(baseline);
        assert!(
            (Duration::from_millis(55)..=Duration::from_millis(250)).contains(&grown),
            "round trip grew by {grown:?} with both ends delayed {DELAY:?}"
        );

        let before = retransmits(&client)?;
        let lossy = impair(
            &client,
            Impairment {
                loss: 0.3,
                ..Default::default()
            },
        )?;
        let started = Instant::now();
        round_trip(&mut stream, 2 * ROUNDS)?;
        let took = started.elapsed();
        let counts = lossy.remove()?;
        let after = retransmits(&client)?;
        println!(
            "30% loss: {} round trips in {took:?}, {counts:?}, client RetransSegs {before} -> {after}",
            2 * ROUNDS
        );
        assert_no_rule(&client)?;
        assert!(
            counts.dropped > 0,
            "nothing dropped at 30% loss: {counts:?}"
        );
        assert!(
            after > before,
            "no retransmission at 30% loss: {before} -> {after}"
        );

        let again = round_trip(&mut stream, ROUNDS)?;
        println!("round trip, impairments removed: {again:?}");
        assert!(
            again < baseline + Duration::from_millis(10),
            "still slow: {again:?}"
        );

        drop(stream);
        echo.join().expect("echo server panicked")?;
        Ok(())
    }

    #[test]
    fn impair_rejects_a_loss_that_is_no_probability() {
        let err = impair(
            &Netns::named("never-created"),
            Impairment {
                loss: 1.5,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a probability"), "{err:#}");
    }
}
