//! harness-operator: turns each AgentHarness into the ActorTemplate and Actor that run it, and
//! mirrors their progress into the harness's conditions.
//!
//! [`run`] is the whole controller; `main` parses a [`Config`], builds a client and calls it
//! beside the admin endpoint. The modules follow the reconcile's checklist: the
//! [`finalizer`], the [`acceptance`] of references, the gateway [`token`] Secret, the
//! [`template`] and [`actor`] it owns (with the [`openclaw`] backend's defaults), the
//! [`status`] mirrored from them, and the [`events`] on transitions.

pub mod acceptance;
pub mod actor;
pub mod config;
pub mod controller;
pub mod events;
pub mod finalizer;
pub mod harness;
pub mod metrics;
pub mod openclaw;
pub mod reconcile;
pub mod status;
pub mod template;
pub mod token;

pub use config::Config;
pub use controller::run;
pub use metrics::Metrics;
