//! Where access-log lines go: a bounded buffer in memory that a thread of
//! its own (`weft-access-log`) writes out in batches, as
//! [`crate::log_sink`] does for the agent's own log, with one difference:
//! the proxy never waits. When [`LIMIT`] bytes are already waiting (the
//! output cannot keep up), a line is dropped and counted
//! (`weft_agent_access_log_dropped_total`) instead.
//!
//! The writer is woken only when it has nothing to do: while lines keep
//! coming it wakes every [`GATHER`] on its own and takes what gathered,
//! so under load appending a line costs the proxy no wake-up (no futex
//! call, no context switch), and the writer runs at most `1 / GATHER`
//! times a second.
//!
//! Writes go through [`Output`], as the agent's own log's do: to a stdout
//! that is a pipe, in pieces the pipe writes whole, so that the two logs'
//! lines never land inside each other.

use std::{
    io,
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::log_sink::Output;

/// How long the writer collects lines between writes while they come.
pub const GATHER: Duration = Duration::from_millis(20);

/// Bytes waiting beyond which lines are dropped.
pub const LIMIT: usize = 4 << 20;

struct Shared {
    pending: Mutex<Pending>,
    arrived: Condvar,
    output: Mutex<Output>,
    dropped: AtomicU64,
    written: AtomicU64,
    /// Every [`Sink`] is gone: the writer writes what is left and stops.
    closed: AtomicBool,
}

/// Lines waiting, and whether the writer sleeps until told.
struct Pending {
    lines: Vec<u8>,
    parked: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The proxy's side: append a line. Clones share the buffer; when the
/// last is dropped, the writer finishes and its output is closed.
#[derive(Clone)]
pub struct Sink {
    shared: Arc<Shared>,
    _open: Arc<Open>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").finish_non_exhaustive()
    }
}

/// Held by every clone of a [`Sink`]; its drop stops the writer.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        // Taken so that a writer between its check and its wait does not
        // miss the wake-up.
        drop(self.0.lock());
        self.0.arrived.notify_one();
    }
}

impl Sink {
    /// A sink writing to `output` from a thread named `weft-access-log`.
    pub fn start(output: Output) -> io::Result<Sink> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                lines: Vec::with_capacity(crate::log_sink::BATCH),
                parked: false,
            }),
            arrived: Condvar::new(),
            output: Mutex::new(output),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        std::thread::Builder::new()
            .name("weft-access-log".into())
            .spawn({
                let shared = shared.clone();
                move || write_loop(&shared)
            })?;
        Ok(Sink {
            _open: Arc::new(Open(shared.clone())),
            shared,
        })
    }

    /// Appends one line (with its `\n`); never waits for the writer. A
    /// line that does not fit is dropped and counted.
    pub fn append(&self, line: &[u8]) {
        let mut pending = self.shared.lock();
        if pending.lines.len() + line.len() > LIMIT {
            drop(pending);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            super::DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.lines.extend_from_slice(line);
        // Only a parked writer needs waking; a busy one comes by itself.
        let wake = std::mem::take(&mut pending.parked);
        drop(pending);
        if wake {
            self.shared.arrived.notify_one();
        }
    }

    /// Writes the lines waiting now, on the caller's thread: at exit,
    /// the writer may be asleep in its gathering.
    pub fn flush(&self) {
        write_pending(&self.shared, &mut Vec::new());
    }

    /// Lines this sink dropped.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Batches written so far.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }
}

fn write_loop(shared: &Shared) {
    let mut batch = Vec::with_capacity(crate::log_sink::BATCH);
    loop {
        {
            let mut pending = shared.lock();
            while pending.lines.is_empty() {
                if shared.closed.load(Ordering::Acquire) {
                    return;
                }
                pending.parked = true;
                pending = shared
                    .arrived
                    .wait(pending)
                    .unwrap_or_else(|e| e.into_inner());
            }
            pending.parked = false;
        }
        // Lines are coming: write what gathers every GATHER until a
        // gathering finds none, then park again.
        loop {
            std::thread::sleep(GATHER);
            if !write_pending(shared, &mut batch) {
                break;
            }
        }
    }
}

/// Writes the lines waiting, through `batch`; `false` when there were
/// none. The output is taken before the lines, so that batches taken by
/// the writer and by [`Sink::flush`] are written in the order taken.
fn write_pending(shared: &Shared, batch: &mut Vec<u8>) -> bool {
    let mut output = shared.output.lock().unwrap_or_else(|e| e.into_inner());
    std::mem::swap(&mut shared.lock().lines, batch);
    if batch.is_empty() {
        return false;
    }
    // Output gone (a closed pipe, a full disk): nothing better to do with
    // the lines.
    let _ = output.write_batch(batch);
    drop(output);
    shared.written.fetch_add(1, Ordering::Relaxed);
    crate::log_sink::reuse_batch(batch);
    true
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// An output the test can read back; `stall` holds the writer.
    #[derive(Clone, Default)]
    struct Capture {
        bytes: Arc<Mutex<Vec<u8>>>,
        stall: Arc<Mutex<()>>,
    }

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _held = self.stall.lock().unwrap();
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_last_sink_dropped_writes_what_is_left_and_closes_the_output() {
        let capture = Capture::default();
        let sink = Sink::start(Output::writer(Box::new(capture.clone()))).unwrap();
        let clone = sink.clone();
        sink.append(b"last words\n");
        drop(sink);
        drop(clone);
        // The writer dropped its output (the capture's other handle) once
        // it had written the line and stopped.
        wait_until("the writer stops", || {
            Arc::strong_count(&capture.bytes) == 1
        });
        assert_eq!(capture.bytes.lock().unwrap().as_slice(), b"last words\n");
    }

    #[test]
    fn a_flush_writes_what_waits_at_once_and_in_order() {
        let capture = Capture::default();
        let sink = Sink::start(Output::writer(Box::new(capture.clone()))).unwrap();
        sink.append(b"first\n");
        sink.append(b"second\n");
        // Within the writer's gathering (20 ms): the flush writes them
        // now, unless a slow machine let the writer do it first.
        sink.flush();
        assert_eq!(capture.bytes.lock().unwrap().as_slice(), b"first\nsecond\n");
        sink.append(b"third\n");
        wait_until("the writer writes the next line", || {
            capture.bytes.lock().unwrap().ends_with(b"third\n")
        });
        assert_eq!(
            capture.bytes.lock().unwrap().as_slice(),
            b"first\nsecond\nthird\n"
        );
    }

    #[test]
    fn lines_from_every_thread_are_written_whole() {
        let capture = Capture::default();
        let sink = Sink::start(Output::writer(Box::new(capture.clone()))).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        sink.append(format!("t{t} line {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        wait_until("all lines written", || {
            capture
                .bytes
                .lock()
                .unwrap()
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                == 8_000
        });
        assert_eq!(sink.dropped(), 0);
        let text = String::from_utf8(capture.bytes.lock().unwrap().clone()).unwrap();
        assert!(
            text.lines()
                .all(|l| l.starts_with('t') && l.contains(" line "))
        );
    }

    #[test]
    fn a_full_buffer_drops_and_counts_instead_of_waiting() {
        let capture = Capture::default();
        let stalled = capture.stall.lock().unwrap();
        let sink = Sink::start(Output::writer(Box::new(capture.clone()))).unwrap();
        let line = vec![b'x'; 1023]
            .into_iter()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        // The first batch is taken by the writer, which then blocks.
        sink.append(&line);
        wait_until("the writer took its first batch", || {
            sink.shared.lock().lines.is_empty()
        });
        let started = std::time::Instant::now();
        for _ in 0..(LIMIT / line.len() + 100) {
            sink.append(&line);
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "appending waited"
        );
        assert_eq!(sink.dropped(), 100);
        drop(stalled);
        wait_until("the rest written", || {
            capture.bytes.lock().unwrap().len() == (LIMIT / line.len() + 1) * line.len()
        });
    }
}
