//! Picking free loopback ports for the local cluster's servers.

use std::net::{Ipv4Addr, TcpListener};

use crate::ClusterError;

/// Returns a loopback TCP port that was free a moment ago.
///
/// The port is released before returning, so another process could take it before ours binds
/// it; on a test machine that race is rare, and the server's start-up then fails loudly.
///
/// # Errors
///
/// When no port can be bound on 127.0.0.1.
pub fn free() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(ClusterError::Port)?;
    Ok(listener.local_addr().map_err(ClusterError::Port)?.port())
}
