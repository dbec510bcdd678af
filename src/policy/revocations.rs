//! Wire types of `revocations`: what is withdrawn during an incident, inline and fetched.

use super::RemoteJwksDoc;
use serde::Deserialize;

/// `revocations` in the policy.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RevocationsDoc {
    /// Entries in the policy itself.
    #[serde(default)]
    pub revoked: Option<RevocationListDoc>,
    /// A list document of the same shape, fetched through an Envoy cluster and refreshed (the
    /// fields of `remote_jwks`).
    #[serde(default)]
    pub remote: Option<RemoteJwksDoc>,
    /// `deny` (default) or `allow`: requests on authenticated routes while the remote list has
    /// never been fetched.
    #[serde(default)]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(schema_with = "crate::policy::choices::deny_or_allow")
    )]
    pub on_unavailable: Option<String>,
}

/// The revoked entries: the `revoked` object of a policy, and the whole remote document.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RevocationListDoc {
    /// JWT `jti` values.
    #[serde(default)]
    pub token_ids: Vec<String>,
    /// JWT `sub` values, whatever the provider.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// API key `id`s.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Principals as the identity header names them (`jwt:idp:alice`, `mtls:spiffe://…`,
    /// `sig:partner:key-1`), the workload of a route with `peers` included.
    #[serde(default)]
    pub principals: Vec<String>,
    /// Client addresses and CIDR blocks.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Route names, closed until removed from the list.
    #[serde(default)]
    pub routes: Vec<String>,
}
