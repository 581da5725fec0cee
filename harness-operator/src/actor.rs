//! The Actor a harness asks for once its template is Ready: one running sandbox.

use proto::{Actor, ActorSpec, AgentHarness, actor::DesiredState, reference::LocalObjectRef};

use crate::harness::{HarnessRef, child_metadata};

/// Builds the Actor `<name>` of a harness, owned by it, restored from the template of the same
/// name and meant to run, for server-side apply.
pub fn desired(harness: &AgentHarness, id: &HarnessRef) -> Actor {
    Actor {
        metadata: child_metadata(harness, id, id.name.clone()),
        spec: ActorSpec {
            template_ref: LocalObjectRef { name: id.name.clone() },
            desired_state: DesiredState::Running,
        },
        status: None,
    }
}
