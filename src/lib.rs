//! Tollgate: an API-security policy filter for Envoy. The crate root wires the host-independent
//! engine (`policy`, `engine`, `jwt`, `store`) to the proxy-wasm adapter (`host`, wasi builds only).

pub mod abuse;
pub mod codes;
pub mod engine;
pub mod httpsig;
pub mod jwt;
pub mod policy;
pub mod problem;
pub mod protobuf;
pub mod store;

// The only module that names `proxy_wasm`; compiled only for the module Envoy loads, and natively
// for clippy (`make lint`, feature `lint-host`).
#[cfg(any(target_os = "wasi", feature = "lint-host"))]
mod host;

// The `tollgate` command-line tool (src/bin/tollgate.rs): native builds only, so that nothing of it
// (nor its YAML parser) reaches the module Envoy loads.
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;

pub mod payload;
pub mod ratelimit;
#[cfg(test)]
pub(crate) mod testkit;
