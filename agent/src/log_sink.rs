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

use std::{
    io::{self, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer collects lines after the first one arrives.
pub const GATHER: Duration = Duration::from_millis(1);

/// Bytes waiting beyond which writers wait for the writer thread.
pub const LIMIT: usize = 4 << 20;

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
            lines: Vec::with_capacity(64 * 1024),
            closing: false,
        }),
        arrived: Condvar::new(),
        drained: Condvar::new(),
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

fn write_loop(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut batch = Vec::with_capacity(64 * 1024);
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
        // stdout gone (a closed pipe): nothing better to do with the lines.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if closing && shared.lock().lines.is_empty() {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
