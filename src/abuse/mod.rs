//! Abuse controls that sit in front of authentication: client-address allow/deny lists
//! ([`cidr`]) and temporary blocks after repeated authentication failures ([`brute`]). Both are
//! pure engine code: the caller passes the client address, the current time and the shared store.

pub mod brute;
pub mod cidr;
