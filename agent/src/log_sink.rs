//! Where the agent's log lines go: a buffer in memory that a thread of its
//! own (`weft-log`) writes to stdout in batches.
//!
//! With L7 the access log is one line per request, so a line must cost the
//! proxy's threads as little as possible: appending to a shared buffer
//! under a short lock, and waking the writer only when the buffer was
//! empty. The writer then gathers for [`GATHER`] before it writes, so under
//! load one wake-up (and, to a file, one `write(2)`) carries many lines;
//! an idle agent's line is out within about a millisecond. Nothing is ever dropped: when
//! stdout cannot keep up and [`LIMIT`] bytes are waiting, the proxy's
//! threads wait for the writer rather than lose their access log.
//!
//! Its stdout is often a pipe (a container runtime reads it) that the
//! access log's writer (`access_log::sink`) writes too: there, a batch
//! goes in pieces a pipe writes whole (see [`Output`]), so that neither
//! log's lines land inside the other's.
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

/// The largest write a pipe does atomically (Linux's `PIPE_BUF`).
const PIPE_BUF: usize = 4096;

/// Where a writer thread writes its batches: the agent's stdout, a file,
/// or any writer (tests).
pub struct Output {
    out: Box<dyn Write + Send>,
    /// A batch goes in pieces of at most `PIPE_BUF` bytes that end at a
    /// line's end. Set for a stdout that is not a regular file: two
    /// writers share it (this log and the access log), and a pipe writes
    /// such a piece whole, where a longer write can be split by the
    /// other's when the reader falls behind.
    pieces: bool,
}

impl Output {
    /// The agent's stdout (a duplicate of fd 1, so Rust's `Stdout` lock
    /// and its line buffer are out of the way).
    pub fn stdout() -> Output {
        use std::os::fd::AsFd;
        match io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => Output::shared(std::fs::File::from(fd)),
            Err(_) => Output {
                out: Box::new(io::stdout()),
                pieces: true,
            },
        }
    }

    /// A file that other writers write too (stdout): in pieces, unless it
    /// is a regular file, which serializes every write on it and takes a
    /// batch in one (a few dozen writes would each update the file's
    /// times and journal its inode).
    pub fn shared(file: std::fs::File) -> Output {
        let regular = file.metadata().is_ok_and(|m| m.file_type().is_file());
        Output {
            out: Box::new(file),
            pieces: !regular,
        }
    }

    /// A file, appended to (created if missing); only its writer writes it.
    pub fn file(path: &std::path::Path) -> io::Result<Output> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Output {
            out: Box::new(file),
            pieces: false,
        })
    }

    /// Any writer, a batch in one write (tests).
    pub fn writer(out: Box<dyn Write + Send>) -> Output {
        Output { out, pieces: false }
    }

    /// Writes a batch of whole lines.
    pub(crate) fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        if !self.pieces {
            self.out.write_all(batch)?;
            return self.out.flush();
        }
        let mut rest = batch;
        while !rest.is_empty() {
            let piece = if rest.len() <= PIPE_BUF {
                rest.len()
            } else {
                // Up to the last line end within PIPE_BUF; a longer line
                // goes whole.
                match rest[..PIPE_BUF].iter().rposition(|b| *b == b'\n') {
                    Some(end) => end + 1,
                    None => rest
                        .iter()
                        .position(|b| *b == b'\n')
                        .map_or(rest.len(), |end| end + 1),
                }
            };
            self.out.write_all(&rest[..piece])?;
            rest = &rest[piece..];
        }
        self.out.flush()
    }
}

/// A sink writing to `out` from a thread named `weft-log`.
pub fn to(out: Output) -> io::Result<(LogSink, FlushOnDrop)> {
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

fn write_loop(shared: &Shared, mut out: Output) {
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
        let _ = out.write_batch(&batch);
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

    /// An `out` that keeps each write's size.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<usize>>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn numbered_lines(count: usize) -> Vec<u8> {
        (0..count)
            .flat_map(|i| format!("line number {i:05}\n").into_bytes())
            .collect()
    }

    #[test]
    fn a_pipe_takes_a_batch_in_pieces_that_end_at_a_line_and_a_file_in_one() {
        let batch = numbered_lines(500);
        let writes = Writes::default();
        let mut output = Output {
            out: Box::new(writes.clone()),
            pieces: true,
        };
        output.write_batch(&batch).unwrap();
        let sizes = writes.0.lock().unwrap().clone();
        assert!(
            sizes.len() > 1 && sizes.iter().all(|n| *n <= PIPE_BUF),
            "{sizes:?}"
        );
        let mut at = 0;
        for n in sizes {
            at += n;
            assert_eq!(batch[at - 1], b'\n', "a piece ends inside a line");
        }
        assert_eq!(at, batch.len());

        // Which is which, as stdout.
        let (_reader, writer) = io::pipe().unwrap();
        let pipe = std::fs::File::from(std::os::fd::OwnedFd::from(writer));
        assert!(Output::shared(pipe).pieces, "a pipe shared by two writers");
        let file = tempfile::tempfile().unwrap();
        assert!(!Output::shared(file).pieces, "a regular file");
    }

    /// The agent's log and the access log on one pipe whose reader falls
    /// behind (as a container runtime's can): every line of both arrives
    /// whole. With a batch in one write, the log's batches were cut by the
    /// access log's writes.
    #[test]
    fn two_logs_on_a_slow_pipe_keep_their_lines_whole() {
        use std::{io::Read, os::fd::OwnedFd};
        let (mut reader, writer) = io::pipe().unwrap();
        let log_end = std::fs::File::from(OwnedFd::from(writer.try_clone().unwrap()));
        let access_end = std::fs::File::from(OwnedFd::from(writer));
        let (log, flush) = to(Output::shared(log_end)).unwrap();
        let access = crate::access_log::sink::Sink::start(Output::shared(access_end)).unwrap();
        // Read slowly, so that the pipe fills and the writers wait in it.
        let reading = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut chunk = [0; 1024];
            loop {
                match reader.read(&mut chunk).unwrap() {
                    0 => return all,
                    n => all.extend_from_slice(&chunk[..n]),
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        });
        const LINES: usize = 3_000;
        let logging = std::thread::spawn({
            let mut log = log.clone();
            move || {
                for i in 0..LINES {
                    // One write a line, as tracing's formatter does.
                    let line = format!("log {i:05} {}\n", "l".repeat(90));
                    log.write_all(line.as_bytes()).unwrap();
                }
            }
        });
        for i in 0..LINES {
            access.append(format!("access {i:05} {}\n", "a".repeat(70)).as_bytes());
            if i % 100 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        logging.join().unwrap();
        access.flush();
        assert_eq!(access.dropped(), 0);
        // Both write ends close: the log's at its flush, the access log's
        // when its writer stops after its last sink.
        drop((log, flush, access));
        let text = String::from_utf8(reading.join().unwrap()).unwrap();
        let (mut logs, mut accesses) = (0, 0);
        for line in text.lines() {
            let whole_log = line.len() == 100 && line.starts_with("log ") && line.ends_with('l');
            let whole_access =
                line.len() == 83 && line.starts_with("access ") && line.ends_with('a');
            assert!(whole_log || whole_access, "a line cut by another: {line:?}");
            logs += usize::from(whole_log);
            accesses += usize::from(whole_access);
        }
        assert_eq!((logs, accesses), (LINES, LINES));
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
        let (sink, flush) = to(Output::writer(Box::new(capture.clone()))).unwrap();
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
        let (mut sink, _flush) = to(Output::writer(Box::new(capture.clone()))).unwrap();
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
