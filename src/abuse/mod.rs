//! Abuse controls that sit in front of authentication: client-address allow/deny lists
//! ([`cidr`]), temporary blocks after repeated authentication failures ([`brute`]) and the nonces
//! of signed requests seen within their window ([`replay`]), behaviour baselines per caller
//! ([`detect`]), and the revocation lists of an incident ([`revoke`]). All are
//! pure engine code: the caller passes the client address, the current time and the shared store.

pub mod brute;
pub mod cidr;
pub mod detect;
pub mod replay;
pub mod revoke;
