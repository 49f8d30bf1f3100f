//! Where the agent's log lines go: a buffer in memory that a thread of its
//! own (`weft-log`) writes to stdout in batches.
//!
//! With L7 the access log is one line per request, so a line must cost the
//! proxy's threads as little as possible: appending to a shared buffer
//! under a short lock, and waking the writer only when the buffer was
//! empty. The writer then gathers for [`GATHER`] before it writes, so under
//! load one `write(2)` and one wake-up carry many lines; an idle agent's
//! line is out within about a millisecond. Nothing is ever dropped: when
//! stdout cannot keep up and [`LIMIT`] bytes are waiting, the proxy's
//! threads wait for the writer rather than lose their access log.
//!
//! The writer also keeps the last [`RECENT`] bytes of lines in memory, off
//! the proxy's path, for the admin API's `/logs` (what `weftctl
//! bug-report` collects). [`LogLevel`] is the filter that `/logging`
//! reads and changes while the agent runs.

use std::{
    collections::VecDeque,
    io::{self, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::Duration,
};

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// How long the writer collects lines after the first one arrives.
pub const GATHER: Duration = Duration::from_millis(1);

/// Bytes waiting beyond which writers wait for the writer thread.
pub const LIMIT: usize = 4 << 20;

/// Bytes of the most recent lines kept in memory (whole lines).
pub const RECENT: usize = 1 << 20;

struct Pending {
    lines: Vec<u8>,
    /// Set by [`FlushOnDrop`]: write what is left, then stop.
    closing: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Lines arrived in an empty buffer, or closing.
    arrived: Condvar,
    /// The writer took the buffer (for writers over [`LIMIT`]).
    drained: Condvar,
    /// The last lines written, at most [`RECENT`] bytes; only the writer
    /// thread and `/logs` take this lock.
    recent: Mutex<VecDeque<u8>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A thread that panicked while appending left whole lines or a
        // partial one; the log is still worth writing.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The [`MakeWriter`] handed to `tracing_subscriber`.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

/// Writes what is still buffered when dropped (at the end of `main`).
pub struct FlushOnDrop {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A sink writing to `out` from a thread named `weft-log`.
pub fn to(out: Box<dyn Write + Send>) -> io::Result<(LogSink, FlushOnDrop)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending {
            lines: Vec::with_capacity(BATCH),
            closing: false,
        }),
        arrived: Condvar::new(),
        drained: Condvar::new(),
        recent: Mutex::new(VecDeque::with_capacity(RECENT)),
    });
    let thread = std::thread::Builder::new().name("weft-log".into()).spawn({
        let shared = shared.clone();
        move || write_loop(&shared, out)
    })?;
    Ok((
        LogSink {
            shared: shared.clone(),
        },
        FlushOnDrop {
            shared,
            thread: Some(thread),
        },
    ))
}

/// A batch buffer's usual capacity.
pub(crate) const BATCH: usize = 64 * 1024;

/// Capacity past which a written batch's buffer is given back.
const BATCH_KEPT: usize = 1 << 20;

/// Empties a written batch for the next one; a buffer that a burst of
/// lines grew past 1 MiB goes back to [`BATCH`], so that the burst's
/// memory does not stay with the agent.
pub(crate) fn reuse_batch(batch: &mut Vec<u8>) {
    batch.clear();
    if batch.capacity() > BATCH_KEPT {
        *batch = Vec::with_capacity(BATCH);
    }
}

fn write_loop(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let closing = {
            let mut pending = shared.lock();
            while pending.lines.is_empty() && !pending.closing {
                pending = shared
                    .arrived
                    .wait(pending)
                    .unwrap_or_else(|e| e.into_inner());
            }
            pending.closing
        };
        if !closing {
            std::thread::sleep(GATHER);
        }
        {
            let mut pending = shared.lock();
            std::mem::swap(&mut pending.lines, &mut batch);
        }
        shared.drained.notify_all();
        remember(&shared.recent, &batch);
        // stdout gone (a closed pipe): nothing better to do with the lines.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        reuse_batch(&mut batch);
        if closing && shared.lock().lines.is_empty() {
            return;
        }
    }
}

/// Appends `batch` to the recent lines, dropping the oldest whole lines
/// beyond [`RECENT`] bytes.
fn remember(recent: &Mutex<VecDeque<u8>>, batch: &[u8]) {
    let mut recent = recent.lock().unwrap_or_else(|e| e.into_inner());
    let batch = &batch[batch.len().saturating_sub(RECENT)..];
    recent.extend(batch);
    if recent.len() > RECENT {
        let excess = recent.len() - RECENT;
        recent.drain(..excess);
        // Start at a line: drop what is left of the cut one.
        let cut = recent.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        recent.drain(..cut);
    }
}

impl LogSink {
    /// The most recent lines written (at most [`RECENT`] bytes).
    pub fn recent(&self) -> Vec<u8> {
        let recent = self.shared.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().copied().collect()
    }
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut pending = self.shared.lock();
        while pending.lines.len() >= LIMIT && !pending.closing {
            pending = self
                .shared
                .drained
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
        let was_empty = pending.lines.is_empty();
        pending.lines.extend_from_slice(buf);
        drop(pending);
        if was_empty {
            self.shared.arrived.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LogSink;

    fn make_writer(&'a self) -> LogSink {
        self.clone()
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.arrived.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// === impl LogLevel ===

/// The names `/logging` accepts, as `tracing` spells them.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Why a log level was refused.
#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    #[error(
        "`{value}` is not a log level: use one of trace, debug, info, warn, error, off, or comma-separated target=level pairs (e.g. info,weft_agent::l7=debug)"
    )]
    Invalid { value: String },
    #[error("cannot apply the log level `{value}`: {reason}")]
    Reload { value: String, reason: String },
}

/// Applies a new filter to the running subscriber (a
/// `tracing_subscriber::reload` handle in the binary).
type Apply = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// The agent's log filter (`WEFT_LOG`'s syntax), changeable while it runs.
pub struct LogLevel {
    current: Mutex<String>,
    apply: Apply,
}

impl LogLevel {
    /// `initial` is in force; `apply` puts a new filter in force.
    pub fn new(
        initial: impl Into<String>,
        apply: impl Fn(EnvFilter) -> Result<(), String> + Send + Sync + 'static,
    ) -> LogLevel {
        LogLevel {
            current: Mutex::new(initial.into()),
            apply: Box::new(apply),
        }
    }

    /// The filter in force, as it was set.
    pub fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts `value` in force: a level (`debug`), or `target=level` pairs
    /// and at most one bare level, comma-separated. Anything else is
    /// refused, naming it (a bare word would otherwise be a target name,
    /// silently matching nothing).
    pub fn set(&self, value: &str) -> Result<(), LevelError> {
        let value = value.trim();
        let invalid = || LevelError::Invalid {
            value: value.to_string(),
        };
        let level_ok = |l: &str| LEVELS.iter().any(|n| n.eq_ignore_ascii_case(l));
        let target_ok = |t: &str| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'))
        };
        if value.is_empty() {
            return Err(invalid());
        }
        for directive in value.split(',') {
            let ok = match directive.trim().split_once('=') {
                Some((target, level)) => target_ok(target) && level_ok(level),
                None => level_ok(directive.trim()),
            };
            if !ok {
                return Err(invalid());
            }
        }
        let filter = EnvFilter::try_new(value).map_err(|_| invalid())?;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (self.apply)(filter).map_err(|reason| LevelError::Reload {
            value: value.to_string(),
            reason,
        })?;
        *current = value.to_string();
        Ok(())
    }
}

/// What the admin API reads and changes of the agent's logging.
#[derive(Clone)]
pub struct Logging {
    level: Arc<LogLevel>,
    sink: Option<LogSink>,
}

impl Logging {
    /// `sink`: where the recent lines are kept (`None`: not kept).
    pub fn new(level: LogLevel, sink: Option<LogSink>) -> Logging {
        Logging {
            level: Arc::new(level),
            sink,
        }
    }

    /// The log filter.
    pub fn level(&self) -> &LogLevel {
        &self.level
    }

    /// The most recent lines, if this process keeps them.
    pub fn recent(&self) -> Option<Vec<u8>> {
        self.sink.as_ref().map(LogSink::recent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_a_burst_grew_is_given_back_after_its_write() {
        let mut batch = Vec::with_capacity(BATCH);
        batch.extend_from_slice(&[b'x'; 100]);
        reuse_batch(&mut batch);
        assert!(batch.is_empty() && batch.capacity() >= BATCH);
        batch.extend_from_slice(&vec![b'x'; 4 << 20]);
        reuse_batch(&mut batch);
        assert!(batch.is_empty());
        assert!(batch.capacity() < BATCH_KEPT, "{}", batch.capacity());
    }

    /// An `out` the test can read back.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_from_every_thread_is_written_once_by_the_end() {
        let capture = Capture::default();
        let (sink, flush) = to(Box::new(capture.clone())).unwrap();
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let mut sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        sink.write_all(format!("t{t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        drop(flush);
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 40_000);
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            assert_eq!(mine.len(), 10_000);
            // One thread's lines keep their order.
            assert_eq!(mine[9_999], format!("t{t} line 9999"));
            assert_eq!(mine[0], format!("t{t} line 0"));
        }
    }

    #[test]
    fn a_line_is_written_without_waiting_for_more() {
        let capture = Capture::default();
        let (mut sink, _flush) = to(Box::new(capture.clone())).unwrap();
        sink.write_all(b"alone\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while capture.0.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "a lone line was never written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(&capture.0.lock().unwrap()[..], b"alone\n");
    }

    #[test]
    fn recent_keeps_the_last_whole_lines() {
        let recent = Mutex::new(VecDeque::new());
        let line = |i: usize| format!("line {i:07}\n");
        let mut total = 0;
        let mut i = 0;
        while total < RECENT * 2 {
            let batch: String = (i..i + 1000).map(line).collect();
            total += batch.len();
            i += 1000;
            remember(&recent, batch.as_bytes());
        }
        let kept: Vec<u8> = recent.lock().unwrap().iter().copied().collect();
        let text = String::from_utf8(kept).unwrap();
        assert!(text.len() <= RECENT && text.len() > RECENT - 20);
        assert!(text.starts_with("line "), "{}", &text[..20]);
        assert!(text.ends_with(&line(i - 1)));
    }

    #[test]
    fn log_level_is_validated_and_applied() {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let level = LogLevel::new("info", {
            let applied = applied.clone();
            move |f: EnvFilter| {
                applied.lock().unwrap().push(f.to_string());
                Ok(())
            }
        });
        level.set("debug").unwrap();
        assert_eq!(level.current(), "debug");
        level.set("info,weft_agent::l7=trace").unwrap();
        assert_eq!(level.current(), "info,weft_agent::l7=trace");
        for bad in ["verbose", "", "weft_agent=loud", "=debug", "info,,debug"] {
            let err = level.set(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("`{bad}` is not a log level")),
                "{err}"
            );
        }
        assert_eq!(level.current(), "info,weft_agent::l7=trace");
        assert_eq!(applied.lock().unwrap().len(), 2);
    }
}
