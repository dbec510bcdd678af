//! Detection in the request's life: who the caller is, the gate before the decision (blocked,
//! throttled), and counting the outcome once it is known. The arithmetic is in
//! `abuse::detect`; this file maps decisions to its categories and trips to reports.

use super::decision::{Decision, Denial, Mode, Outcome};
use super::{Engine, Request};
use crate::abuse::detect::{Category, Detector, Gate, Trip};
use crate::codes::{Counter, DenialCode};
use crate::store::SharedStore;

/// The caller of a request without a principal: its canonical address, IPv6 by its /64 (one
/// host usually owns the whole prefix), as brute-force protection names subjects.
pub fn address_caller(ip: &str) -> Option<String> {
    crate::abuse::cidr::parse_client_ip(ip).map(|addr| match addr {
        std::net::IpAddr::V4(v4) => format!("ip:{v4}"),
        std::net::IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            format!("ip6:{a:x}:{b:x}:{c:x}:{d:x}::/64")
        }
    })
}

/// The caller of an authenticated request.
pub fn principal_caller(principal: &str) -> String {
    format!("p:{principal}")
}

/// The refusal category a code counts in, if any.
pub fn category(code: DenialCode) -> Option<Category> {
    match code {
        DenialCode::RouteNotFound => Some(Category::Enumeration),
        DenialCode::Forbidden => Some(Category::Object),
        DenialCode::RequestInvalid | DenialCode::BodyMalformed => Some(Category::Fuzzing),
        c if c.info().status == 401 => Some(Category::Credential),
        _ => None,
    }
}

fn counter(d: Detector) -> Counter {
    match d {
        Detector::Spike => Counter::DetectionSpike,
        Detector::CredentialProbing => Counter::DetectionCredentialProbing,
        Detector::ObjectProbing => Counter::DetectionObjectProbing,
        Detector::Enumeration => Counter::DetectionEnumeration,
        Detector::Fuzzing => Counter::DetectionFuzzing,
        Detector::MissingHeaders => Counter::DetectionMissingHeaders,
        Detector::RegularCadence => Counter::DetectionRegularCadence,
    }
}

/// What the exchange keeps of a counted request, for a refusal found later (its body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    caller: String,
    key: String,
    tag: u32,
    at_ms: u64,
}

/// A count to add and a line to log at `warn`, for each trip (and each block or throttle it
/// started). Names the detector, the caller and counts; never a credential.
pub type Reports = Vec<(Counter, String)>;

impl Engine {
    /// The gate for `caller` (blocked or throttled by a detector): the refusal, if any. A store
    /// failure lets the request through.
    pub(super) fn detection_gate(
        &self,
        caller: Option<&str>,
        route: impl FnOnce() -> Option<String>,
        secret: &[u8],
        store: &dyn SharedStore,
        now_ms: u64,
    ) -> Option<Decision> {
        let (det, caller) = (self.detection.as_ref()?, caller?);
        let (code, retry_after, dry_run) = match det.gate(store, secret, caller, now_ms) {
            Ok(Gate::Blocked {
                retry_after,
                dry_run,
                ..
            }) => (DenialCode::CallerBlocked, retry_after, dry_run),
            Ok(Gate::Throttled {
                retry_after,
                dry_run,
                ..
            }) => (DenialCode::CallerThrottled, retry_after, dry_run),
            Ok(Gate::Pass) | Err(_) => return None,
        };
        let mut d = crate::problem::denial(&self.realm, code, route());
        d.headers.push(("retry-after", retry_after.to_string()));
        // Started under `dry-run`: reported, never carried out (whatever this route's mode).
        Some(if dry_run {
            Decision::WouldDeny(d)
        } else {
            Decision::Deny(d)
        })
    }
}

/// Counts the request `outcome` decided (at `now_ms`) for its caller. `None` when detection is
/// off, the caller unknown, or the gate refused it (blocked traffic is not counted).
pub fn record(
    engine: &Engine,
    req: &Request<'_>,
    outcome: &Outcome,
    now_ms: u64,
    secret: &[u8],
    store: &dyn SharedStore,
) -> (Option<Counted>, Reports) {
    let Some(det) = engine.detection.as_ref() else {
        return (None, Vec::new());
    };
    let (principal, code, mode, unknown) = match &outcome.decision {
        Decision::Allow(a) => (a.principal.as_deref(), None, a.mode, a.unknown_route),
        Decision::Deny(d) => (d.principal.as_deref(), Some(d.code), Mode::Enforce, false),
        Decision::WouldDeny(d) => (d.principal.as_deref(), Some(d.code), Mode::DryRun, false),
    };
    if matches!(
        code,
        Some(DenialCode::CallerBlocked | DenialCode::CallerThrottled)
    ) {
        return (None, Vec::new());
    }
    let caller = match principal {
        Some(p) => principal_caller(p),
        None => match engine.client_ip(req).and_then(address_caller) {
            Some(c) => c,
            None => return (None, Vec::new()),
        },
    };
    let category = if unknown {
        Some(Category::Enumeration)
    } else {
        code.and_then(category)
    };
    let (key, tag) = det.locate(secret, &caller);
    let dry_run = mode == Mode::DryRun;
    // A store failure counts nothing: detection is a brake, not the lock.
    let trips = det
        .record(
            store,
            &key,
            tag,
            now_ms,
            category,
            outcome.effects.observed,
            dry_run,
        )
        .unwrap_or_default();
    let reports = reports(det.window_ms / 1000, &caller, &trips);
    let counted = Counted {
        caller,
        key,
        tag,
        at_ms: now_ms,
    };
    (Some(counted), reports)
}

/// Adds a refusal found after the request was counted (`denial`, from its body).
pub fn record_late(
    engine: &Engine,
    counted: &Counted,
    denial: &Denial,
    dry_run: bool,
    store: &dyn SharedStore,
) -> Reports {
    let (Some(det), Some(category)) = (engine.detection.as_ref(), category(denial.code)) else {
        return Vec::new();
    };
    let trips = det
        .record_late(
            store,
            &counted.key,
            counted.tag,
            counted.at_ms,
            category,
            dry_run,
        )
        .unwrap_or_default();
    reports(det.window_ms / 1000, &counted.caller, &trips)
}

fn reports(window_s: u64, caller: &str, trips: &[Trip]) -> Reports {
    let mut out = Vec::new();
    for t in trips {
        out.push((counter(t.detector), line(window_s, caller, t)));
        match (t.action, t.dry_run) {
            (crate::abuse::detect::Action::Block { .. }, false) => {
                out.push((Counter::DetectionBlocks, String::new()));
            }
            (crate::abuse::detect::Action::Throttle { .. }, false) => {
                out.push((Counter::DetectionThrottles, String::new()));
            }
            _ => {}
        }
    }
    out
}

/// `tollgate: detection <detector> caller=<caller> action=<action>: <evidence>`.
fn line(window_s: u64, caller: &str, t: &Trip) -> String {
    let action = match (t.action, t.dry_run) {
        (crate::abuse::detect::Action::Report, _) => "report".to_string(),
        (a, true) => format!(
            "{} (not carried out: dry run or already blocked)",
            a.as_str()
        ),
        (crate::abuse::detect::Action::Block { period_ms }, false)
        | (crate::abuse::detect::Action::Throttle { period_ms }, false) => {
            format!("{} for {} s", t.action.as_str(), period_ms / 1000)
        }
    };
    format!(
        "tollgate: detection `{}` caller=`{caller}` action={action}: {}",
        t.detector.as_str(),
        t.evidence(window_s)
    )
}
