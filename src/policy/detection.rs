//! `detection` as written in the policy (behaviour baselines per caller, their detectors and
//! actions, automated-client signals) and a route's own `detection` (interactive use, known
//! automation). `abuse::detect` compiles them; defaults live there.

use serde::{Deserialize, Deserializer};

/// A fraction or factor: a JSON number, or the same number as text. Envoy hands a policy given
/// as a `google.protobuf.Struct` (YAML in the Envoy config) over with non-integral numbers as
/// strings (`"0.5"`), so both spellings are read alike. A visitor rather than an untagged enum:
/// that would buffer the value through serde's generic content type, a lot of code in the module.
fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct Number;
    impl serde::de::Visitor<'_> for Number {
        type Value = f64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number")
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<f64, E> {
            // serde_json's number parser, already in the module (not `str::parse`'s).
            serde_json::from_str::<f64>(v.trim())
                .map_err(|_| E::custom(format!("`{v}` is not a number; expected a number")))
        }
    }
    d.deserialize_any(Number).map(Some)
}

/// What `number` accepts, for the policy's JSON Schema (`tollgate schema`): a JSON number, or
/// text in JSON's number syntax with optional surrounding white space.
#[cfg(not(target_arch = "wasm32"))]
fn number_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["number", "string"],
        "pattern": r"^\s*-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\s*$"
    })
}

/// The policy's `detection`: every detector runs (with its defaults) unless its `action` is
/// `off`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DetectionDoc {
    /// Length of the window requests and refusals are counted in (1 to 3600, default 60).
    #[serde(default)]
    pub window_seconds: Option<u64>,
    /// Shared-data slots (1 to 2^20, default 16384).
    #[serde(default)]
    pub slots: Option<u32>,
    /// Compare-and-swap attempts per update (1 to 64, default 8).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// The reduced bucket of a throttled caller.
    #[serde(default)]
    pub throttle: Option<ThrottleDoc>,
    /// Request rate against the caller's own moving baseline.
    #[serde(default)]
    pub spike: Option<SpikeDoc>,
    /// 401 refusals (any credential refused or missing).
    #[serde(default)]
    pub credential_probing: Option<RefusalsDoc>,
    /// 403 `forbidden` refusals (owner checks and claim conditions).
    #[serde(default)]
    pub object_probing: Option<RefusalsDoc>,
    /// Requests for no route (`route_not_found`, or let through by `default.action: allow`).
    #[serde(default)]
    pub enumeration: Option<RefusalsDoc>,
    /// Requests refused by their schema (`request_invalid`, `body_malformed`).
    #[serde(default)]
    pub fuzzing: Option<RefusalsDoc>,
    /// On interactive routes: requests without the headers every browser and SDK sends.
    #[serde(default)]
    pub missing_headers: Option<MissingHeadersDoc>,
    /// On interactive routes: request cadence too regular to be human.
    #[serde(default)]
    pub regular_cadence: Option<CadenceDoc>,
}

/// The bucket a throttled caller gets: `requests` per `per_seconds`, starting full.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ThrottleDoc {
    pub requests: u32,
    pub per_seconds: u64,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SpikeDoc {
    /// Trips when a window's requests exceed `factor` times the baseline.
    #[serde(default, deserialize_with = "number")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(schema_with = "number_schema"))]
    pub factor: Option<f64>,
    /// ... and are at least this many.
    #[serde(default)]
    pub min_requests: Option<u32>,
    /// Weight of the last window in the baseline (exponential moving average), above 0, at most 1.
    #[serde(default, deserialize_with = "number")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(schema_with = "number_schema"))]
    pub smoothing: Option<f64>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub period_seconds: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RefusalsDoc {
    /// Trips when a window holds at least this many refusals of the category ...
    #[serde(default)]
    pub min_refusals: Option<u32>,
    /// ... making up at least this share of the caller's requests in it.
    #[serde(default, deserialize_with = "number")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(schema_with = "number_schema"))]
    pub ratio: Option<f64>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub period_seconds: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MissingHeadersDoc {
    /// Headers every browser and SDK sends (default `user-agent` and `accept`).
    #[serde(default)]
    pub headers: Option<Vec<String>>,
    /// Requests lacking one of them within a window before the signal trips (default 5).
    #[serde(default)]
    pub min_requests: Option<u32>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub period_seconds: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CadenceDoc {
    /// Intervals between requests looked at together (default 20).
    #[serde(default)]
    pub requests: Option<u32>,
    /// Trips when their standard deviation is at most this share of their mean (default 0.05).
    #[serde(default, deserialize_with = "number")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(schema_with = "number_schema"))]
    pub max_variation: Option<f64>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub period_seconds: Option<u64>,
}

/// A route's `detection`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RouteDetectionDoc {
    /// The route serves browsers and SDKs used by people: the automated-client signals watch it.
    #[serde(default)]
    pub interactive: bool,
    /// Known automation, never reported by the automated-client signals.
    #[serde(default)]
    pub automation: Option<AutomationDoc>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AutomationDoc {
    /// A request carrying any of these headers is known automation.
    #[serde(default)]
    pub headers: Vec<String>,
    /// A request whose `user-agent` starts with one of these is known automation.
    #[serde(default)]
    pub user_agent_prefixes: Vec<String>,
}
