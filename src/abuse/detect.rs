//! Behaviour baselines per caller: requests and refusals by category counted in fixed windows,
//! a moving baseline of the caller's request rate, the cadence of its requests, and the blocks
//! and throttles that detectors start. Kept in shared data so that every worker sees the same
//! caller; pure arithmetic on a small fixed-size state plus the slot primitive.
//!
//! Bounded memory: a configuration owns a fixed number of [`Slots`] (`slots`, default 16384),
//! each holding a [`STATE_BYTES`]-byte value under `tollgate/v1/det/<slot>`: at most slots × 84
//! bytes of values (1.3 MiB by default) plus keys and Envoy's per-entry overhead. A caller is
//! hashed with the process-wide secret into one slot and also into a 32-bit tag kept in the
//! slot: a caller whose tag is not the slot's is never blocked or throttled by it. A newcomer
//! takes a slot over (starting fresh) unless its occupant is blocked or throttled; until then
//! the newcomer is not tracked. So colliding callers never add up their counts, and one cannot
//! get another blocked.
//!
//! Cost: a caller that is neither blocked nor throttled costs one read before the decision and
//! one compare-and-swap after it (bounded attempts; when they run out nothing is counted). A
//! throttled caller's request is one more swap; a blocked one's, a read and no write.
//!
//! Clock: as in [`super::brute`], stored times up to [`CLOCK_TOLERANCE_MS`] in the future are
//! believed; further out the slot is taken as garbage (a fresh state).

use crate::policy::{ConfigError, DetectionDoc, RefusalsDoc, RouteDetectionDoc};
use crate::store::slots::{self, Missing, Outcome, Slots, Update};
use crate::store::{SharedStore, StoreError};
use sha2::{Digest, Sha256};

pub const DEFAULT_SLOTS: u32 = slots::DEFAULT_COUNT;
pub const DEFAULT_WINDOW_SECONDS: u64 = 60;
/// Size of one slot's value.
pub const STATE_BYTES: usize = 84;
pub const CLOCK_TOLERANCE_MS: u64 = 60_000;
const KEY_PREFIX: &str = "tollgate/v1/det/";
/// Separates these slots from the other users of the secret (see [`Slots`]).
const HASH_DOMAIN: &[u8] = b"\x1edetection";
const TAG_DOMAIN: &[u8] = b"\x1edetection_tag";
/// Longest gap between two requests the cadence detector keeps (longer ones count as this).
const MAX_GAP_MS: u64 = 3_600_000;
/// A block or throttle started under `dry-run`: only reported by the gate, never carried out.
const DRY_RUN_FLAG: u8 = 0x80;

/// The detectors, in the order of their bit in [`State::tripped`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detector {
    Spike,
    CredentialProbing,
    ObjectProbing,
    Enumeration,
    Fuzzing,
    MissingHeaders,
    RegularCadence,
}

impl Detector {
    pub const ALL: [Detector; 7] = [
        Detector::Spike,
        Detector::CredentialProbing,
        Detector::ObjectProbing,
        Detector::Enumeration,
        Detector::Fuzzing,
        Detector::MissingHeaders,
        Detector::RegularCadence,
    ];

    /// Its name in the policy, the log and the metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Detector::Spike => "spike",
            Detector::CredentialProbing => "credential_probing",
            Detector::ObjectProbing => "object_probing",
            Detector::Enumeration => "enumeration",
            Detector::Fuzzing => "fuzzing",
            Detector::MissingHeaders => "missing_headers",
            Detector::RegularCadence => "regular_cadence",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }

    fn from_index(i: u8) -> Option<Detector> {
        Detector::ALL.get(usize::from(i)).copied()
    }
}

/// The refusal categories counted per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// 401.
    Credential,
    /// 403 `forbidden` (owner checks, claim conditions).
    Object,
    /// No route.
    Enumeration,
    /// Schema refusals.
    Fuzzing,
}

impl Category {
    const ALL: [Category; 4] = [
        Category::Credential,
        Category::Object,
        Category::Enumeration,
        Category::Fuzzing,
    ];

    fn detector(self) -> Detector {
        match self {
            Category::Credential => Detector::CredentialProbing,
            Category::Object => Detector::ObjectProbing,
            Category::Enumeration => Detector::Enumeration,
            Category::Fuzzing => Detector::Fuzzing,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a detector does when it trips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Report,
    Throttle { period_ms: u64 },
    Block { period_ms: u64 },
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Report => "report",
            Action::Throttle { .. } => "throttle",
            Action::Block { .. } => "block",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spike {
    pub factor: f64,
    pub min_requests: u32,
    pub smoothing: f64,
    pub action: Action,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refusals {
    pub min_refusals: u32,
    pub ratio: f64,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MissingHeaders {
    /// Lowercase.
    pub headers: Vec<String>,
    pub min_requests: u32,
    pub action: Action,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cadence {
    pub requests: u32,
    pub max_variation: f64,
    pub action: Action,
}

/// A route's automated-client settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteSignals {
    pub interactive: bool,
    /// Lowercase.
    pub automation_headers: Vec<String>,
    pub automation_agents: Vec<String>,
}

/// Compiled `detection`.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub window_ms: u64,
    pub slots: u32,
    pub max_retries: u32,
    /// The throttled caller's bucket: `throttle_requests` per `throttle_per_ms`.
    pub throttle_requests: u32,
    pub throttle_per_ms: u64,
    pub spike: Option<Spike>,
    /// Indexed like [`Category::ALL`].
    pub refusals: [Option<Refusals>; 4],
    pub missing_headers: Option<MissingHeaders>,
    pub cadence: Option<Cadence>,
    /// Indexed like the policy's routes; `None`: nothing set.
    pub routes: Vec<Option<RouteSignals>>,
    /// The longest block or throttle this configuration starts: stored ends further out (plus
    /// the clock tolerance) are not believed.
    pub longest_ms: u64,
}

/// What the request showed besides its outcome, judged where its route is known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// An interactive route, and the request is not known automation: the cadence is watched.
    pub interactive: bool,
    /// ... and the request lacks a header every browser and SDK sends.
    pub missing_headers: bool,
}

/// One caller's slot, as stored: [`STATE_BYTES`] little-endian bytes (see `encode`). The zero
/// state is a fresh slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub tag: u32,
    pub window_start_ms: u64,
    pub requests: u32,
    /// Indexed like [`Category::ALL`].
    pub refusals: [u16; 4],
    pub missing: u16,
    /// Requests per window, exponentially weighted, times 16.
    pub baseline_x16: u32,
    /// Detectors that tripped in this window (each reports once a window).
    pub tripped: u8,
    /// The detector (index + 1, 0: none) behind the running block or throttle, with
    /// `DRY_RUN_FLAG` when it was started under `dry-run`.
    pub action_by: u8,
    pub blocked_until_ms: u64,
    pub throttled_until_ms: u64,
    /// The throttle bucket, in thousandths of a request, as of `tokens_at_ms`.
    pub tokens_milli: u32,
    pub tokens_at_ms: u64,
    /// Cadence: the last request's time, and the gaps since the last verdict.
    pub last_ms: u64,
    pub gaps: u16,
    pub gap_sum_ms: u32,
    pub gap_sumsq: u64,
}

/// Writes fixed-size little-endian fields one after the other.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at.saturating_add(bytes.len());
        if let Some(dst) = self.out.get_mut(self.at..end) {
            dst.copy_from_slice(bytes);
        }
        self.at = end;
    }
}

/// Reads what [`Writer`] wrote.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.at.checked_add(N)?;
        let out = self.bytes.get(self.at..end)?.try_into().ok()?;
        self.at = end;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

impl State {
    pub fn encode(&self) -> [u8; STATE_BYTES] {
        let mut out = [0u8; STATE_BYTES];
        let mut w = Writer {
            out: &mut out,
            at: 0,
        };
        w.put(&self.tag.to_le_bytes());
        w.put(&self.window_start_ms.to_le_bytes());
        w.put(&self.requests.to_le_bytes());
        for r in self.refusals {
            w.put(&r.to_le_bytes());
        }
        w.put(&self.missing.to_le_bytes());
        w.put(&self.baseline_x16.to_le_bytes());
        w.put(&[self.tripped, self.action_by]);
        w.put(&self.blocked_until_ms.to_le_bytes());
        w.put(&self.throttled_until_ms.to_le_bytes());
        w.put(&self.tokens_milli.to_le_bytes());
        w.put(&self.tokens_at_ms.to_le_bytes());
        w.put(&self.last_ms.to_le_bytes());
        w.put(&self.gaps.to_le_bytes());
        w.put(&self.gap_sum_ms.to_le_bytes());
        w.put(&self.gap_sumsq.to_le_bytes());
        out
    }

    /// `None` unless `bytes` is exactly one encoded state; callers then start fresh.
    pub fn decode(bytes: &[u8]) -> Option<State> {
        if bytes.len() != STATE_BYTES {
            return None;
        }
        let mut r = Reader { bytes, at: 0 };
        Some(State {
            tag: r.u32()?,
            window_start_ms: r.u64()?,
            requests: r.u32()?,
            refusals: [r.u16()?, r.u16()?, r.u16()?, r.u16()?],
            missing: r.u16()?,
            baseline_x16: r.u32()?,
            tripped: r.u8()?,
            action_by: r.u8()?,
            blocked_until_ms: r.u64()?,
            throttled_until_ms: r.u64()?,
            tokens_milli: r.u32()?,
            tokens_at_ms: r.u64()?,
            last_ms: r.u64()?,
            gaps: r.u16()?,
            gap_sum_ms: r.u32()?,
            gap_sumsq: r.u64()?,
        })
    }
}

/// What the gate before the decision says about a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Pass,
    /// Blocked for `retry_after` more seconds by `by`; `dry_run`: the block was started under
    /// `dry-run` and is only reported.
    Blocked {
        retry_after: u64,
        by: Option<Detector>,
        dry_run: bool,
    },
    /// Throttled and its reduced bucket is empty for `retry_after` seconds.
    Throttled {
        retry_after: u64,
        by: Option<Detector>,
        dry_run: bool,
    },
}

/// A detector that tripped on this request, with its evidence (counts, never request data).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trip {
    pub detector: Detector,
    pub action: Action,
    /// Requests in the window so far.
    pub requests: u32,
    /// Of them, the ones in the detector's category (refusals, requests without headers).
    pub matching: u32,
    /// Spike: the baseline, requests per window. Cadence: the mean gap in ms.
    pub reference: f64,
    /// Cadence: standard deviation over mean of the gaps.
    pub variation: f64,
    /// The action was not carried out: a `dry-run` request, or a block already running.
    pub dry_run: bool,
}

impl Trip {
    /// The evidence for the log line.
    pub fn evidence(&self, window_s: u64) -> String {
        match self.detector {
            Detector::Spike => format!(
                "{} requests in the {window_s} s window against a baseline of {}",
                self.requests,
                decimal(self.reference, 10)
            ),
            Detector::RegularCadence => format!(
                "{} gaps between requests averaging {} ms vary by {} of their mean",
                self.matching,
                decimal(self.reference, 1),
                decimal(self.variation, 1000)
            ),
            Detector::MissingHeaders => format!(
                "{} of {} requests in the {window_s} s window lack a header every browser and SDK sends",
                self.matching, self.requests
            ),
            _ => format!(
                "{} of {} requests in the {window_s} s window refused",
                self.matching, self.requests
            ),
        }
    }
}

/// `x` rounded to `1 / scale` (1, 10, 1000) and written out. Integer formatting only: float
/// formatting would add its tables to the module for one log line.
fn decimal(x: f64, scale: u32) -> String {
    let scaled = (x.max(0.0) * f64::from(scale)).round().min(1e15) as u64;
    let scale = u64::from(scale);
    let (int, frac) = (scaled / scale, scaled % scale);
    match scale {
        10 => format!("{int}.{frac}"),
        1000 => format!("{int}.{frac:03}"),
        _ => int.to_string(),
    }
}

/// Whole seconds, rounded up, at least 1.
fn retry_after_seconds(left_ms: u64) -> u64 {
    left_ms.div_ceil(1000).max(1)
}

fn range_u64(errors: &mut Vec<ConfigError>, at: &str, value: u64, lo: u64, hi: u64) {
    if !(lo..=hi).contains(&value) {
        errors.push(ConfigError::new(
            at,
            format!("{value} is out of range; expected {lo} to {hi}"),
        ));
    }
}

fn range_f64(errors: &mut Vec<ConfigError>, at: &str, value: f64, lo: f64, hi: f64, shape: &str) {
    if !(value.is_finite() && value >= lo && value <= hi) || value == 0.0 && lo == 0.0 {
        errors.push(ConfigError::new(
            at,
            format!("{value} is out of range; expected {shape}"),
        ));
    }
}

/// Default period of a block or throttle.
const DEFAULT_PERIOD_SECONDS: u64 = 300;

/// Compiles an `action` (default `default`) and its `period_seconds`; `Ok(None)`: `off`.
fn action(
    errors: &mut Vec<ConfigError>,
    at: &str,
    action: Option<&str>,
    period: Option<u64>,
    allowed: &[&str],
) -> Option<Action> {
    let period_s = period.unwrap_or(DEFAULT_PERIOD_SECONDS);
    range_u64(errors, &format!("{at}.period_seconds"), period_s, 1, 86_400);
    let period_ms = period_s.saturating_mul(1000);
    let name = action.unwrap_or("report");
    if !allowed.contains(&name) {
        let list = allowed
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ");
        errors.push(ConfigError::new(
            format!("{at}.action"),
            format!("`{name}` is not an action here; expected one of [{list}]"),
        ));
        return None;
    }
    match name {
        "throttle" => Some(Action::Throttle { period_ms }),
        "block" => Some(Action::Block { period_ms }),
        "report" => Some(Action::Report),
        _ => None,
    }
}

const ACTIONS: &[&str] = &["report", "throttle", "block", "off"];
/// The automated-client signals cannot lock anyone out on their own: no `block`.
const SIGNAL_ACTIONS: &[&str] = &["report", "throttle", "off"];

/// Defaults of the refusal detectors: `(min_refusals, ratio)`. A normal client does not get
/// this many refusals of one kind within a minute, let alone as half its requests.
fn refusal_defaults(c: Category) -> (u32, f64) {
    match c {
        Category::Credential => (20, 0.5),
        Category::Object => (10, 0.5),
        Category::Enumeration => (20, 0.5),
        Category::Fuzzing => (10, 0.5),
    }
}

impl Detection {
    /// Compiles `doc` (at JSON path `at`) and the routes' own settings (`routes[i].detection`);
    /// `None` after pushing errors.
    pub fn compile(
        doc: &DetectionDoc,
        at: &str,
        routes: &[Option<&RouteDetectionDoc>],
        errors: &mut Vec<ConfigError>,
    ) -> Option<Detection> {
        let start = errors.len();
        let window_s = doc.window_seconds.unwrap_or(DEFAULT_WINDOW_SECONDS);
        range_u64(errors, &format!("{at}.window_seconds"), window_s, 1, 3600);
        let slots = doc.slots.unwrap_or(DEFAULT_SLOTS);
        range_u64(
            errors,
            &format!("{at}.slots"),
            slots.into(),
            1,
            slots::MAX_COUNT.into(),
        );
        let max_retries = doc.max_retries.unwrap_or(slots::DEFAULT_ATTEMPTS);
        range_u64(
            errors,
            &format!("{at}.max_retries"),
            max_retries.into(),
            1,
            slots::MAX_ATTEMPTS.into(),
        );
        let (throttle_requests, throttle_per_s) = doc
            .throttle
            .as_ref()
            .map_or((10, 60), |t| (t.requests, t.per_seconds));
        range_u64(
            errors,
            &format!("{at}.throttle.requests"),
            throttle_requests.into(),
            1,
            1_000_000,
        );
        range_u64(
            errors,
            &format!("{at}.throttle.per_seconds"),
            throttle_per_s,
            1,
            86_400,
        );
        let spike_doc = doc.spike.clone().unwrap_or_default();
        let spike_at = format!("{at}.spike");
        let spike = action(
            errors,
            &spike_at,
            spike_doc.action.as_deref(),
            spike_doc.period_seconds,
            ACTIONS,
        )
        .map(|action| {
            let factor = spike_doc.factor.unwrap_or(10.0);
            range_f64(
                errors,
                &format!("{spike_at}.factor"),
                factor,
                1.0,
                1000.0,
                "a number from 1 to 1000",
            );
            let min_requests = spike_doc.min_requests.unwrap_or(600);
            range_u64(
                errors,
                &format!("{spike_at}.min_requests"),
                min_requests.into(),
                1,
                u64::from(u32::MAX),
            );
            let smoothing = spike_doc.smoothing.unwrap_or(0.2);
            range_f64(
                errors,
                &format!("{spike_at}.smoothing"),
                smoothing,
                0.0,
                1.0,
                "a number above 0, at most 1",
            );
            Spike {
                factor,
                min_requests,
                smoothing,
                action,
            }
        });
        let mut refusals = [None; 4];
        let docs = [
            (&doc.credential_probing, "credential_probing"),
            (&doc.object_probing, "object_probing"),
            (&doc.enumeration, "enumeration"),
            (&doc.fuzzing, "fuzzing"),
        ];
        for ((c, (d, name)), slot) in Category::ALL.iter().zip(docs).zip(refusals.iter_mut()) {
            let d: RefusalsDoc = d.clone().unwrap_or_default();
            let here = format!("{at}.{name}");
            let (min, ratio) = refusal_defaults(*c);
            *slot = action(
                errors,
                &here,
                d.action.as_deref(),
                d.period_seconds,
                ACTIONS,
            )
            .map(|action| {
                let min_refusals = d.min_refusals.unwrap_or(min);
                range_u64(
                    errors,
                    &format!("{here}.min_refusals"),
                    min_refusals.into(),
                    1,
                    u64::from(u16::MAX),
                );
                let ratio = d.ratio.unwrap_or(ratio);
                range_f64(
                    errors,
                    &format!("{here}.ratio"),
                    ratio,
                    0.0,
                    1.0,
                    "a share above 0, at most 1",
                );
                Refusals {
                    min_refusals,
                    ratio,
                    action,
                }
            });
        }
        let mh = doc.missing_headers.clone().unwrap_or_default();
        let mh_at = format!("{at}.missing_headers");
        let missing_headers = action(
            errors,
            &mh_at,
            mh.action.as_deref(),
            mh.period_seconds,
            SIGNAL_ACTIONS,
        )
        .map(|action| {
            let headers: Vec<String> = mh
                .headers
                .clone()
                .unwrap_or_else(|| vec!["user-agent".into(), "accept".into()])
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect();
            if headers.is_empty() || headers.iter().any(|h| h.is_empty() || h.starts_with(':')) {
                errors.push(ConfigError::new(
                    format!("{mh_at}.headers"),
                    "expected a non-empty list of header names (no pseudo-headers)",
                ));
            }
            let min_requests = mh.min_requests.unwrap_or(5);
            range_u64(
                errors,
                &format!("{mh_at}.min_requests"),
                min_requests.into(),
                1,
                u64::from(u16::MAX),
            );
            MissingHeaders {
                headers,
                min_requests,
                action,
            }
        });
        let cd = doc.regular_cadence.clone().unwrap_or_default();
        let cd_at = format!("{at}.regular_cadence");
        let cadence = action(
            errors,
            &cd_at,
            cd.action.as_deref(),
            cd.period_seconds,
            SIGNAL_ACTIONS,
        )
        .map(|action| {
            let requests = cd.requests.unwrap_or(20);
            range_u64(
                errors,
                &format!("{cd_at}.requests"),
                requests.into(),
                3,
                1000,
            );
            let max_variation = cd.max_variation.unwrap_or(0.05);
            range_f64(
                errors,
                &format!("{cd_at}.max_variation"),
                max_variation,
                0.0,
                1.0,
                "a share above 0, at most 1",
            );
            Cadence {
                requests,
                max_variation,
                action,
            }
        });
        let routes = routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.map(|r| {
                    let a = r.automation.clone().unwrap_or_default();
                    if a.headers.iter().any(|h| h.is_empty() || h.starts_with(':')) {
                        errors.push(ConfigError::new(
                            format!("routes[{i}].detection.automation.headers"),
                            "expected header names (no pseudo-headers)",
                        ));
                    }
                    if a.user_agent_prefixes.iter().any(String::is_empty) {
                        errors.push(ConfigError::new(
                            format!("routes[{i}].detection.automation.user_agent_prefixes"),
                            "expected non-empty prefixes",
                        ));
                    }
                    RouteSignals {
                        interactive: r.interactive,
                        automation_headers: a
                            .headers
                            .iter()
                            .map(|h| h.to_ascii_lowercase())
                            .collect(),
                        automation_agents: a.user_agent_prefixes.clone(),
                    }
                })
            })
            .collect();
        if errors.len() > start {
            return None;
        }
        Some(
            Detection {
                window_ms: window_s.saturating_mul(1000),
                slots,
                max_retries,
                throttle_requests,
                throttle_per_ms: throttle_per_s.saturating_mul(1000),
                spike,
                refusals,
                missing_headers,
                cadence,
                routes,
                longest_ms: 0,
            }
            .with_longest(),
        )
    }

    fn shared_slots(&self) -> Slots {
        Slots::new(KEY_PREFIX, HASH_DOMAIN, self.slots)
    }

    /// The slot and tag of `caller`.
    pub fn locate(&self, secret: &[u8], caller: &str) -> (String, u32) {
        let key = self.shared_slots().key(secret, &[caller]);
        let mut h = Sha256::new();
        h.update(secret);
        h.update(TAG_DOMAIN);
        h.update([0x1f]);
        h.update(caller.as_bytes());
        let digest = h.finalize();
        let mut first = [0u8; 4];
        for (dst, src) in first.iter_mut().zip(digest.iter()) {
            *dst = *src;
        }
        // 0 is the fresh slot's tag: never a caller's.
        (key, u32::from_le_bytes(first).max(1))
    }

    /// Whether a stored end time is believed at `now_ms` for a period up to `period_ms`.
    fn running(until_ms: u64, now_ms: u64, longest_ms: u64) -> Option<u64> {
        let left = until_ms.checked_sub(now_ms).filter(|l| *l > 0)?;
        (left <= longest_ms.saturating_add(CLOCK_TOLERANCE_MS)).then_some(left)
    }

    /// The longest block or throttle this configuration starts.
    fn longest_period_ms(&self) -> u64 {
        let periods = self
            .refusals
            .iter()
            .flatten()
            .map(|r| r.action)
            .chain(self.spike.map(|s| s.action))
            .chain(self.missing_headers.as_ref().map(|m| m.action))
            .chain(self.cadence.map(|c| c.action));
        periods
            .map(|a| match a {
                Action::Report => 0,
                Action::Throttle { period_ms } | Action::Block { period_ms } => period_ms,
            })
            .max()
            .unwrap_or(0)
    }

    fn with_longest(mut self) -> Detection {
        self.longest_ms = self.longest_period_ms();
        self
    }

    fn blocked_left(&self, s: &State, now_ms: u64) -> Option<u64> {
        Self::running(s.blocked_until_ms, now_ms, self.longest_ms)
    }

    fn throttled_left(&self, s: &State, now_ms: u64) -> Option<u64> {
        Self::running(s.throttled_until_ms, now_ms, self.longest_ms)
    }

    fn action_by(s: &State) -> (Option<Detector>, bool) {
        let index = s.action_by & !DRY_RUN_FLAG;
        (
            index.checked_sub(1).and_then(Detector::from_index),
            s.action_by & DRY_RUN_FLAG != 0,
        )
    }

    /// The throttle bucket at `now_ms`: `(tokens_milli, as of)`.
    fn refill(&self, s: &State, now_ms: u64) -> u32 {
        let full = u64::from(self.throttle_requests).saturating_mul(1000);
        let elapsed = now_ms.saturating_sub(s.tokens_at_ms);
        let added =
            u128::from(elapsed) * u128::from(full) / u128::from(self.throttle_per_ms.max(1));
        let tokens = u128::from(s.tokens_milli)
            .saturating_add(added)
            .min(u128::from(full));
        u32::try_from(tokens).unwrap_or(u32::MAX)
    }

    /// The gate on a state (pure): what to store and what the caller gets.
    pub fn apply_gate(&self, s: State, tag: u32, now_ms: u64) -> (Option<State>, Gate) {
        if s.tag != tag {
            return (None, Gate::Pass);
        }
        let (by, dry_run) = Self::action_by(&s);
        if let Some(left) = self.blocked_left(&s, now_ms) {
            return (
                None,
                Gate::Blocked {
                    retry_after: retry_after_seconds(left),
                    by,
                    dry_run,
                },
            );
        }
        let Some(throttle_left) = self.throttled_left(&s, now_ms) else {
            return (None, Gate::Pass);
        };
        let tokens = self.refill(&s, now_ms);
        let mut next = s;
        next.tokens_at_ms = now_ms;
        if tokens >= 1000 {
            next.tokens_milli = tokens.saturating_sub(1000);
            return (Some(next), Gate::Pass);
        }
        next.tokens_milli = tokens;
        // Time until one whole request is back in the bucket.
        let missing = u64::from(1000u32.saturating_sub(tokens));
        let per_token_ms = self.throttle_per_ms.saturating_mul(missing)
            / u64::from(self.throttle_requests.max(1)).saturating_mul(1000);
        (
            Some(next),
            Gate::Throttled {
                // Never past the end of the throttle: the full bucket is back then.
                retry_after: retry_after_seconds(per_token_ms.min(throttle_left)),
                by,
                dry_run,
            },
        )
    }

    /// Before the decision: whether `caller` is blocked or throttled. One read unless it is
    /// throttled (then a bounded swap takes from its bucket); a store failure or lost swaps let
    /// the request through: detection is a brake, not the lock.
    pub fn gate(
        &self,
        store: &dyn SharedStore,
        secret: &[u8],
        caller: &str,
        now_ms: u64,
    ) -> Result<Gate, StoreError> {
        let (key, tag) = self.locate(secret, caller);
        let Some((bytes, _)) = store.get(&key)? else {
            return Ok(Gate::Pass);
        };
        let Some(state) = State::decode(&bytes) else {
            return Ok(Gate::Pass);
        };
        if let (None, gate) = self.apply_gate(state, tag, now_ms) {
            return Ok(gate);
        }
        let outcome = Slots::update(store, &key, self.max_retries, Missing::Create, |stored| {
            let state = stored.and_then(State::decode).unwrap_or_default();
            match self.apply_gate(state, tag, now_ms) {
                (Some(next), gate) => Update::Write(next.encode(), gate),
                (None, gate) => Update::Keep(gate),
            }
        })?;
        Ok(match outcome {
            Outcome::Done { value, .. } => value,
            Outcome::Exhausted { .. } => Gate::Pass,
        })
    }

    /// Moves `s` into the window that `now_ms` falls in, folding the finished windows into the
    /// baseline.
    fn roll(&self, s: &mut State, now_ms: u64) {
        let open = now_ms < s.window_start_ms.saturating_add(self.window_ms)
            && s.window_start_ms <= now_ms.saturating_add(CLOCK_TOLERANCE_MS);
        if open && s.window_start_ms != 0 {
            return;
        }
        if s.window_start_ms != 0 && s.window_start_ms <= now_ms {
            let alpha = self.spike.map_or(0.2, |sp| sp.smoothing);
            let mut b = f64::from(s.baseline_x16) / 16.0;
            b += alpha * (f64::from(s.requests) - b);
            // Windows without a request pull the baseline down as well.
            let empty = (now_ms - s.window_start_ms) / self.window_ms.max(1);
            for _ in 1..empty.min(64) {
                b *= 1.0 - alpha;
            }
            if empty > 64 {
                b = 0.0;
            }
            s.baseline_x16 = (b * 16.0).round().clamp(0.0, f64::from(u32::MAX)) as u32;
        } else {
            // Fresh, or a start in the future: nothing to believe.
            s.baseline_x16 = 0;
        }
        s.window_start_ms = now_ms;
        s.requests = 0;
        s.refusals = [0; 4];
        s.missing = 0;
        s.tripped = 0;
    }

    /// Starts `action` (by `detector`) on `s` at `now_ms`.
    fn start(&self, s: &mut State, detector: Detector, action: Action, now_ms: u64, dry: bool) {
        let by = (detector as u8).saturating_add(1) | if dry { DRY_RUN_FLAG } else { 0 };
        match action {
            Action::Report => {}
            Action::Block { period_ms } => {
                s.blocked_until_ms = now_ms.saturating_add(period_ms);
                s.action_by = by;
            }
            Action::Throttle { period_ms } => {
                if self.throttled_left(s, now_ms).is_none() {
                    s.tokens_milli = self.throttle_requests.saturating_mul(1000);
                    s.tokens_at_ms = now_ms;
                }
                s.throttled_until_ms = now_ms.saturating_add(period_ms);
                if self.blocked_left(s, now_ms).is_none() {
                    s.action_by = by;
                }
            }
        }
    }

    /// One request of the caller whose slot holds `s` (pure): its refusal category, what its
    /// route showed, whether the request ran under `dry-run`. Returns the state to store and the
    /// detectors that tripped.
    pub fn apply_request(
        &self,
        mut s: State,
        tag: u32,
        now_ms: u64,
        category: Option<Category>,
        observed: Observed,
        dry_run: bool,
    ) -> (Option<State>, Vec<Trip>) {
        if s.tag != tag {
            let busy = self.blocked_left(&s, now_ms).is_some()
                || self.throttled_left(&s, now_ms).is_some();
            if s.tag != 0 && busy {
                // The occupant is blocked or throttled: the newcomer waits (untracked).
                return (None, Vec::new());
            }
            s = State {
                tag,
                ..State::default()
            };
        }
        self.roll(&mut s, now_ms);
        s.requests = s.requests.saturating_add(1);
        if let Some(c) = category {
            if let Some(r) = s.refusals.get_mut(c.index()) {
                *r = r.saturating_add(1);
            }
        }
        if observed.missing_headers {
            s.missing = s.missing.saturating_add(1);
        }
        let mut trips = Vec::new();
        let base = |s: &State, d: Detector, action: Action| Trip {
            detector: d,
            action,
            requests: s.requests,
            matching: 0,
            reference: 0.0,
            variation: 0.0,
            dry_run,
        };
        if let Some(sp) = self
            .spike
            .filter(|_| s.tripped & Detector::Spike.bit() == 0)
        {
            let baseline = f64::from(s.baseline_x16) / 16.0;
            if s.requests >= sp.min_requests && f64::from(s.requests) > sp.factor * baseline {
                trips.push(Trip {
                    reference: baseline,
                    ..base(&s, Detector::Spike, sp.action)
                });
            }
        }
        if let Some(c) = category {
            let d = c.detector();
            let rule = self.refusals.get(c.index()).copied().flatten();
            let count = s.refusals.get(c.index()).copied().unwrap_or(0);
            if let Some(r) = rule.filter(|_| s.tripped & d.bit() == 0) {
                if u32::from(count) >= r.min_refusals
                    && f64::from(count) >= r.ratio * f64::from(s.requests)
                {
                    trips.push(Trip {
                        matching: count.into(),
                        ..base(&s, d, r.action)
                    });
                }
            }
        }
        if let Some(mh) = self
            .missing_headers
            .as_ref()
            .filter(|_| observed.missing_headers)
            .filter(|_| s.tripped & Detector::MissingHeaders.bit() == 0)
        {
            if u32::from(s.missing) >= mh.min_requests {
                trips.push(Trip {
                    matching: s.missing.into(),
                    ..base(&s, Detector::MissingHeaders, mh.action)
                });
            }
        }
        if let (Some(cd), true) = (self.cadence, observed.interactive) {
            if let Some(trip) = self.cadence_step(&mut s, cd, now_ms) {
                if s.tripped & Detector::RegularCadence.bit() == 0 {
                    trips.push(Trip { dry_run, ..trip });
                }
            }
        }
        for t in &mut trips {
            s.tripped |= t.detector.bit();
            if t.action != Action::Report {
                let (_, running_dry) = Self::action_by(&s);
                // A block started under dry-run gives way to a real one.
                if (dry_run || !running_dry) && self.blocked_left(&s, now_ms).is_some() {
                    // A block runs already: it ends when it said it would.
                    t.dry_run = true;
                    continue;
                }
                self.start(&mut s, t.detector, t.action, now_ms, dry_run);
            }
        }
        (Some(s), trips)
    }

    /// Adds the gap since the caller's last request; after `requests` gaps, judges them.
    fn cadence_step(&self, s: &mut State, cd: Cadence, now_ms: u64) -> Option<Trip> {
        let last = s.last_ms;
        s.last_ms = now_ms;
        if last == 0 || last > now_ms {
            return None;
        }
        let gap = (now_ms - last).min(MAX_GAP_MS);
        s.gaps = s.gaps.saturating_add(1);
        s.gap_sum_ms = s
            .gap_sum_ms
            .saturating_add(u32::try_from(gap).unwrap_or(u32::MAX));
        s.gap_sumsq = s.gap_sumsq.saturating_add(gap.saturating_mul(gap));
        if u32::from(s.gaps) < cd.requests {
            return None;
        }
        let n = f64::from(s.gaps);
        let mean = f64::from(s.gap_sum_ms) / n;
        let var = (s.gap_sumsq as f64 / n - mean * mean).max(0.0);
        let variation = if mean > 0.0 { var.sqrt() / mean } else { 0.0 };
        let gaps = u32::from(s.gaps);
        s.gaps = 0;
        s.gap_sum_ms = 0;
        s.gap_sumsq = 0;
        // Gaps of (nearly) nothing are a burst, which `spike` judges, not a cadence.
        (mean >= 1.0 && variation <= cd.max_variation).then_some(Trip {
            detector: Detector::RegularCadence,
            action: cd.action,
            requests: s.requests,
            matching: gaps,
            reference: mean,
            variation,
            dry_run: false,
        })
    }

    /// After the decision: counts one request of `caller` with a bounded compare-and-swap loop.
    /// Lost swaps count nothing (`Ok(vec![])`).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        store: &dyn SharedStore,
        key: &str,
        tag: u32,
        now_ms: u64,
        category: Option<Category>,
        observed: Observed,
        dry_run: bool,
    ) -> Result<Vec<Trip>, StoreError> {
        let outcome = Slots::update(store, key, self.max_retries, Missing::Create, |stored| {
            let state = stored.and_then(State::decode).unwrap_or_default();
            match self.apply_request(state, tag, now_ms, category, observed, dry_run) {
                (Some(next), trips) => Update::Write(next.encode(), trips),
                (None, trips) => Update::Keep(trips),
            }
        })?;
        Ok(match outcome {
            Outcome::Done { value, .. } => value,
            Outcome::Exhausted { .. } => Vec::new(),
        })
    }

    /// A refusal found after the request was counted (its body broke the schema): adds it to
    /// the category without counting another request.
    pub fn record_late(
        &self,
        store: &dyn SharedStore,
        key: &str,
        tag: u32,
        now_ms: u64,
        category: Category,
        dry_run: bool,
    ) -> Result<Vec<Trip>, StoreError> {
        let outcome = Slots::update(store, key, self.max_retries, Missing::Create, |stored| {
            let mut state = stored.and_then(State::decode).unwrap_or_default();
            if state.tag != tag {
                return Update::Keep(Vec::new());
            }
            // Counted as a request of its own, then that extra request taken back out.
            state.requests = state.requests.saturating_sub(1);
            match self.apply_request(
                state,
                tag,
                now_ms,
                Some(category),
                Observed::default(),
                dry_run,
            ) {
                (Some(next), trips) => Update::Write(next.encode(), trips),
                (None, trips) => Update::Keep(trips),
            }
        })?;
        Ok(match outcome {
            Outcome::Done { value, .. } => value,
            Outcome::Exhausted { .. } => Vec::new(),
        })
    }

    /// What the request shows on its route (index `route`), from its headers (`header(name)`:
    /// the first value).
    pub fn observe<'a>(&self, route: usize, header: impl Fn(&str) -> Option<&'a str>) -> Observed {
        let Some(Some(r)) = self.routes.get(route) else {
            return Observed::default();
        };
        if !r.interactive {
            return Observed::default();
        }
        let known = r.automation_headers.iter().any(|h| header(h).is_some())
            || header("user-agent").is_some_and(|ua| {
                r.automation_agents
                    .iter()
                    .any(|p| ua.starts_with(p.as_str()))
            });
        if known {
            return Observed::default();
        }
        let missing = self.missing_headers.as_ref().is_some_and(|m| {
            m.headers
                .iter()
                .any(|h| header(h).is_none_or(str::is_empty))
        });
        Observed {
            interactive: true,
            missing_headers: missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use wasm_bindgen_test::wasm_bindgen_test;

    const T0: u64 = 1_700_000_000_000;
    const SECRET: &[u8] = b"secret";

    fn compile(doc: serde_json::Value) -> Result<Detection, Vec<ConfigError>> {
        let doc: DetectionDoc = serde_json::from_value(doc).unwrap();
        let mut errors = Vec::new();
        let interactive = RouteDetectionDoc {
            interactive: true,
            automation: Some(crate::policy::AutomationDoc {
                headers: vec!["X-CI-Job".into()],
                user_agent_prefixes: vec!["acme-monitor/".into()],
            }),
        };
        match Detection::compile(&doc, "detection", &[None, Some(&interactive)], &mut errors) {
            Some(d) if errors.is_empty() => Ok(d),
            _ => Err(errors),
        }
    }

    /// Runs one request through the pure arithmetic and keeps the state.
    struct Caller<'d> {
        det: &'d Detection,
        state: State,
        tag: u32,
    }

    impl Caller<'_> {
        fn new(det: &Detection) -> Caller<'_> {
            Caller {
                det,
                state: State::default(),
                tag: 7,
            }
        }
        fn send(&mut self, at: u64, c: Option<Category>, o: Observed, dry: bool) -> Vec<Trip> {
            let (next, trips) = self.det.apply_request(self.state, self.tag, at, c, o, dry);
            if let Some(n) = next {
                self.state = n;
            }
            trips
        }
        fn gate(&mut self, at: u64) -> Gate {
            let (next, g) = self.det.apply_gate(self.state, self.tag, at);
            if let Some(n) = next {
                self.state = n;
            }
            g
        }
    }

    fn detectors(trips: &[Trip]) -> Vec<&'static str> {
        trips.iter().map(|t| t.detector.as_str()).collect()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_state_round_trips_and_garbage_is_fresh() {
        let s = State {
            tag: 9,
            window_start_ms: T0,
            requests: 3,
            refusals: [1, 2, 3, 4],
            missing: 5,
            baseline_x16: 160,
            tripped: 0b101,
            action_by: 3 | DRY_RUN_FLAG,
            blocked_until_ms: T0 + 1,
            throttled_until_ms: T0 + 2,
            tokens_milli: 1500,
            tokens_at_ms: T0 + 3,
            last_ms: T0 + 4,
            gaps: 6,
            gap_sum_ms: 7,
            gap_sumsq: 8,
        };
        assert_eq!(State::decode(&s.encode()), Some(s));
        assert_eq!(State::decode(&[0u8; STATE_BYTES - 1]), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_spike_trips_against_the_callers_own_baseline() {
        let det = compile(serde_json::json!({
            "spike": {"factor": 10, "min_requests": 50, "smoothing": 0.2}
        }))
        .unwrap();
        let mut c = Caller::new(&det);
        // Five minutes of 10 requests a minute: baseline 2, 3.6, 4.88, 5.90, 6.72.
        for w in 0..5 {
            for i in 0..10 {
                let t = c.send(T0 + w * 60_000 + i * 1000, None, Observed::default(), false);
                assert!(t.is_empty(), "window {w} request {i}: {t:?}");
            }
        }
        let start = T0 + 5 * 60_000;
        // Baseline 6.72 after the 5th window is folded in, stored in sixteenths (6.6875): the
        // 67th request is above 10 × that.
        let mut tripped_at = None;
        for i in 1..=100u32 {
            let t = c.send(start + u64::from(i), None, Observed::default(), false);
            if !t.is_empty() {
                assert_eq!(detectors(&t), ["spike"]);
                assert!((t[0].reference - 6.72).abs() < 0.1, "{t:?}");
                assert!(tripped_at.is_none(), "trips once per window");
                tripped_at = Some(i);
            }
        }
        assert_eq!(tripped_at, Some(67));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_new_caller_trips_only_at_min_requests_and_quiet_windows_lower_the_baseline() {
        let det = compile(serde_json::json!({"spike": {"min_requests": 5}})).unwrap();
        let mut c = Caller::new(&det);
        let trips: Vec<usize> = (0..6)
            .map(|i| c.send(T0 + i, None, Observed::default(), false).len())
            .collect();
        assert_eq!(trips, [0, 0, 0, 0, 1, 0]);
        // 6 requests, then 10 empty windows: 6 × 0.2 = 1.2, × 0.8^10 = 0.13.
        c.send(T0 + 11 * 60_000, None, Observed::default(), false);
        assert_eq!(c.state.baseline_x16, 2);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refusals_trip_by_count_and_share() {
        let det = compile(serde_json::json!({
            "object_probing": {"min_refusals": 10, "ratio": 0.5, "action": "block", "period_seconds": 120}
        }))
        .unwrap();
        // A prober: every request refused by the owner check.
        let mut p = Caller::new(&det);
        for i in 0..9 {
            assert!(p
                .send(T0 + i, Some(Category::Object), Observed::default(), false)
                .is_empty());
        }
        let t = p.send(T0 + 9, Some(Category::Object), Observed::default(), false);
        assert_eq!(detectors(&t), ["object_probing"]);
        assert_eq!((t[0].matching, t[0].requests), (10, 10));
        assert_eq!(
            p.gate(T0 + 10),
            Gate::Blocked {
                retry_after: 120,
                by: Some(Detector::ObjectProbing),
                dry_run: false
            }
        );
        assert_eq!(p.gate(T0 + 9 + 120_000), Gate::Pass, "the block lifts");
        // A normal caller: the same refusals among many good requests.
        let mut n = Caller::new(&det);
        for i in 0..30 {
            n.send(T0 + i, None, Observed::default(), false);
        }
        for i in 0..20 {
            let t = n.send(
                T0 + 100 + i,
                Some(Category::Object),
                Observed::default(),
                false,
            );
            assert!(t.is_empty(), "{t:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_block_started_in_dry_run_is_only_reported() {
        let det = compile(serde_json::json!({
            "credential_probing": {"min_refusals": 2, "ratio": 0.5, "action": "block"}
        }))
        .unwrap();
        let mut c = Caller::new(&det);
        c.send(T0, Some(Category::Credential), Observed::default(), true);
        let t = c.send(
            T0 + 1,
            Some(Category::Credential),
            Observed::default(),
            true,
        );
        assert!(t[0].dry_run);
        assert!(matches!(
            c.gate(T0 + 2),
            Gate::Blocked { dry_run: true, .. }
        ));
        // The next window, on an enforcing route: a real block replaces the reported one.
        c.send(
            T0 + 61_000,
            Some(Category::Credential),
            Observed::default(),
            false,
        );
        let t = c.send(
            T0 + 61_001,
            Some(Category::Credential),
            Observed::default(),
            false,
        );
        assert!(!t[0].dry_run);
        assert!(matches!(
            c.gate(T0 + 61_002),
            Gate::Blocked { dry_run: false, .. }
        ));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_throttled_caller_gets_a_reduced_bucket_for_the_period() {
        let det = compile(serde_json::json!({
            "throttle": {"requests": 2, "per_seconds": 10},
            "spike": {"min_requests": 3, "action": "throttle", "period_seconds": 60}
        }))
        .unwrap();
        let mut c = Caller::new(&det);
        for i in 0..3 {
            c.send(T0 + i, None, Observed::default(), false);
        }
        let at = T0 + 10;
        assert_eq!(c.gate(at), Gate::Pass);
        assert_eq!(c.gate(at), Gate::Pass);
        let Gate::Throttled {
            retry_after, by, ..
        } = c.gate(at)
        else {
            panic!("throttled");
        };
        // One request every 5 s.
        assert_eq!((retry_after, by), (5, Some(Detector::Spike)));
        assert_eq!(c.gate(at + 5_000), Gate::Pass);
        assert!(matches!(c.gate(at + 5_001), Gate::Throttled { .. }));
        // After the period the bucket is gone and nothing is written.
        assert_eq!(
            det.apply_gate(c.state, c.tag, T0 + 2 + 60_000),
            (None, Gate::Pass)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_metronome_cadence_trips_and_a_human_one_does_not() {
        let det = compile(serde_json::json!({
            "regular_cadence": {"requests": 10, "max_variation": 0.05}
        }))
        .unwrap();
        let on = Observed {
            interactive: true,
            missing_headers: false,
        };
        let mut bot = Caller::new(&det);
        let mut found = Vec::new();
        for i in 0..11 {
            found.extend(bot.send(T0 + i * 2000 + (i % 2) * 20, None, on, false));
        }
        assert_eq!(detectors(&found), ["regular_cadence"]);
        assert!(found[0].variation < 0.05 && (found[0].reference - 2000.0).abs() < 20.0);
        let mut human = Caller::new(&det);
        let gaps = [
            800u64, 4300, 1200, 9000, 650, 2500, 3100, 700, 15000, 1900, 2200,
        ];
        let mut at = T0;
        for g in gaps {
            at += g;
            assert!(human.send(at, None, on, false).is_empty());
        }
        // Not on an interactive route: nothing is watched.
        let mut api = Caller::new(&det);
        for i in 0..30 {
            assert!(api
                .send(T0 + i * 2000, None, Observed::default(), false)
                .is_empty());
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn missing_headers_report_once_per_window_and_known_automation_is_exempt() {
        let det = compile(serde_json::json!({"missing_headers": {"min_requests": 3}})).unwrap();
        let none = |_: &str| None;
        assert_eq!(det.observe(0, none), Observed::default(), "not interactive");
        let o = det.observe(1, none);
        assert!(o.interactive && o.missing_headers);
        let full = |h: &str| match h {
            "user-agent" => Some("Mozilla/5.0"),
            "accept" => Some("*/*"),
            _ => None,
        };
        assert!(!det.observe(1, full).missing_headers);
        let monitor = |h: &str| (h == "user-agent").then_some("acme-monitor/2.1");
        assert_eq!(det.observe(1, monitor), Observed::default());
        let ci = |h: &str| (h == "x-ci-job").then_some("1");
        assert_eq!(det.observe(1, ci), Observed::default());
        let mut c = Caller::new(&det);
        let trips: Vec<usize> = (0..6)
            .map(|i| c.send(T0 + i, None, o, false).len())
            .collect();
        assert_eq!(trips, [0, 0, 1, 0, 0, 0]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn colliding_callers_never_share_a_block() {
        let det = compile(serde_json::json!({
            "enumeration": {"min_refusals": 1, "ratio": 0.1, "action": "block"}
        }))
        .unwrap();
        let mut c = Caller::new(&det);
        c.send(T0, Some(Category::Enumeration), Observed::default(), false);
        assert!(matches!(c.gate(T0 + 1), Gate::Blocked { .. }));
        // Another caller hashed to the same slot is not blocked, and not tracked meanwhile.
        assert_eq!(det.apply_gate(c.state, 8, T0 + 1), (None, Gate::Pass));
        let (next, _) = det.apply_request(c.state, 8, T0 + 1, None, Observed::default(), false);
        assert_eq!(next, None);
        // Once the block is over, the newcomer takes the slot over, starting fresh.
        let after = T0 + 301_000;
        let (next, _) = det.apply_request(c.state, 8, after, None, Observed::default(), false);
        assert_eq!(next.map(|s| (s.tag, s.requests)), Some((8, 1)));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn evidence_is_written_without_float_formatting() {
        assert_eq!(
            [
                decimal(6.6875, 10),
                decimal(0.0049, 1000),
                decimal(1999.6, 1)
            ],
            ["6.7", "0.005", "2000"]
        );
        let t = Trip {
            detector: Detector::Spike,
            action: Action::Report,
            requests: 70,
            matching: 0,
            reference: 6.6875,
            variation: 0.0,
            dry_run: false,
        };
        assert_eq!(
            t.evidence(60),
            "70 requests in the 60 s window against a baseline of 6.7"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_block_too_far_in_the_future_is_garbage() {
        let det = compile(serde_json::json!({})).unwrap();
        let s = State {
            tag: 7,
            blocked_until_ms: T0 + 10 * 86_400_000,
            ..State::default()
        };
        assert_eq!(det.apply_gate(s, 7, T0), (None, Gate::Pass));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn memory_stays_bounded_with_100k_callers() {
        let det = compile(serde_json::json!({"slots": 512})).unwrap();
        let store = MemoryStore::default();
        for i in 0..100_000u32 {
            let caller = format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            let (key, tag) = det.locate(SECRET, &caller);
            det.record(
                &store,
                &key,
                tag,
                T0 + u64::from(i),
                None,
                Observed::default(),
                false,
            )
            .unwrap();
            assert_eq!(det.gate(&store, SECRET, &caller, T0).unwrap(), Gate::Pass);
        }
        assert!(store.len() <= 512, "{} keys", store.len());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn through_the_store_a_prober_is_blocked() {
        let det = compile(serde_json::json!({
            "object_probing": {"min_refusals": 3, "ratio": 0.5, "action": "block", "period_seconds": 60}
        }))
        .unwrap();
        let store = MemoryStore::default();
        let (key, tag) = det.locate(SECRET, "p:mallory");
        let mut all = Vec::new();
        for i in 0..3 {
            all.extend(
                det.record(
                    &store,
                    &key,
                    tag,
                    T0 + i,
                    Some(Category::Object),
                    Observed::default(),
                    false,
                )
                .unwrap(),
            );
        }
        assert_eq!(detectors(&all), ["object_probing"]);
        assert!(matches!(
            det.gate(&store, SECRET, "p:mallory", T0 + 5).unwrap(),
            Gate::Blocked {
                retry_after: 60,
                ..
            }
        ));
        assert_eq!(
            det.gate(&store, SECRET, "p:alice", T0 + 5).unwrap(),
            Gate::Pass
        );
        // A late refusal (the body) adds to its category, not to the requests.
        let (k2, t2) = det.locate(SECRET, "p:bob");
        det.record(&store, &k2, t2, T0, None, Observed::default(), false)
            .unwrap();
        det.record_late(&store, &k2, t2, T0, Category::Fuzzing, false)
            .unwrap();
        let (bytes, _) = store.get(&k2).unwrap().unwrap();
        let s = State::decode(&bytes).unwrap();
        assert_eq!((s.requests, s.refusals), (1, [0, 0, 0, 1]));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bad_configuration_names_its_path_and_shape() {
        let errors = |doc| {
            compile(doc)
                .unwrap_err()
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            errors(serde_json::json!({"missing_headers": {"action": "block"}})),
            ["detection.missing_headers.action: `block` is not an action here; expected one of [`report`, `throttle`, `off`]"]
        );
        assert_eq!(
            errors(serde_json::json!({"fuzzing": {"ratio": 0}, "window_seconds": 0})),
            [
                "detection.window_seconds: 0 is out of range; expected 1 to 3600",
                "detection.fuzzing.ratio: 0 is out of range; expected a share above 0, at most 1"
            ]
        );
        assert_eq!(
            errors(serde_json::json!({"spike": {"action": "ban"}})),
            ["detection.spike.action: `ban` is not an action here; expected one of [`report`, `throttle`, `block`, `off`]"]
        );
        // Envoy hands non-integral numbers of a Struct policy over as text.
        let texts = compile(serde_json::json!({"fuzzing": {"ratio": "0.25"}})).unwrap();
        assert_eq!(texts.refusals[3].map(|r| r.ratio), Some(0.25));
        assert!(serde_json::from_value::<DetectionDoc>(
            serde_json::json!({"spike": {"factor": "ten"}})
        )
        .unwrap_err()
        .to_string()
        .contains("`ten` is not a number; expected a number"));
        let off = compile(serde_json::json!({"spike": {"action": "off"}})).unwrap();
        assert_eq!(off.spike, None);
        assert!(off.refusals.iter().all(Option::is_some), "defaults: report");
    }
}
