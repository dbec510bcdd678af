//! Envoy's rate-limit service protocol (RLS v3,
//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`): the request Tollgate sends and
//! the answer it reads, as protobuf. Encoded and decoded by hand: the two messages need a few
//! hundred lines, where a protobuf runtime would add far more to every module. The decoder takes
//! any bytes without panicking and skips fields it does not know, as protobuf readers must.
//!
//! The wire format itself is src/protobuf.rs. Field numbers follow `envoy/service/ratelimit/v3/rls.proto` and
//! `envoy/extensions/common/ratelimit/v3/ratelimit.proto`.

use crate::protobuf::{bytes_field, fields, varint_field, Field};

/// The gRPC service and method Envoy's `ratelimit` filter calls too.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

/// gRPC status codes the host reports for a call that got no answer.
pub const GRPC_DEADLINE_EXCEEDED: u32 = 4;

/// `envoy.type.v3.RateLimitUnit` (the values the policy's periods map to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Second = 1,
    Minute = 2,
    Hour = 3,
    Day = 4,
}

impl Unit {
    pub const fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
        }
    }
}

/// One `RateLimitDescriptor`: ordered entries, and the limit Tollgate's policy sets for it (sent
/// as the descriptor's `limit` override, which envoyproxy/ratelimit applies instead of its own
/// configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub entries: Vec<(String, String)>,
    pub limit: Option<(u32, Unit)>,
}

/// `RateLimitResponse.Code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Unknown,
    Ok,
    OverLimit,
}

impl Code {
    fn from_wire(v: u64) -> Code {
        match v {
            1 => Code::Ok,
            2 => Code::OverLimit,
            _ => Code::Unknown,
        }
    }
}

/// One `DescriptorStatus`, in the order of the request's descriptors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    /// `current_limit.requests_per_unit`, when the service said which limit applied.
    pub requests_per_unit: Option<u32>,
    pub limit_remaining: u32,
    /// `duration_until_reset`, rounded up to whole seconds (0: not given).
    pub reset_seconds: u64,
}

/// A decoded `RateLimitResponse` (the parts Tollgate uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub overall: Code,
    pub statuses: Vec<Status>,
    /// `response_headers_to_add`, as the service sent them.
    pub response_headers: Vec<(String, String)>,
}

// ---- encoding ----

/// A `RateLimitRequest` for `domain` that adds `hits_addend` to every descriptor's count.
pub fn encode_request(domain: &str, descriptors: &[Descriptor], hits_addend: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + descriptors.len() * 64);
    bytes_field(&mut out, 1, domain.as_bytes());
    for d in descriptors {
        let mut desc = Vec::with_capacity(64);
        for (key, value) in &d.entries {
            let mut entry = Vec::with_capacity(key.len() + value.len() + 4);
            bytes_field(&mut entry, 1, key.as_bytes());
            bytes_field(&mut entry, 2, value.as_bytes());
            bytes_field(&mut desc, 1, &entry);
        }
        if let Some((requests, unit)) = d.limit {
            let mut limit = Vec::with_capacity(8);
            varint_field(&mut limit, 1, u64::from(requests));
            varint_field(&mut limit, 2, unit as u64);
            bytes_field(&mut desc, 2, &limit);
        }
        bytes_field(&mut out, 2, &desc);
    }
    // Zero is the wire default and means one hit; it is not written.
    if hits_addend != 1 {
        varint_field(&mut out, 3, u64::from(hits_addend));
    }
    out
}

/// A `RateLimitResponse` (what a service sends; `tollgate explain` simulates one with it).
pub fn encode_response(answer: &Answer) -> Vec<u8> {
    let code = |c: Code| match c {
        Code::Unknown => 0,
        Code::Ok => 1,
        Code::OverLimit => 2,
    };
    let mut out = Vec::new();
    varint_field(&mut out, 1, code(answer.overall));
    for s in &answer.statuses {
        let mut status = Vec::new();
        varint_field(&mut status, 1, code(s.code));
        if let Some(n) = s.requests_per_unit {
            let mut limit = Vec::new();
            varint_field(&mut limit, 1, u64::from(n));
            bytes_field(&mut status, 2, &limit);
        }
        varint_field(&mut status, 3, u64::from(s.limit_remaining));
        let mut duration = Vec::new();
        varint_field(&mut duration, 1, s.reset_seconds);
        bytes_field(&mut status, 4, &duration);
        bytes_field(&mut out, 2, &status);
    }
    for (k, v) in &answer.response_headers {
        let mut header = Vec::new();
        bytes_field(&mut header, 1, k.as_bytes());
        bytes_field(&mut header, 2, v.as_bytes());
        bytes_field(&mut out, 3, &header);
    }
    out
}

// ---- decoding ----

/// Reads a `RateLimitResponse`; `None` when the bytes are not one.
pub fn decode_response(buf: &[u8]) -> Option<Answer> {
    let mut answer = Answer {
        overall: Code::Unknown,
        statuses: Vec::new(),
        response_headers: Vec::new(),
    };
    let mut r = fields(buf);
    while let Some((field, value)) = r.next_field().ok()? {
        match (field, value) {
            (1, Field::Varint(v)) => answer.overall = Code::from_wire(v),
            (2, Field::Bytes(b)) => answer.statuses.push(status(b)?),
            (3, Field::Bytes(b)) => answer.response_headers.push(header(b)?),
            // A known field with the wrong wire type is not a valid message.
            (1..=3, _) => return None,
            _ => {}
        }
    }
    Some(answer)
}

fn status(buf: &[u8]) -> Option<Status> {
    let mut s = Status {
        code: Code::Unknown,
        requests_per_unit: None,
        limit_remaining: 0,
        reset_seconds: 0,
    };
    let mut r = fields(buf);
    while let Some((field, value)) = r.next_field().ok()? {
        match (field, value) {
            (1, Field::Varint(v)) => s.code = Code::from_wire(v),
            (2, Field::Bytes(b)) => s.requests_per_unit = Some(current_limit(b)?),
            (3, Field::Varint(v)) => s.limit_remaining = u32::try_from(v).unwrap_or(u32::MAX),
            (4, Field::Bytes(b)) => s.reset_seconds = duration_seconds(b)?,
            (1..=4, _) => return None,
            _ => {}
        }
    }
    Some(s)
}

fn current_limit(buf: &[u8]) -> Option<u32> {
    let mut requests = 0;
    let mut r = fields(buf);
    while let Some((field, value)) = r.next_field().ok()? {
        match (field, value) {
            (1, Field::Varint(v)) => requests = u32::try_from(v).unwrap_or(u32::MAX),
            (1, _) => return None,
            _ => {}
        }
    }
    Some(requests)
}

/// `google.protobuf.Duration`, rounded up to whole seconds; negative durations read as 0.
fn duration_seconds(buf: &[u8]) -> Option<u64> {
    let (mut seconds, mut nanos) = (0i64, 0i64);
    let mut r = fields(buf);
    while let Some((field, value)) = r.next_field().ok()? {
        match (field, value) {
            // int64 / int32 are two's complement on the wire.
            (1, Field::Varint(v)) => seconds = v as i64,
            (2, Field::Varint(v)) => nanos = i64::from(v as i32),
            (1 | 2, _) => return None,
            _ => {}
        }
    }
    let seconds = u64::try_from(seconds).unwrap_or(0);
    Some(if nanos > 0 {
        seconds.saturating_add(1)
    } else {
        seconds
    })
}

/// `envoy.config.core.v3.HeaderValue`: `key`, and `value` or `raw_value`.
fn header(buf: &[u8]) -> Option<(String, String)> {
    let (mut key, mut value) = (String::new(), String::new());
    let mut r = fields(buf);
    while let Some((field, v)) = r.next_field().ok()? {
        match (field, v) {
            (1, Field::Bytes(b)) => key = String::from_utf8(b.to_vec()).ok()?,
            (2 | 3, Field::Bytes(b)) => value = String::from_utf8(b.to_vec()).ok()?,
            (1..=3, _) => return None,
            _ => {}
        }
    }
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protobuf::{tag, FIXED64};
    use wasm_bindgen_test::wasm_bindgen_test;

    /// Decodes a request the way the service does, for round trips: (domain, descriptors, hits).
    fn decode_request(buf: &[u8]) -> (String, Vec<Descriptor>, u64) {
        let (mut domain, mut descriptors, mut hits) = (String::new(), vec![], 0);
        let mut r = fields(buf);
        while let Some((f, v)) = r.next_field().unwrap() {
            match (f, v) {
                (1, Field::Bytes(b)) => domain = String::from_utf8(b.to_vec()).unwrap(),
                (2, Field::Bytes(b)) => {
                    let mut d = Descriptor {
                        entries: vec![],
                        limit: None,
                    };
                    let mut r = fields(b);
                    while let Some((f, v)) = r.next_field().unwrap() {
                        match (f, v) {
                            (1, Field::Bytes(e)) => d.entries.push(header(e).unwrap()),
                            (2, Field::Bytes(l)) => {
                                let mut r = fields(l);
                                let (mut n, mut unit) = (0, Unit::Second);
                                while let Some((f, v)) = r.next_field().unwrap() {
                                    match (f, v) {
                                        (1, Field::Varint(x)) => n = x as u32,
                                        (2, Field::Varint(2)) => unit = Unit::Minute,
                                        (2, Field::Varint(3)) => unit = Unit::Hour,
                                        _ => {}
                                    }
                                }
                                d.limit = Some((n, unit));
                            }
                            _ => panic!("unexpected descriptor field {f}"),
                        }
                    }
                    descriptors.push(d);
                }
                (3, Field::Varint(v)) => hits = v,
                _ => panic!("unexpected request field {f}"),
            }
        }
        (domain, descriptors, hits)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn requests_round_trip() {
        let d = vec![
            Descriptor {
                entries: vec![
                    ("tollgate_limit".into(), "per_caller".into()),
                    ("identity".into(), "jwt:corp:ålice".into()),
                ],
                limit: Some((100, Unit::Minute)),
            },
            Descriptor {
                entries: vec![("route".into(), "x".repeat(300))],
                limit: None,
            },
        ];
        let buf = encode_request("tollgate", &d, 3);
        assert_eq!(decode_request(&buf), ("tollgate".into(), d.clone(), 3));
        // One hit is the wire default: not written.
        assert_eq!(
            decode_request(&encode_request("t", &d, 1)).2,
            0,
            "hits_addend 1 is omitted"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn request_bytes_match_the_protobuf_encoding() {
        // domain "d", one descriptor {entries [{k: "a", v: "b"}], limit {1, SECOND}}, hits 2:
        // the bytes protoc's encoder writes for that message.
        let buf = encode_request(
            "d",
            &[Descriptor {
                entries: vec![("a".into(), "b".into())],
                limit: Some((1, Unit::Second)),
            }],
            2,
        );
        assert_eq!(
            buf,
            [
                0x0a, 1, b'd', 0x12, 14, 0x0a, 6, 0x0a, 1, b'a', 0x12, 1, b'b', 0x12, 4, 0x08, 1,
                0x10, 1, 0x18, 2
            ]
        );
    }

    fn answer_bytes() -> Vec<u8> {
        let mut duration = vec![];
        varint_field(&mut duration, 1, 41);
        varint_field(&mut duration, 2, 5);
        let mut limit = vec![];
        varint_field(&mut limit, 1, 10);
        varint_field(&mut limit, 2, 2);
        bytes_field(&mut limit, 3, b"name");
        let mut status = vec![];
        varint_field(&mut status, 1, 2);
        bytes_field(&mut status, 2, &limit);
        varint_field(&mut status, 3, 0);
        bytes_field(&mut status, 4, &duration);
        // An unknown fixed64 field (as a newer service might send) is skipped.
        tag(&mut status, 9, FIXED64);
        status.extend_from_slice(&[0; 8]);
        let mut header = vec![];
        bytes_field(&mut header, 1, b"x-ratelimit-limit");
        bytes_field(&mut header, 2, b"10");
        let mut out = vec![];
        varint_field(&mut out, 1, 2);
        bytes_field(&mut out, 2, &status);
        bytes_field(&mut out, 3, &header);
        bytes_field(&mut out, 5, b"raw body, ignored");
        out
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn answers_decode() {
        let a = decode_response(&answer_bytes()).unwrap();
        assert_eq!(a.overall, Code::OverLimit);
        assert_eq!(
            a.statuses,
            [Status {
                code: Code::OverLimit,
                requests_per_unit: Some(10),
                limit_remaining: 0,
                reset_seconds: 42,
            }]
        );
        assert_eq!(
            a.response_headers,
            [("x-ratelimit-limit".to_string(), "10".to_string())]
        );
        // The empty message is a valid answer whose code is unknown.
        assert_eq!(decode_response(&[]).unwrap().overall, Code::Unknown);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn encoded_answers_decode_to_themselves() {
        let a = Answer {
            overall: Code::Ok,
            statuses: vec![
                Status {
                    code: Code::Ok,
                    requests_per_unit: Some(5),
                    limit_remaining: 4,
                    reset_seconds: 17,
                },
                Status {
                    code: Code::OverLimit,
                    requests_per_unit: None,
                    limit_remaining: 0,
                    reset_seconds: 0,
                },
            ],
            response_headers: vec![("a".into(), "b".into())],
        };
        assert_eq!(decode_response(&encode_response(&a)), Some(a));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn garbage_is_refused_without_panicking() {
        let good = answer_bytes();
        for cut in 0..good.len() {
            // Every truncation either decodes (a shorter valid message) or is refused.
            let _ = decode_response(&good[..cut]);
        }
        assert!(decode_response(&[0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(decode_response(&[0x08]).is_none(), "varint cut short");
        assert!(
            decode_response(&[0x12, 0x05, 0x08]).is_none(),
            "length past the end"
        );
        assert!(
            decode_response(&[0x0a, 0x00]).is_none(),
            "overall_code as bytes"
        );
        assert!(decode_response(&[0x0b]).is_none(), "a group");
        assert!(decode_response(&[0x80; 11]).is_none(), "an endless varint");
        assert!(decode_response(&[0x00, 0x01]).is_none(), "field number 0");
        // Every byte string decodes or is refused: a cheap exhaustive sweep of short inputs.
        for a in 0..=255u8 {
            for b in [0u8, 1, 2, 0x7f, 0x80, 0xff] {
                let _ = decode_response(&[a, b, a]);
            }
        }
    }
}
