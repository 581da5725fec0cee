//! The operator's Prometheus metrics.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Counters of reconciles and of their failures. Cheap to clone: clones count together.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    reconciles: Counter,
    errors: Family<ErrorLabels, Counter>,
}

/// The labels of a reconcile failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    /// The step that failed, e.g. `apply_template`.
    reason: &'static str,
}

impl Metrics {
    /// Registers the counters as `harness_operator_reconciles_total` and
    /// `harness_operator_reconcile_errors_total{reason}`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "harness_operator_reconciles",
            "AgentHarness reconciles started",
            self.reconciles.clone(),
        );
        registry.register(
            "harness_operator_reconcile_errors",
            "AgentHarness reconciles that failed, by the step that failed",
            self.errors.clone(),
        );
    }

    /// Counts a reconcile.
    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    /// Counts a failed reconcile; `reason` names the step, e.g. `apply_template`.
    pub fn failed(&self, reason: &'static str) {
        self.errors.get_or_create(&ErrorLabels { reason }).inc();
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn failures_are_counted_by_reason() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);

        metrics.reconciled();
        metrics.reconciled();
        metrics.failed("apply_template");

        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("harness_operator_reconciles_total 2"), "{text}");
        assert!(
            text.contains(r#"harness_operator_reconcile_errors_total{reason="apply_template"} 1"#),
            "{text}"
        );
    }
}
