//! ate-controller's Prometheus metrics.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// The controller's gauges and counters. Cheap to clone: clones count together.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    in_flight: Gauge,
    bytes: Counter,
    reconciles: Family<KindLabels, Counter>,
    errors: Family<KindLabels, Counter>,
}

/// Which controller a reconcile belongs to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    /// `ActorTemplate` or `Actor`.
    kind: &'static str,
}

impl Metrics {
    /// Registers `ate_controller_operations_in_flight`, `ate_controller_operation_bytes_total`,
    /// `ate_controller_reconciles_total{kind}` and `ate_controller_reconcile_errors_total{kind}`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ate_controller_operations_in_flight",
            "Node operations being polled",
            self.in_flight.clone(),
        );
        registry.register(
            "ate_controller_operation_bytes",
            "Bytes the polled operations moved, as seen by the polls",
            self.bytes.clone(),
        );
        registry.register(
            "ate_controller_reconciles",
            "Reconciles started, by kind",
            self.reconciles.clone(),
        );
        registry.register(
            "ate_controller_reconcile_errors",
            "Reconciles that failed and will be retried, by kind",
            self.errors.clone(),
        );
    }

    /// Sets the number of operations being polled.
    pub fn operations_in_flight(&self, count: usize) {
        self.in_flight.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Adds bytes an operation moved since its last poll.
    pub fn bytes_moved(&self, bytes: u64) {
        self.bytes.inc_by(bytes);
    }

    /// Counts a reconcile of `kind`.
    pub fn reconciled(&self, kind: &'static str) {
        self.reconciles.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts a failed reconcile of `kind`.
    pub fn failed(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabels { kind }).inc();
    }
}
