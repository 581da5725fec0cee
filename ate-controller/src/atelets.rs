//! Connections to atelets: one lazily connected channel per endpoint, shared by every
//! reconcile, and short calls with a deadline. Slow work is never a call: it is an operation,
//! started by one call and polled by others.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use proto::atelet::atelet_client::AteletClient;
use tonic::transport::Channel;

use crate::{ReconcileError, nodes::Node};

/// The deadline of each call on an atelet.
pub const RPC_DEADLINE: Duration = Duration::from_secs(5);

/// The channels to atelets, by endpoint.
#[derive(Default)]
pub struct Atelets {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Atelets {
    /// A client for `node`'s atelet, reusing its channel; `object` names what the call is
    /// for, in errors.
    ///
    /// # Errors
    ///
    /// When the node's endpoint is not a valid `host:port`.
    pub fn client(
        &self,
        node: &Node,
        object: &str,
    ) -> Result<AteletClient<Channel>, ReconcileError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(&node.endpoint) {
            return Ok(AteletClient::new(channel.clone()));
        }
        let channel = Channel::from_shared(format!("http://{}", node.endpoint))
            .map_err(|e| ReconcileError::atelet(object, node, &e.to_string()))?
            .connect_timeout(RPC_DEADLINE)
            .connect_lazy();
        channels.insert(node.endpoint.clone(), channel.clone());
        Ok(AteletClient::new(channel))
    }
}

/// `message` as a request that gives up after [`RPC_DEADLINE`].
pub fn with_deadline<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(RPC_DEADLINE);
    request
}
