//! Progress of slow work, as shown in status and printer columns.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How far the current step of slow work has come.
///
/// Written by the controllers from a node's operation metadata, and mirrored from a template
/// to its harness, so that `kubectl get` and the status page show the same line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The current step, e.g. `Pulling`, `Booting`, `Uploading`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Bytes of the current step done so far.
    #[serde(default)]
    pub bytes_done: u64,
    /// Bytes the current step moves in all; 0 while unknown.
    #[serde(default)]
    pub bytes_total: u64,
    /// Smoothed transfer rate in bytes per second.
    #[serde(default)]
    pub bytes_per_second: u64,
    /// Estimated seconds until the current step is done, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    /// One line for a person, e.g. `Pulling image 45% (160/360 MB, ETA 32s)`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
}
