//! JWT authentication: algorithms and keys (`alg`, `jwks`), where tokens are found (`extract`),
//! how one is verified (`verify`), the per-VM cache of verified tokens (`cache`) and the
//! cross-worker coordination of remote JWKS fetches (`remote`).

pub mod alg;
pub mod cache;
mod es512;
pub mod extract;
pub mod jwks;
pub mod remote;
pub mod verify;

pub use alg::Alg;
