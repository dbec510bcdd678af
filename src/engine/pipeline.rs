//! Deciding one request: the stages a request passes in order (IP access, route match,
//! lifecycle, brute-force block, authentication, authorization, limits, payload), the dry-run
//! conversion, and the checks run later on the request body and the upstream's response.

use super::{authn, authz, headers, limits, path, request};
use super::{Access, Allow, Decision, Denial, Diagnostics, Effects, Engine, Matched, Mode};
use super::{Outcome, Passed, RouteHit};
use super::{Request, VmState};
use crate::abuse::brute;
use crate::abuse::revoke::{Credential, RevocationList};
use crate::codes::DenialCode;
use crate::jwt::extract::{strip_cookie, strip_query};
use crate::payload::Failure;
use crate::store::SharedStore;

/// What evaluation learnt that the dry-run conversion needs, and, when asked for, how it
/// decided.
struct Trace {
    mode: Mode,
    principal: Option<String>,
    diagnostics: Option<Diagnostics>,
}

impl Engine {
    /// The client address (see `rate_limit_options.trusted_hops`).
    pub fn client_ip<'a>(&self, req: &Request<'a>) -> Option<&'a str> {
        let xff = req.header_values("x-forwarded-for").last();
        request::client_ip(req.peer, xff, self.limit_options.trusted_hops)
    }

    /// Decides one request at `now` (seconds) with a throwaway store: for tests of routes that
    /// have no rate limits.
    #[cfg(test)]
    pub fn decide(&self, req: &Request<'_>, now: u64, state: &mut VmState) -> Outcome {
        self.decide_at(
            req,
            now.saturating_mul(1000),
            state,
            &crate::store::MemoryStore::default(),
        )
    }

    /// Decides one request at `now_ms` (milliseconds since the epoch, host clock), with `store`
    /// holding the shared rate-limit buckets.
    pub fn decide_at(
        &self,
        req: &Request<'_>,
        now_ms: u64,
        state: &mut VmState,
        store: &dyn SharedStore,
    ) -> Outcome {
        let mut trace = Trace {
            mode: self.mode,
            principal: None,
            diagnostics: None,
        };
        self.decide_with(req, now_ms, state, store, &mut trace)
    }

    /// [`Engine::decide_at`], also saying how the decision was reached (`tollgate explain`).
    pub fn decide_explained(
        &self,
        req: &Request<'_>,
        now_ms: u64,
        state: &mut VmState,
        store: &dyn SharedStore,
    ) -> (Outcome, Diagnostics) {
        let mut trace = Trace {
            mode: self.mode,
            principal: None,
            diagnostics: Some(Diagnostics::default()),
        };
        let outcome = self.decide_with(req, now_ms, state, store, &mut trace);
        (outcome, trace.diagnostics.unwrap_or_default())
    }

    fn decide_with(
        &self,
        req: &Request<'_>,
        now_ms: u64,
        state: &mut VmState,
        store: &dyn SharedStore,
        trace: &mut Trace,
    ) -> Outcome {
        let mut outcome = self.evaluate(req, now_ms, state, store, trace);
        match &mut outcome.decision {
            Decision::Allow(allow) => allow.mode = trace.mode,
            Decision::Deny(denial) | Decision::WouldDeny(denial) => {
                denial.principal = trace.principal.take();
            }
        }
        if trace.mode == Mode::DryRun {
            // Everything was evaluated (and counted: buckets, failures); only the refusal is not
            // carried out (the exchange lets the request through).
            if let Decision::Deny(denial) = outcome.decision {
                outcome.decision = Decision::WouldDeny(denial);
            }
        }
        outcome
    }

    fn evaluate(
        &self,
        req: &Request<'_>,
        now_ms: u64,
        state: &mut VmState,
        store: &dyn SharedStore,
        trace: &mut Trace,
    ) -> Outcome {
        let now = now_ms / 1000;
        let mut effects = Effects::default();
        let Some(path) = path::normalize(req.path) else {
            return self.deny(DenialCode::PathInvalid, None, effects);
        };
        if let Some(d) = trace.diagnostics.as_mut() {
            d.normalized_path = Some(path.to_string());
        }
        let client_ip = self.client_ip(req);
        if self
            .ip_access
            .as_ref()
            .is_some_and(|l| !l.permits(client_ip))
        {
            return self.deny(DenialCode::IpDenied, None, effects);
        }
        if self.revocation_lists(state).any(|l| l.bars(client_ip)) {
            return self.deny(DenialCode::IpDenied, None, effects);
        }
        let Ok(host) = req.host() else {
            return self.deny(DenialCode::RequestAmbiguous, None, effects);
        };
        if self.override_headers == headers::OverrideAction::Refuse
            && req.headers.iter().any(|(name, _)| {
                headers::OVERRIDE_HEADERS
                    .iter()
                    .any(|o| headers::folds_to(name, o))
            })
        {
            return self.deny(DenialCode::RequestAmbiguous, None, effects);
        }
        // Detection's caller before authentication: the client address.
        let address = self
            .detection
            .as_ref()
            .and(client_ip)
            .and_then(super::detect::address_caller);
        let Some(Matched {
            route,
            index,
            params,
        }) = self.routes.find(&host, req.method, &path)
        else {
            let secret = &state.limit_secret;
            if let Some(decision) =
                self.detection_gate(address.as_deref(), || None, secret, store, now_ms)
            {
                return Outcome { decision, effects };
            }
            if self.allow_unknown {
                let allow = Allow {
                    remove_headers: self.removed_headers(req),
                    set_headers: self
                        .path_rewrite(req.path, &path, None)
                        .into_iter()
                        .collect(),
                    unknown_route: true,
                    ..Allow::default()
                };
                return Outcome {
                    decision: Decision::Allow(allow),
                    effects,
                };
            }
            return self.deny(DenialCode::RouteNotFound, None, effects);
        };
        if let Some(d) = trace.diagnostics.as_mut() {
            d.route = Some(RouteHit {
                index,
                name: route.name.clone(),
                params: params.clone(),
            });
        }
        // Only a refusal needs its own copy of the name.
        let route_name = || Some(route.name.clone());
        if let Some(det) = &self.detection {
            effects.observed = det.observe(index, |name| req.header_values(name).next());
        }
        trace.mode = route.mode.unwrap_or(self.mode);
        if route
            .ip_access
            .as_ref()
            .is_some_and(|l| !l.permits(client_ip))
        {
            return self.deny(DenialCode::IpDenied, route_name(), effects);
        }
        if let Some(code) = self.revoked_route(state, route) {
            return self.deny(code, route_name(), effects);
        }
        if let Some(l) = route.lifecycle.as_ref().filter(|l| l.is_retired(now)) {
            let mut d = crate::problem::denial(&self.realm, DenialCode::RouteRetired, route_name());
            if let Some(link) = &l.link {
                d.headers.push(("link", link.clone()));
            }
            return Outcome {
                decision: Decision::Deny(d),
                effects,
            };
        }
        // The caller's connection: the direct one, or - behind a hop the policy trusts with
        // `x-forwarded-client-cert` - the one that hop describes.
        let forwarded;
        let connection = match (&self.forwarded_from, req.connection) {
            (Some(from), Some(direct)) if from.matches(direct) => {
                let values: Vec<&str> = req.header_values("x-forwarded-client-cert").collect();
                forwarded = super::xfcc::forwarded_client(&values, direct);
                forwarded.as_ref().or(Some(direct))
            }
            (_, direct) => direct,
        };
        // The connection before any credential: a route that needs TLS or a workload refuses
        // everything else whatever it carries.
        if let Err(code) = route.tls.check(connection) {
            return self.deny(code, route_name(), effects);
        }
        if let Some(Err(code)) = route.peers.as_ref().map(|p| p.check(connection)) {
            return self.deny(code, route_name(), effects);
        }
        let workload = connection.and_then(super::peer::Connection::principal);
        if let Some(w) = workload.as_deref().filter(|_| self.revocations.is_some()) {
            let c = Credential {
                workload: Some(w),
                ..Credential::default()
            };
            if self.revoked(state, &c) {
                return self.deny(DenialCode::CredentialRevoked, route_name(), effects);
            }
        }
        // Brute-force subject: the client's canonical address, IPv6 by its /64 (one host usually
        // owns the whole prefix and could otherwise change address on every attempt), named as
        // detection names an anonymous caller. An address that cannot be parsed is not tracked.
        let subject = match (&self.brute_force, client_ip) {
            (Some(_), Some(ip)) if route.access != Access::Public => {
                super::detect::address_caller(ip)
            }
            _ => None,
        };
        if let (Some(bf), Some(subject)) = (&self.brute_force, &subject) {
            // A store failure does not block: the limit is a brake, not the lock.
            if let Ok(Some(retry)) = bf.blocked(store, &state.limit_secret, subject, now_ms) {
                let mut d =
                    crate::problem::denial(&self.realm, DenialCode::ClientBlocked, route_name());
                d.headers.push(("retry-after", retry.to_string()));
                return Outcome {
                    decision: Decision::Deny(d),
                    effects,
                };
            }
        }
        let secret = &state.limit_secret;
        if let Some(decision) =
            self.detection_gate(address.as_deref(), route_name, secret, store, now_ms)
        {
            return Outcome { decision, effects };
        }
        let mut remove_headers = self.removed_headers(req);
        let mut set_headers = Vec::new();
        let mut strip = None;
        let mut signed_body = None;
        if let Some(w) = &workload {
            set_headers.push((self.peer_header.clone(), w.clone()));
        }
        let principal = if route.access == Access::Public {
            None
        } else if route.access == Access::Workload {
            // `peers` passed above, so the certificate names a workload.
            let Some(id) = workload else {
                return self.deny(DenialCode::ClientCertificateRequired, route_name(), effects);
            };
            trace.principal = Some(id.clone());
            if let Some(d) = trace.diagnostics.as_mut() {
                d.authentication = Some(Ok(Passed {
                    principal: id.clone(),
                    scopes: vec![],
                }));
            }
            set_headers.push((self.identity_header.clone(), id.clone()));
            Some(std::rc::Rc::new(authn::Principal::workload(id)))
        } else {
            let cx = authn::Context { now_ms, store };
            let who = match authn::authenticate(self, &route.access, req, &cx, state, &mut effects)
            {
                Ok(who) => who,
                Err(code) => {
                    if let Some(d) = trace.diagnostics.as_mut() {
                        d.authentication = Some(Err(code));
                    }
                    if let (Some(bf), Some(subject), true) =
                        (&self.brute_force, &subject, code.is_failed_attempt())
                    {
                        if let Ok(brute::Failure::Blocked { .. }) =
                            bf.record_failure(store, &state.limit_secret, subject, now_ms)
                        {
                            effects.block_started = true;
                        }
                        if bf.global.is_some() {
                            effects.failure_subject = Some(subject.clone());
                        }
                    }
                    return self.deny(code, route_name(), effects);
                }
            };
            // For the audit line of a later refusal (scope, owner, limit) and of a dry run.
            trace.principal = Some(who.principal.id.clone());
            // A verified credential that was withdrawn: before anything it could be granted.
            // (Claims are looked up only when the policy has revocations at all.)
            if self.revocations.is_some() {
                let p = &who.principal;
                let claim = |name: &str| p.claims.get(name).and_then(serde_json::Value::as_str);
                let credential = Credential {
                    principal: &p.id,
                    workload: None,
                    token_id: claim("jti"),
                    subject: claim("sub"),
                    api_key: p.id.strip_prefix("api_key:"),
                };
                if self.revoked(state, &credential) {
                    return self.deny(DenialCode::CredentialRevoked, route_name(), effects);
                }
            }
            let caller = self
                .detection
                .as_ref()
                .map(|_| super::detect::principal_caller(&who.principal.id));
            let secret = &state.limit_secret;
            if let Some(decision) =
                self.detection_gate(caller.as_deref(), route_name, secret, store, now_ms)
            {
                return Outcome { decision, effects };
            }
            if let Some(d) = trace.diagnostics.as_mut() {
                d.authentication = Some(Ok(Passed {
                    principal: who.principal.id.clone(),
                    scopes: who.principal.scopes.clone(),
                }));
                d.authorization = route.rules.explain(&who.principal, req, &params);
            }
            match route.rules.check(&who.principal, req, &params) {
                Ok(()) => {}
                Err(authz::Refusal::MissingScopes(scopes)) => {
                    let d = crate::problem::insufficient_scope(
                        &self.realm,
                        route_name(),
                        &scopes,
                        who.principal.bearer,
                    );
                    return Outcome {
                        decision: Decision::Deny(d),
                        effects,
                    };
                }
                Err(authz::Refusal::Forbidden) => {
                    return self.deny(DenialCode::Forbidden, route_name(), effects)
                }
            }
            remove_headers.extend(who.remove_headers);
            signed_body = who.signed_body;
            set_headers.extend(who.principal.forward.iter().cloned());
            set_headers.push((self.identity_header.clone(), who.principal.id.clone()));
            strip = who.strip_query;
            if let Some(name) = &who.strip_cookie {
                let joined: Vec<&str> = req.header_values("cookie").collect();
                match strip_cookie(&joined.join("; "), name) {
                    Some(rest) => set_headers.push(("cookie".into(), rest)),
                    None => remove_headers.push("cookie".into()),
                }
            }
            Some(who.principal)
        };
        let checked = match limits::check(
            self,
            route,
            principal.as_deref(),
            req,
            now_ms,
            state,
            store,
            &mut effects,
        ) {
            Ok(checked) => checked,
            Err(denial) => {
                return Outcome {
                    decision: Decision::Deny(denial),
                    effects,
                }
            }
        };
        let mut response_headers = checked.headers;
        if let Some(d) = trace.diagnostics.as_mut() {
            d.global.clone_from(&checked.global);
        }
        if let Some(l) = &route.lifecycle {
            response_headers.extend(l.headers.iter().cloned());
            effects.deprecated = l.deprecated.is_some_and(|d| now >= d);
        }
        let mut body_check = None;
        if let Some(index) = route.request {
            let Some(rules) = self.routes.request_rules.get(index) else {
                return self.deny(DenialCode::InternalError, route_name(), effects);
            };
            let header = |name: &str| {
                req.header_values(name)
                    .map(String::from)
                    .collect::<Vec<_>>()
            };
            if let Err(f) = rules.check_head(&self.payload_options, &params, req.path, &header) {
                return Outcome {
                    decision: Decision::Deny(self.payload_denial(f, route_name())),
                    effects,
                };
            }
            if rules.has_body() {
                body_check = Some(super::BodyCheck {
                    rules: Some(index),
                    digest: false,
                });
            }
        }
        let content_digest = match signed_body {
            Some(digest) => {
                let rules = body_check.and_then(|c: super::BodyCheck| c.rules);
                body_check = Some(super::BodyCheck {
                    rules,
                    digest: true,
                });
                digest
            }
            None => None,
        };
        set_headers.extend(self.path_rewrite(req.path, &path, strip.as_deref()));
        if route.response.is_some() {
            // Tollgate judges JSON, not gzip: the upstream is asked for an uncompressed response
            // (one it compresses anyway is not checked: `on_unchecked`). A compressor filter
            // after Tollgate can still compress for the client.
            remove_headers.push("accept-encoding".into());
        }
        let allow = Allow {
            response_check: route.response,
            body_check,
            content_digest,
            route: route.name.clone(),
            principal: trace.principal.take(),
            remove_headers,
            set_headers,
            unknown_route: false,
            response_headers,
            authenticated: route.access != Access::Public,
            global: checked.global,
            ..Allow::default()
        };
        Outcome {
            decision: Decision::Allow(allow),
            effects,
        }
    }

    /// Headers removed from a request before the upstream: every header Tollgate writes and
    /// every override header it strips, plus the spellings of those the request actually carries
    /// that an upstream framework would read as the same header (`x_user_id`).
    pub(super) fn removed_headers(&self, req: &Request<'_>) -> Vec<String> {
        let mut out = self.forwarded_headers.clone();
        for (name, _) in req.headers {
            if headers::is_variant_of(name, &self.forwarded_headers) && !out.contains(name) {
                out.push(name.clone());
            }
        }
        out
    }

    /// `:path` to send upstream when it must change: the normalised path (so the upstream serves
    /// what was authorised) and the query without a stripped credential.
    fn path_rewrite(
        &self,
        raw: &str,
        normalized: &str,
        strip: Option<&str>,
    ) -> Option<(String, String)> {
        let (raw_path, query) = match raw.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (raw, None),
        };
        if strip.is_none() && raw_path == normalized {
            // The common case: nothing to rewrite, nothing to allocate.
            return None;
        }
        let with_query = match query {
            Some(q) => format!("{normalized}?{q}"),
            None => normalized.to_string(),
        };
        let new = match strip {
            Some(name) => strip_query(&with_query, name),
            None => with_query,
        };
        (new != raw).then(|| (":path".to_string(), new))
    }

    /// Checks a complete request body as `Allow::body_check` says: against the signed
    /// `Content-Digest` (`digest`, from `Allow::content_digest`), then the route's request rules.
    pub fn check_request_body(
        &self,
        check: super::BodyCheck,
        route: &str,
        digest: Option<&str>,
        body: &[u8],
    ) -> Result<(), Denial> {
        if check.digest {
            // A signed request: its body matches the covered `Content-Digest`, or is empty when
            // the signature covers none.
            let matches = match digest {
                Some(d) => crate::httpsig::ContentDigest::parse(&[d])
                    .and_then(|c| c.verify(body))
                    .is_ok(),
                None => body.is_empty(),
            };
            if !matches {
                return Err(crate::problem::denial(
                    &self.realm,
                    DenialCode::ContentDigestMismatch,
                    Some(route.to_string()),
                ));
            }
        }
        match check.rules {
            Some(rules) => self.check_body(rules, route, body),
            None => Ok(()),
        }
    }

    /// Checks a complete request body for the rules named by `BodyCheck::rules`.
    pub fn check_body(&self, rules: usize, route: &str, body: &[u8]) -> Result<(), Denial> {
        let Some(r) = self.routes.request_rules.get(rules) else {
            return Err(crate::problem::denial(
                &self.realm,
                DenialCode::InternalError,
                Some(route.to_string()),
            ));
        };
        r.check_body(&self.payload_options, body)
            .map_err(|f| self.payload_denial(f, Some(route.to_string())))
    }

    /// Whether a response with `status` is checked by the rules named in `Allow::response_check`,
    /// and the largest body that is buffered for it.
    pub fn response_applies(&self, rules: usize, status: u16) -> Option<usize> {
        let r = self.routes.response_rules.get(rules)?;
        r.applies(status).then_some(r.max_body_bytes)
    }

    /// Judges a buffered upstream response.
    pub fn check_response(
        &self,
        rules: usize,
        status: u16,
        body: &[u8],
    ) -> crate::payload::response::Verdict {
        match self.routes.response_rules.get(rules) {
            Some(r) => r.check(&self.payload_options, status, body),
            None => crate::payload::response::Verdict::Pass,
        }
    }

    /// The verdict on a response the rules named in `Allow::response_check` could not check.
    pub fn unchecked_response(
        &self,
        rules: usize,
        why: crate::payload::response::Unchecked,
    ) -> crate::payload::response::Verdict {
        match self.routes.response_rules.get(rules) {
            Some(r) => r.unchecked(why),
            None => crate::payload::response::Verdict::Pass,
        }
    }

    /// Largest body `Allow::body_check` accepts (the host stops buffering there): the route's
    /// request rules', else the policy's default.
    pub fn max_body_bytes(&self, check: super::BodyCheck) -> usize {
        match check.rules {
            Some(rules) => self
                .routes
                .request_rules
                .get(rules)
                .map_or(0, |r| r.max_body_bytes),
            None => self.payload_options.max_body_bytes,
        }
    }

    fn payload_denial(&self, failure: Failure, route: Option<String>) -> Denial {
        match failure {
            Failure::UnsupportedMediaType => {
                crate::problem::denial(&self.realm, DenialCode::UnsupportedMediaType, route)
            }
            Failure::TooLarge => {
                crate::problem::denial(&self.realm, DenialCode::PayloadTooLarge, route)
            }
            Failure::Malformed => {
                crate::problem::denial(&self.realm, DenialCode::BodyMalformed, route)
            }
            Failure::Invalid(v) => {
                crate::problem::invalid(&self.realm, route, self.payload_options.invalid_status, v)
            }
        }
    }

    /// The revocation lists in force in this VM: the policy's and, once fetched, the remote one.
    fn revocation_lists<'a>(
        &'a self,
        state: &'a VmState,
    ) -> impl Iterator<Item = &'a RevocationList> {
        let fetched = state.revocations.as_ref().map(|i| &*i.keys);
        self.revocations
            .as_ref()
            .map(|r| &r.inline)
            .into_iter()
            .chain(fetched)
    }

    /// A closed route or - on a route that authenticates - a remote list never fetched (unless
    /// the policy lets requests through then).
    fn revoked_route(&self, state: &VmState, route: &super::routes::Route) -> Option<DenialCode> {
        let r = self.revocations.as_ref()?;
        if self.revocation_lists(state).any(|l| l.closes(&route.name)) {
            return Some(DenialCode::RouteClosed);
        }
        let unavailable = r.remote.is_some() && state.revocations.is_none() && !r.fail_open;
        (unavailable && route.access != Access::Public)
            .then_some(DenialCode::RevocationsUnavailable)
    }

    fn revoked(&self, state: &VmState, credential: &Credential<'_>) -> bool {
        self.revocation_lists(state).any(|l| l.revokes(credential))
    }

    fn deny(&self, code: DenialCode, route: Option<String>, effects: Effects) -> Outcome {
        Outcome {
            decision: Decision::Deny(crate::problem::denial(&self.realm, code, route)),
            effects,
        }
    }
}
