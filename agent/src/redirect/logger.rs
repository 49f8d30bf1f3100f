//! Forwards the eBPF programs' aya-log records to `tracing`.

use tokio::io::unix::AsyncFd;

/// A `log::Log` that re-emits records as `tracing` events under the
/// `weft_ebpf` target.
struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args().to_string();
        match record.level() {
            log::Level::Error => tracing::error!(target: "weft_ebpf", %message),
            log::Level::Warn => tracing::warn!(target: "weft_ebpf", %message),
            log::Level::Info => tracing::info!(target: "weft_ebpf", %message),
            log::Level::Debug => tracing::debug!(target: "weft_ebpf", %message),
            log::Level::Trace => tracing::trace!(target: "weft_ebpf", %message),
        }
    }

    fn flush(&self) {}
}

/// Starts draining the programs' log ring buffer. Returns `None` (and says
/// why) if the object has no logger map; logging is never fatal.
pub fn spawn(ebpf: &mut aya::Ebpf) -> Option<tokio::task::JoinHandle<()>> {
    let logger = match aya_log::EbpfLogger::init_with_logger(ebpf, TracingLog) {
        Ok(logger) => logger,
        Err(err) => {
            tracing::warn!(error = %err, "eBPF log records are not available");
            return None;
        }
    };
    // SAFETY: the AsyncFd owns the logger, so the ring buffer's fd stays
    // open for as long as it is registered.
    let mut async_fd = match unsafe { AsyncFd::register(logger) } {
        Ok(fd) => fd,
        Err(err) => {
            tracing::warn!(error = %err, "cannot poll the eBPF log ring buffer");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            let Ok(mut guard) = async_fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}
