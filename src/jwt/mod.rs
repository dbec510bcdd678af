//! JWT authentication: algorithms and keys (`alg`, `jwks`), where tokens are found (`extract`),
//! how one is verified (`verify`, with the host's crypto where it has some: `offload`, `der`), the per-VM cache of verified tokens (`cache`) and the
//! cross-worker coordination of remote JWKS fetches (`remote`).

pub mod alg;
pub mod cache;
pub mod der;
mod es512;
pub mod extract;
pub mod jwks;
pub mod offload;
pub mod remote;
pub mod verify;

pub use alg::Alg;
