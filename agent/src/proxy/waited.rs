//! A captured L4 connection's stages, from the accept to the first byte
//! back, recorded into its pod's wait histograms as it passes each; and,
//! when a DestinationRule's cluster picked its endpoint, what the rule
//! says of them (the connect's bound, TLS, the relay's limits, and the
//! connect's outcome for outlier detection).

use std::{sync::Arc, time::Duration};

use super::{PodContext, limits};
use crate::{
    l7::l4::{ConnectOutcome, Hold},
    metrics::waits::Wait,
};

/// The waits of one captured L4 connection, recorded into its pod's
/// histograms as it passes each stage ([`crate::metrics::waits`]).
pub(crate) struct Waited {
    pod: Arc<PodContext>,
    /// When the last stage ended (monotonic ns); `0`: waits not recorded.
    since_ns: u64,
    /// Told when the upstream is connected: the endpoint's cluster, when
    /// a DestinationRule picked it (its outlier detection).
    outcome: Option<ConnectOutcome>,
    /// The DestinationRule's limits on the relay.
    limits: limits::RelayLimits,
    /// The DestinationRule's `connectTimeout` (`None`: the agent's).
    pub(super) connect_timeout: Option<Duration>,
    /// The DestinationRule's TLS origination, for a destination outside
    /// the mesh, and the host it is for.
    pub(super) tls: Option<(Arc<crate::l7::cluster::Cluster>, String)>,
}

impl Waited {
    /// Accepted at `accepted_ns` (`0`: not recorded), its SYN sent at
    /// `syn_sent_ns` as the programs stamped it: records the capture wait.
    pub(super) fn new(pod: &Arc<PodContext>, accepted_ns: u64, syn_sent_ns: Option<u64>) -> Waited {
        if accepted_ns != 0
            && let Some(waited) = syn_sent_ns.and_then(|syn| accepted_ns.checked_sub(syn))
        {
            pod.waits.record(Wait::Capture, waited);
        }
        Waited {
            pod: pod.clone(),
            since_ns: accepted_ns,
            outcome: None,
            limits: limits::RelayLimits::default(),
            connect_timeout: None,
            tls: None,
        }
    }

    /// A DestinationRule's cluster picked the endpoint: its limits, its
    /// TLS (taken: only the connect needs it), and its outlier detection
    /// to tell.
    pub(super) fn steered_by(&mut self, hold: &mut Hold) {
        self.outcome = Some(hold.outcome.clone());
        self.limits = hold.relay;
        self.connect_timeout = hold.connect_timeout;
        self.tls = hold.tls.take();
    }

    /// The upstream is connected: records the wait since the accept (and
    /// the connect's success at the endpoint's cluster), and returns the
    /// relay's progress, which records the first byte back.
    pub(super) fn upstream_connected(self) -> limits::Progress {
        if let Some(outcome) = &self.outcome {
            outcome.report(true);
        }
        if self.since_ns == 0 {
            return limits::Progress::default().limited(self.limits);
        }
        let now = self
            .pod
            .waits
            .record_since(Wait::UpstreamConnect, self.since_ns);
        limits::Progress::first_byte_to(self.pod, now).limited(self.limits)
    }
}
