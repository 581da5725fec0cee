//! atelet, the node agent: its content store of image blobs, image pulls, layer unpacking and
//! the long-running operations that drive them.

pub mod bucket;
pub mod digest;
pub mod lease;
pub mod operations;
pub mod pull;
pub mod registry;
pub mod rootfs;
pub mod service;
pub mod store;
pub mod unpack;
