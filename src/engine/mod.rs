//! The policy engine: compiled once from the policy document, then asked for a decision per
//! request. Host-independent: a request view, the current time and per-VM state go in, an
//! [`Outcome`] comes out.

mod apikeys;
pub mod audit;
mod authn;
mod authz;
mod compile;
pub(crate) mod decision;
pub mod detect;
pub mod exchange;
pub mod hardening;
pub mod headers;
pub mod lifecycle;
mod limits;
pub mod path;
pub mod peer;
mod pipeline;
pub mod refresh;
pub(crate) mod request;
mod routes;
pub mod signers;
pub mod timefmt;
mod xfcc;

pub use apikeys::ApiKeys;
pub use authn::{authenticate, Authenticated, Context as AuthContext, Principal};
pub use decision::{
    Allow, BodyCheck, Check, Decision, Denial, Diagnostics, Effects, GlobalAsk, KeySource, Mode,
    Outcome, Passed, RouteHit,
};
pub use exchange::{Exchange, Step};
pub use peer::Connection;
pub use request::{normalize_host, Request};
pub use routes::{Access, Matched, Route, RouteTable};
pub use timefmt::parse_rfc3339;

use crate::abuse::brute::BruteForce;
use crate::abuse::cidr::IpList;
use crate::jwt::cache::TokenCache;
use crate::jwt::extract::Source;
use crate::jwt::jwks::KeySet;
use crate::jwt::remote::{Installed, RemoteSpec};
use crate::jwt::verify::ClaimRules;
use crate::jwt::Alg;
use crate::payload::Options as PayloadOptions;
use crate::ratelimit::service::Service;
use crate::ratelimit::{Limit, Options as LimitOptions};
use audit::AuditOptions;
use hardening::ResponsePolicy;
use std::rc::Rc;

/// Where a provider's keys come from.
pub enum ProviderKeys {
    Inline(Rc<KeySet>),
    Remote(RemoteSpec),
}

/// One compiled JWT provider.
pub struct Provider {
    pub name: String,
    pub algorithms: Vec<Alg>,
    pub keys: ProviderKeys,
    pub rules: ClaimRules,
    pub sources: Vec<Source>,
    /// `(claim, header)`, header lowercase.
    pub forward: Vec<(String, String)>,
    pub forward_token: bool,
    pub max_token_bytes: usize,
    pub scope_claims: Vec<String>,
}

/// The compiled `api_keys` section with its credential sources.
pub struct ApiKeyConfig {
    pub keys: ApiKeys,
    pub sources: Vec<Source>,
}

impl std::ops::Deref for ApiKeyConfig {
    type Target = ApiKeys;
    fn deref(&self) -> &ApiKeys {
        &self.keys
    }
}

/// The compiled policy. Immutable; shared by every HTTP context of a VM.
pub struct Engine {
    realm: String,
    providers: Vec<Provider>,
    /// Signers of HTTP message signatures, indexed as `Access::Authenticated::signers`.
    signers: Vec<signers::Signer>,
    /// The nonces of signed requests.
    replay: crate::abuse::replay::Replay,
    routes: RouteTable,
    token_cache_entries: usize,
    /// `signature_verification: auto`: the host may check signatures ([`VmState::signatures`]).
    host_signatures: bool,
    /// Removed from every request: every header Tollgate writes upstream (forwarded claims, the
    /// identity header) so clients cannot forge them, and the API-key header, a secret.
    forwarded_headers: Vec<String>,
    identity_header: String,
    /// Receives the verified client certificate's workload, `mtls:<id>`.
    peer_header: String,
    /// The hops whose `x-forwarded-client-cert` names the caller (`forwarded_client_cert`).
    forwarded_from: Option<peer::PeerRules>,
    /// Whether decisions read the connection (TLS, client certificate): the host skips fetching
    /// it if not.
    uses_connection: bool,
    api_keys: Option<ApiKeyConfig>,
    /// Let requests that match no route through (logged as unknown endpoints).
    allow_unknown: bool,
    limits: Vec<Limit>,
    limit_options: LimitOptions,
    /// Counts the `global` limits.
    rate_limit_service: Option<Service>,
    payload_options: PayloadOptions,
    /// The policy's mode; routes may override it.
    mode: Mode,
    /// Upstream header naming the code a dry run would have refused with.
    dry_run_header: Option<String>,
    audit: AuditOptions,
    responses: ResponsePolicy,
    /// Checked on every request, before route matching.
    ip_access: Option<IpList>,
    brute_force: Option<BruteForce>,
    /// Withdrawn credentials, addresses and routes (`revocations`).
    revocations: Option<crate::abuse::revoke::Revocations>,
    /// Behaviour baselines per caller (`detection`).
    detection: Option<crate::abuse::detect::Detection>,
    /// Whether decisions read the downstream peer address (the host skips fetching it if not).
    uses_peer: bool,
    override_headers: headers::OverrideAction,
}

/// Mutable per-VM state: the token cache and the remote key sets installed in this VM.
pub struct VmState {
    pub cache: TokenCache<Principal>,
    /// Indexed like `Engine::providers`; `None` for inline providers and remote ones not loaded yet.
    pub remote: Vec<Option<Installed>>,
    /// Indexed like `Engine::signers`: the fetched keys of signers with `remote_keys`.
    pub signer_keys: Vec<Option<Installed<signers::KeyMap>>>,
    /// The remote revocation list, once fetched.
    pub revocations: Option<Installed<crate::abuse::revoke::RevocationList>>,
    /// Process-wide secret that rate-limit keys are hashed with (from shared data).
    pub limit_secret: Vec<u8>,
    /// The host's signature checks, installed by the host when it has them and the policy
    /// allows them ([`Engine::host_signatures`]); `None`: Tollgate verifies every signature.
    pub signatures: Option<Box<dyn crate::jwt::offload::SignatureHost>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Engine({} providers, {} routes)",
            self.providers.len(),
            self.routes.len()
        )
    }
}

impl Engine {
    /// The compiled routes, in the policy's order.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The JWT providers, indexed as `Access::Authenticated::providers` names them.
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// Signers whose keys are fetched: `(index, signer, spec)`.
    pub fn remote_signers(
        &self,
    ) -> impl Iterator<Item = (usize, &signers::Signer, &crate::jwt::remote::RemoteSpec)> {
        self.signers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.keys {
                signers::SignerKeys::Remote(spec) => Some((i, s, spec)),
                signers::SignerKeys::Inline(_) => None,
            })
    }

    /// The fetch settings of a remote key set.
    pub fn remote_spec(&self, source: decision::KeySource) -> Option<&RemoteSpec> {
        match source {
            decision::KeySource::Provider(i) => match self.providers.get(i).map(|p| &p.keys) {
                Some(ProviderKeys::Remote(spec)) => Some(spec),
                _ => None,
            },
            decision::KeySource::Signer(i) => match self.signers.get(i).map(|s| &s.keys) {
                Some(signers::SignerKeys::Remote(spec)) => Some(spec),
                _ => None,
            },
            decision::KeySource::Revocations => self.revocations.as_ref()?.remote.as_ref(),
        }
    }

    /// The signers, indexed as `Access::Authenticated::signers` names them.
    pub fn signers(&self) -> &[signers::Signer] {
        &self.signers
    }

    /// The rate limits, indexed as `Route::limits` names them.
    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    /// The rate-limit service of the `global` limits.
    pub fn rate_limit_service(&self) -> Option<&Service> {
        self.rate_limit_service.as_ref()
    }

    pub fn api_keys(&self) -> Option<&ApiKeyConfig> {
        self.api_keys.as_ref()
    }

    /// Whether decisions read the downstream peer address (the host skips fetching it if not).
    pub fn uses_peer(&self) -> bool {
        self.uses_peer
    }

    /// Whether state is kept in slots hashed with the process secret (rate limits, brute force):
    /// the host then provides the secret (`VmState::limit_secret`).
    pub fn uses_slots(&self) -> bool {
        self.limits.iter().any(|l| l.backend.local())
            || self.brute_force.is_some()
            || self.detection.is_some()
            || self.signers.iter().any(signers::Signer::uses_replay_store)
    }

    /// Whether decisions read the downstream connection's TLS state and client certificate
    /// ([`Request::connection`]); the host fetches them only then.
    pub fn uses_connection(&self) -> bool {
        self.uses_connection
    }

    /// Whether the policy lets the host check token signatures with its own crypto
    /// (`signature_verification`, default `auto`); the host installs
    /// [`VmState::signatures`] only then.
    pub fn host_signatures(&self) -> bool {
        self.host_signatures
    }

    pub fn new_state(&self) -> VmState {
        VmState {
            cache: TokenCache::new(self.token_cache_entries),
            remote: self.providers.iter().map(|_| None).collect(),
            signer_keys: self.signers.iter().map(|_| None).collect(),
            revocations: None,
            limit_secret: Vec::new(),
            signatures: None,
        }
    }

    /// Providers whose keys are fetched: `(index, provider, spec)`.
    pub fn remote_providers(&self) -> impl Iterator<Item = (usize, &Provider, &RemoteSpec)> {
        self.providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match &p.keys {
                ProviderKeys::Remote(spec) => Some((i, p, spec)),
                ProviderKeys::Inline(_) => None,
            })
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_authz;

#[cfg(test)]
mod tests_limits;

#[cfg(test)]
mod tests_operations;

#[cfg(test)]
mod tests_bypass;

#[cfg(test)]
mod tests_global;

#[cfg(test)]
mod tests_peers;

#[cfg(test)]
mod tests_signers;

#[cfg(test)]
mod tests_revocations;

#[cfg(test)]
mod tests_detection;
