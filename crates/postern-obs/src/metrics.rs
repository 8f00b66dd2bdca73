//! Every metric Postern exports, declared once: its name, help text, unit and labels. Any crate
//! records through these functions (the `metrics` facade's global recorder), so no registry is
//! passed around; without an installed recorder they cost almost nothing.
//!
//! Labels are bounded: an app's published name (unknown hosts under [`UNKNOWN_APP`]), a group or
//! connector ID (bounded by what admins create), a status class, a refusal code, a result.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The app label of requests for a host no app is published on (and of requests answered before
/// routing: `robots.txt`, the identity provider).
pub const UNKNOWN_APP: &str = "-";

/// Histogram buckets in seconds: from a cached page to a slow report, and the app timeout range.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const REQUESTS: &str = "postern_requests_total";
const REQUEST_DURATION: &str = "postern_request_duration_seconds";
const UPSTREAM_DURATION: &str = "postern_upstream_duration_seconds";
const BYTES_IN: &str = "postern_request_bytes_total";
const BYTES_OUT: &str = "postern_response_bytes_total";
const TUNNELS_PER_GROUP: &str = "postern_tunnels";
const TUNNELS_PER_CONNECTOR: &str = "postern_connector_tunnels";
const CONNECTORS_ONLINE: &str = "postern_connectors_online";
const QUEUE_WAIT: &str = "postern_queue_wait_seconds";
const QUEUE_TIMEOUTS: &str = "postern_queue_timeouts_total";
const REFUSALS: &str = "postern_refusals_total";
const RISK_DETECTIONS: &str = "postern_risk_detections_total";
const STREAMS_RESET: &str = "postern_stalled_streams_reset_total";
const SIGN_INS: &str = "postern_sign_ins_total";
const PREAUTH: &str = "postern_preauth_decisions_total";
const CERT_EXPIRY: &str = "postern_certificate_expiry_seconds";
const STORE_DURATION: &str = "postern_store_operation_duration_seconds";
const BUILD_INFO: &str = "postern_build_info";
const ACCESS_LOG_DROPPED: &str = "postern_access_log_dropped_total";

/// Installs the process's Prometheus recorder (once; later calls return the same handle) and
/// describes every metric.
pub fn install() -> Result<PrometheusHandle, InstallError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)
        .map_err(|e| InstallError(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| InstallError(e.to_string()))?;
    describe();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The recorder could not be installed (another one already was).
#[derive(Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct InstallError(String);

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS,
        "User requests answered, by app and status class (2xx…5xx)."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from a request's arrival to the end of its response, by app."
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Time from sending a request down a tunnel to its response head, by app."
    );
    describe_counter!(
        BYTES_IN,
        Unit::Bytes,
        "Request body bytes received from users, by app."
    );
    describe_counter!(
        BYTES_OUT,
        Unit::Bytes,
        "Response body bytes sent to users, by app."
    );
    describe_gauge!(TUNNELS_PER_GROUP, "Live tunnels per connector group.");
    describe_gauge!(TUNNELS_PER_CONNECTOR, "Live tunnels per connector.");
    describe_gauge!(
        CONNECTORS_ONLINE,
        "Connectors with at least one live tunnel."
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time a request waited for a tunnel of its group, by app."
    );
    describe_counter!(
        QUEUE_TIMEOUTS,
        "Requests that found no tunnel in time or a full queue, by app."
    );
    describe_counter!(REFUSALS, "Requests the edge refused, by refusal code.");
    describe_counter!(
        RISK_DETECTIONS,
        "Identity protection's detections, by detection type and risk level."
    );
    describe_counter!(
        STREAMS_RESET,
        "Response streams reset because their clients stopped reading, by cause."
    );
    describe_counter!(SIGN_INS, "Sign-ins by app and result (success, failure).");
    describe_counter!(
        PREAUTH,
        "Pre-authentication decisions by app (allow, redirect, deny)."
    );
    describe_gauge!(
        CERT_EXPIRY,
        Unit::Seconds,
        "Seconds until a certificate in use expires."
    );
    describe_histogram!(
        STORE_DURATION,
        Unit::Seconds,
        "Store operation latency, by operation."
    );
    describe_gauge!(BUILD_INFO, "The running build; always 1.");
    describe_counter!(
        ACCESS_LOG_DROPPED,
        "Access log records dropped because the writer fell behind."
    );
}

/// A status code's class label, `1xx` to `5xx`.
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// One app's request metrics, registered once (when the routing snapshot is built) so a request
/// only adds to atomics: no label is built or looked up on the request path.
pub struct AppMetrics {
    /// Requests by status class, `1xx` to `5xx`.
    by_class: [Counter; 5],
    duration: Histogram,
    upstream: Histogram,
    bytes_in: Counter,
    bytes_out: Counter,
    queue_wait: Histogram,
    queue_timeouts: Counter,
    /// Pre-authentication decisions: allow, redirect, deny.
    preauth: [Counter; 3],
}

impl AppMetrics {
    /// Registers the metrics of `app` (its published name, or [`UNKNOWN_APP`]).
    pub fn new(app: &str) -> AppMetrics {
        let app = app.to_owned();
        let class = |c: &'static str| counter!(REQUESTS, "app" => app.clone(), "status_class" => c);
        AppMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: histogram!(REQUEST_DURATION, "app" => app.clone()),
            upstream: histogram!(UPSTREAM_DURATION, "app" => app.clone()),
            bytes_in: counter!(BYTES_IN, "app" => app.clone()),
            bytes_out: counter!(BYTES_OUT, "app" => app.clone()),
            queue_wait: histogram!(QUEUE_WAIT, "app" => app.clone()),
            queue_timeouts: counter!(QUEUE_TIMEOUTS, "app" => app.clone()),
            preauth: ["allow", "redirect", "deny"]
                .map(|d| counter!(PREAUTH, "app" => app.clone(), "decision" => d)),
        }
    }

    /// The metrics of requests for hosts no app is published on.
    pub fn unknown() -> &'static AppMetrics {
        static UNKNOWN: OnceLock<AppMetrics> = OnceLock::new();
        UNKNOWN.get_or_init(|| AppMetrics::new(UNKNOWN_APP))
    }

    /// One user request finished: counts, durations and bytes.
    pub fn request_done(
        &self,
        status: u16,
        duration: Duration,
        upstream: Option<Duration>,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        self.by_class[class].increment(1);
        self.duration.record(duration.as_secs_f64());
        if let Some(upstream) = upstream {
            self.upstream.record(upstream.as_secs_f64());
        }
        self.bytes_in.increment(bytes_in);
        self.bytes_out.increment(bytes_out);
    }

    /// A request waited this long for a tunnel of its app's group.
    pub fn queue_wait(&self, waited: Duration) {
        self.queue_wait.record(waited.as_secs_f64());
    }

    /// A request found no tunnel in time, or the queue full.
    pub fn queue_timeout(&self) {
        self.queue_timeouts.increment(1);
    }

    /// Pre-authentication decided for a request of this app.
    pub fn preauth(&self, decision: Preauth) {
        let i = match decision {
            Preauth::Allow => 0,
            Preauth::Redirect => 1,
            Preauth::Deny => 2,
        };
        self.preauth[i].increment(1);
    }
}

impl std::fmt::Debug for AppMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppMetrics")
    }
}

/// `n` response streams were reset because their clients stopped reading: `stall_timeout`, or
/// `stall_budget` (too many stalled at once).
pub fn streams_reset(cause: &'static str, n: usize) {
    if n > 0 {
        counter!(STREAMS_RESET, "cause" => cause).increment(n as u64);
    }
}

/// The edge refused a request; `code` is a `Refusal::code()`.
pub fn refusal(code: &'static str) {
    counter!(REFUSALS, "code" => code).increment(1);
}

/// Identity protection found `kind` (a detection type) at `level` (`low`, `medium`, `high`).
pub fn risk_detection(kind: &'static str, level: &'static str) {
    counter!(RISK_DETECTIONS, "kind" => kind, "level" => level).increment(1);
}

/// How a sign-in ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignIn {
    Success,
    Failure,
}

/// A sign-in ended, at the built-in provider (`app` is the client's name) or at the edge's
/// callback (`app` is the app's name).
pub fn sign_in(app: &str, result: SignIn) {
    let result = match result {
        SignIn::Success => "success",
        SignIn::Failure => "failure",
    };
    counter!(SIGN_INS, "app" => app.to_owned(), "result" => result).increment(1);
}

/// A sign-in step at the built-in provider ended; a failure counts as a failed sign-in (its
/// successes are counted when the code is issued, as a sign-in may take several steps).
pub fn sign_in_step_failed(client: Option<&str>, success: bool) {
    if !success {
        sign_in(client.unwrap_or(UNKNOWN_APP), SignIn::Failure);
    }
}

/// What pre-authentication decided for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preauth {
    Allow,
    Redirect,
    Deny,
}

/// Live tunnels of a connector group.
pub fn tunnels_in_group(group: &str, live: usize) {
    gauge!(TUNNELS_PER_GROUP, "group" => group.to_owned()).set(live as f64);
}

/// Live tunnels of one connector (on the edge: each connector; on a connector: its own).
pub fn tunnels_of_connector(connector: &str, live: usize) {
    gauge!(TUNNELS_PER_CONNECTOR, "connector" => connector.to_owned()).set(live as f64);
}

/// Connectors with at least one live tunnel.
pub fn connectors_online(n: usize) {
    gauge!(CONNECTORS_ONLINE).set(n as f64);
}

/// Seconds until a certificate expires (negative once it has). `certificate` names which one:
/// `edge`, `edge-ca`, `connector:<id>`.
pub fn certificate_expiry(certificate: &str, seconds: i64) {
    gauge!(CERT_EXPIRY, "certificate" => certificate.to_owned()).set(seconds as f64);
}

/// A certificate no longer in use (a revoked connector's): its series shows NaN.
pub fn certificate_expiry_unknown(certificate: &str) {
    gauge!(CERT_EXPIRY, "certificate" => certificate.to_owned()).set(f64::NAN);
}

/// A store operation took this long.
pub fn store_operation(operation: &'static str, took: Duration) {
    histogram!(STORE_DURATION, "operation" => operation).record(took.as_secs_f64());
}

/// Times a store call: `timed("session_revoked", store.x(..)).await`.
pub async fn timed_store<F: std::future::Future>(operation: &'static str, f: F) -> F::Output {
    let start = std::time::Instant::now();
    let out = f.await;
    store_operation(operation, start.elapsed());
    out
}

/// The access log is open: its drop counter is shown (at 0) from now on, so an alert on its
/// increase sees the first drop.
pub fn access_log_opened() {
    counter!(ACCESS_LOG_DROPPED).absolute(0);
}

/// An access log record was dropped: the writer could not keep up.
pub fn access_log_dropped() {
    counter!(ACCESS_LOG_DROPPED).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        for (status, class) in [
            (101, "1xx"),
            (200, "2xx"),
            (304, "3xx"),
            (404, "4xx"),
            (503, "5xx"),
            (999, "5xx"),
        ] {
            assert_eq!(status_class(status), class, "{status}");
        }
    }
}
