//! Client-address allow and deny lists: CIDR blocks parsed and masked once at load time, matched
//! per request by a scan of (network, mask) pairs that allocates nothing.
//!
//! Address families: a client reported as an IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, what a
//! dual-stack listener sees for an IPv4 peer) is matched as the IPv4 address it carries, and an
//! entry inside `::ffff:0:0/96` is stored as the IPv4 block it names, so either spelling matches
//! either. Otherwise IPv4 entries match only IPv4 clients and IPv6 entries only IPv6 clients:
//! `::/0` means "every IPv6 client", not "everyone".
//!
//! Fail closed: once any entry is configured, a request whose client address is missing or is not
//! an address is refused, since it can be shown neither outside `deny` nor inside `allow`.

use crate::policy::{ConfigError, IpAccessDoc};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One CIDR block (`10.0.0.0/8`, `2001:db8::/32`) with its mask precomputed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr(Block);

// INVARIANT: `mask` is `prefix` leading ones and `network & !mask == 0` (no host bits), so a
// client is inside exactly when `client & mask == network`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Block {
    V4 { network: u32, mask: u32 },
    V6 { network: u128, mask: u128 },
}

/// `::ffff:0:0/96`, the IPv4-mapped range.
const MAPPED_PREFIX: u128 = 0xffff_0000_0000;
const MAPPED_MASK: u128 = !0xffff_ffff;

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// A prefix length: decimal digits only (`u8::from_str` would also take `+8`).
fn parse_prefix(text: &str) -> Option<u8> {
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32 or /128). The error is a
    /// [`ConfigError`] message: lowercase, naming the input and what is allowed.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        if let Some((_, zone)) = addr_text.split_once('%') {
            return Err(format!(
                "`{text}`: zone identifiers are not supported in entries; remove `%{zone}`"
            ));
        }
        let Ok(addr) = addr_text.parse::<IpAddr>() else {
            return Err(format!(
                "`{text}` is not an IP address or CIDR block; expected e.g. `10.0.0.0/8`, `2001:db8::/32` or `192.0.2.7`"
            ));
        };
        let max: u8 = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match parse_prefix(p) {
                Some(n) if n <= max => n,
                Some(_) => {
                    return Err(format!(
                        "`{text}`: prefix length `{p}` is out of range; expected 0 to {max}"
                    ))
                }
                None => {
                    return Err(format!(
                        "`{text}`: prefix length `{p}` is not a number; expected 0 to {max}"
                    ))
                }
            },
        };
        let block = match addr {
            IpAddr::V4(a) => {
                let (bits, mask) = (u32::from(a), mask32(prefix));
                if bits & !mask != 0 {
                    let network = Ipv4Addr::from(bits & mask);
                    return Err(host_bits(text, &network, prefix));
                }
                Block::V4 {
                    network: bits,
                    mask,
                }
            }
            IpAddr::V6(a) => {
                let (bits, mask) = (u128::from(a), mask128(prefix));
                if bits & !mask != 0 {
                    let network = Ipv6Addr::from(bits & mask);
                    return Err(host_bits(text, &network, prefix));
                }
                if prefix >= 96 && bits & MAPPED_MASK == MAPPED_PREFIX {
                    // Clients are matched in canonical form (mapped -> IPv4): store the block
                    // the same way or it could never match.
                    Block::V4 {
                        network: (bits & 0xffff_ffff) as u32,
                        mask: mask32(prefix - 96),
                    }
                } else {
                    Block::V6 {
                        network: bits,
                        mask,
                    }
                }
            }
        };
        Ok(Cidr(block))
    }

    /// Whether `ip` is inside this block (an IPv4-mapped `ip` counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.contains_canonical(ip.to_canonical())
    }

    fn contains_canonical(&self, ip: IpAddr) -> bool {
        match (self.0, ip) {
            (Block::V4 { network, mask }, IpAddr::V4(a)) => u32::from(a) & mask == network,
            (Block::V6 { network, mask }, IpAddr::V6(a)) => u128::from(a) & mask == network,
            _ => false,
        }
    }

    pub fn prefix_len(&self) -> u8 {
        let ones = match self.0 {
            Block::V4 { mask, .. } => mask.count_ones(),
            Block::V6 { mask, .. } => mask.count_ones(),
        };
        u8::try_from(ones).unwrap_or(u8::MAX)
    }
}

fn host_bits(text: &str, network: &dyn fmt::Display, prefix: u8) -> String {
    format!("`{text}` has bits set after the prefix length; did you mean `{network}/{prefix}`?")
}

/// Canonical form: IPv4-mapped addresses (`::ffff:10.1.2.3`) as their IPv4 address.
impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Block::V4 { network, .. } => write!(f, "{}", Ipv4Addr::from(network))?,
            Block::V6 { network, .. } => write!(f, "{}", Ipv6Addr::from(network))?,
        }
        write!(f, "/{}", self.prefix_len())
    }
}

/// The client address as the engine matches it, from the text `engine::request::client_ip`
/// returns: IPv4-mapped addresses become IPv4; an IPv6 zone (`fe80::1%eth0`) is dropped, since it
/// only says which interface a link-local address was seen on and entries cannot name one.
/// Anything else that is not a bare address (a port, brackets, spaces) is `None`.
pub fn parse_client_ip(text: &str) -> Option<IpAddr> {
    let addr = match text.split_once('%') {
        Some((addr, zone)) if !zone.is_empty() => IpAddr::V6(addr.parse::<Ipv6Addr>().ok()?),
        Some(_) => return None,
        None => text.parse().ok()?,
    };
    Some(addr.to_canonical())
}

/// Compiled `ip_access`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpList {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

impl IpList {
    /// Compiles `doc`, found at JSON path `at` (e.g. `ip_access`, `routes[2].ip_access`).
    /// Invalid entries are reported in `errors` and left out: the list is only meant to be used
    /// when `errors` gained nothing.
    pub fn compile(doc: &IpAccessDoc, at: &str, errors: &mut Vec<ConfigError>) -> IpList {
        IpList {
            allow: compile_entries(&doc.allow, &format!("{at}.allow"), errors),
            deny: compile_entries(&doc.deny, &format!("{at}.deny"), errors),
        }
    }

    /// No entries: every request passes, even one without a client address.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    pub fn allow(&self) -> &[Cidr] {
        &self.allow
    }

    pub fn deny(&self) -> &[Cidr] {
        &self.deny
    }

    /// Whether a request from `client_ip` (as `engine::request::client_ip` returns it) may
    /// proceed: not inside any `deny` block and, when `allow` is non-empty, inside one of its
    /// blocks. A missing or unparsable address is refused unless the list is empty.
    pub fn permits(&self, client_ip: Option<&str>) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(ip) = client_ip.and_then(parse_client_ip) else {
            return false;
        };
        if self.deny.iter().any(|c| c.contains_canonical(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains_canonical(ip))
    }
}

fn compile_entries(entries: &[String], at: &str, errors: &mut Vec<ConfigError>) -> Vec<Cidr> {
    let mut out = Vec::with_capacity(entries.len());
    for (i, text) in entries.iter().enumerate() {
        match Cidr::parse(text) {
            Ok(cidr) => out.push(cidr),
            Err(message) => errors.push(ConfigError::new(format!("{at}[{i}]"), message)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn list(allow: &[&str], deny: &[&str]) -> IpList {
        let doc = IpAccessDoc {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        };
        let mut errors = vec![];
        let l = IpList::compile(&doc, "ip_access", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        l
    }

    fn cidr(text: &str) -> Cidr {
        Cidr::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn errors_of(allow: &[&str], deny: &[&str]) -> Vec<(String, String)> {
        let doc = IpAccessDoc {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        };
        let mut errors = vec![];
        IpList::compile(&doc, "ip_access", &mut errors);
        errors.into_iter().map(|e| (e.path, e.message)).collect()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn ipv4_blocks() {
        let c = cidr("10.0.0.0/8");
        for inside in ["10.0.0.0", "10.1.2.3", "10.255.255.255"] {
            assert!(c.contains(ip(inside)), "{inside}");
        }
        for outside in ["9.255.255.255", "11.0.0.0", "192.168.0.1"] {
            assert!(!c.contains(ip(outside)), "{outside}");
        }
        let c = cidr("192.0.2.6/31");
        assert!(c.contains(ip("192.0.2.6")) && c.contains(ip("192.0.2.7")));
        assert!(!c.contains(ip("192.0.2.5")) && !c.contains(ip("192.0.2.8")));
        assert_eq!(c.prefix_len(), 31);
        assert_eq!(c.to_string(), "192.0.2.6/31");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn ipv6_blocks() {
        let c = cidr("2001:db8::/32");
        assert!(c.contains(ip("2001:db8::")));
        assert!(c.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!c.contains(ip("2001:db9::")));
        assert!(!c.contains(ip("2001:db7:ffff::1")));
        assert!(!c.contains(ip("10.0.0.1")), "families do not mix");
        assert_eq!(cidr("2001:DB8::/32"), c, "case does not matter");
        assert_eq!(c.to_string(), "2001:db8::/32");
        let c = cidr("2001:db8::/127");
        assert!(c.contains(ip("2001:db8::1")) && !c.contains(ip("2001:db8::2")));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn boundaries() {
        let all4 = cidr("0.0.0.0/0");
        assert!(all4.contains(ip("0.0.0.0")) && all4.contains(ip("255.255.255.255")));
        assert!(
            !all4.contains(ip("::1")),
            "IPv4 /0 is every IPv4 client only"
        );
        assert_eq!(all4.prefix_len(), 0);
        let all6 = cidr("::/0");
        assert!(
            all6.contains(ip("::")) && all6.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
        );
        assert!(
            !all6.contains(ip("10.0.0.1")),
            "IPv6 /0 is every IPv6 client only"
        );
        assert!(
            !all6.contains(ip("::ffff:10.0.0.1")),
            "a mapped client is an IPv4 client"
        );
        assert_eq!(all6.prefix_len(), 0);

        let one4 = cidr("192.0.2.7/32");
        assert_eq!(cidr("192.0.2.7"), one4, "a bare IPv4 address is a /32");
        assert!(one4.contains(ip("192.0.2.7")));
        assert!(!one4.contains(ip("192.0.2.6")) && !one4.contains(ip("192.0.2.8")));
        let one6 = cidr("2001:db8::7/128");
        assert_eq!(cidr("2001:db8::7"), one6, "a bare IPv6 address is a /128");
        assert!(one6.contains(ip("2001:db8::7")));
        assert!(!one6.contains(ip("2001:db8::6")) && !one6.contains(ip("2001:db8::8")));
        assert_eq!(one6.prefix_len(), 128);

        let half = cidr("128.0.0.0/1");
        assert!(half.contains(ip("128.0.0.0")) && half.contains(ip("255.255.255.255")));
        assert!(!half.contains(ip("127.255.255.255")));
        assert!(cidr("8000::/1").contains(ip("ffff::1")));
        assert!(!cidr("8000::/1").contains(ip("7fff::1")));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn ipv4_mapped_addresses() {
        let l = list(&["10.0.0.0/8"], &[]);
        assert!(
            l.permits(Some("::ffff:10.1.2.3")),
            "mapped client, IPv4 entry"
        );
        assert!(l.permits(Some("::FFFF:10.1.2.3")));
        assert!(!l.permits(Some("::ffff:11.1.2.3")));
        assert!(
            !l.permits(Some("::10.1.2.3")),
            "IPv4-compatible (deprecated) is not mapped"
        );

        let mapped = cidr("::ffff:10.0.0.0/104");
        assert_eq!(
            mapped,
            cidr("10.0.0.0/8"),
            "a mapped entry is stored as IPv4"
        );
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        assert!(mapped.contains(ip("10.1.2.3")), "mapped entry, IPv4 client");
        assert!(mapped.contains(ip("::ffff:10.1.2.3")));
        assert_eq!(cidr("::ffff:0:0/96"), cidr("0.0.0.0/0"));
        assert_eq!(cidr("::ffff:192.0.2.7"), cidr("192.0.2.7"));
        // Wider than the mapped range: stays IPv6 and covers native IPv6 clients only.
        let wide = cidr("::/80");
        assert!(!wide.contains(ip("10.1.2.3")) && !wide.contains(ip("::ffff:10.1.2.3")));
        assert!(wide.contains(ip("::1")));

        let l = list(&[], &["::ffff:192.0.2.0/120"]);
        assert!(!l.permits(Some("192.0.2.9")));
        assert!(!l.permits(Some("::ffff:192.0.2.9")));
        assert!(l.permits(Some("192.0.3.9")));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn deny_wins_over_allow() {
        let l = list(
            &["10.0.0.0/8", "2001:db8::/32"],
            &["10.1.0.0/16", "2001:db8:bad::/48"],
        );
        assert!(l.permits(Some("10.2.0.1")));
        assert!(
            !l.permits(Some("10.1.2.3")),
            "denied inside an allowed block"
        );
        assert!(!l.permits(Some("11.0.0.1")), "outside every allowed block");
        assert!(l.permits(Some("2001:db8::1")));
        assert!(!l.permits(Some("2001:db8:bad::1")));
        assert!(!l.permits(Some("2001:db9::1")));

        let l = list(&["192.0.2.7"], &["192.0.2.7"]);
        assert!(!l.permits(Some("192.0.2.7")), "in both: deny wins");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn deny_only_and_empty() {
        let l = list(&[], &["203.0.113.0/24"]);
        assert!(!l.is_empty());
        assert!(!l.permits(Some("203.0.113.50")));
        assert!(
            l.permits(Some("198.51.100.1")),
            "no allow list: everyone else passes"
        );
        assert!(l.permits(Some("2001:db8::1")));

        let empty = list(&[], &[]);
        assert!(empty.is_empty());
        for client in [
            None,
            Some(""),
            Some("garbage"),
            Some("10.0.0.1"),
            Some("::1"),
        ] {
            assert!(empty.permits(client), "{client:?}");
        }
        assert!(IpList::default().is_empty() && IpList::default().permits(None));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn missing_or_garbage_client_fails_closed() {
        let deny_only = list(&[], &["203.0.113.0/24"]);
        let allow_all = list(&["0.0.0.0/0", "::/0"], &[]);
        for client in [
            None,
            Some(""),
            Some("not-an-ip"),
            Some("10.0.0.256"),
            Some("10.0.0.1:8080"),
            Some("[2001:db8::1]"),
            Some("[2001:db8::1]:443"),
            Some(" 10.0.0.1"),
            Some("10.0.0.1 "),
            Some("10.0.0.1/32"),
            Some("unknown"),
            Some("10.0.0.1%eth0"),
            Some("fe80::1%"),
            Some("%eth0"),
        ] {
            assert!(!deny_only.permits(client), "deny list, {client:?}");
            assert!(!allow_all.permits(client), "allow list, {client:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn ipv6_zone_is_ignored_for_matching() {
        let l = list(&["fe80::/10"], &["fe80::bad"]);
        assert!(l.permits(Some("fe80::1%eth0")));
        assert!(l.permits(Some("fe80::1%25")));
        assert!(
            !l.permits(Some("fe80::bad%eth0")),
            "zone does not dodge deny"
        );
        assert!(!l.permits(Some("2001:db8::1%eth0")));
        assert_eq!(parse_client_ip("fe80::1%eth0"), Some(ip("fe80::1")));
        assert_eq!(parse_client_ip("::ffff:10.0.0.1"), Some(ip("10.0.0.1")));
        assert_eq!(
            parse_client_ip("::ffff:10.0.0.1%eth0"),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            parse_client_ip("10.0.0.1%eth0"),
            None,
            "zones are IPv6 only"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn error_paths_and_messages() {
        let errors = errors_of(
            &["10.0.0.0/8", "10.0.0.1/8", "not-an-ip"],
            &["10.0.0.0/33", "2001:db8::1/32", "::/129", "10.0.0.0/x"],
        );
        assert_eq!(
            errors,
            [
                (
                    "ip_access.allow[1]".to_string(),
                    "`10.0.0.1/8` has bits set after the prefix length; did you mean `10.0.0.0/8`?"
                        .to_string()
                ),
                (
                    "ip_access.allow[2]".to_string(),
                    "`not-an-ip` is not an IP address or CIDR block; expected e.g. `10.0.0.0/8`, `2001:db8::/32` or `192.0.2.7`".to_string()
                ),
                (
                    "ip_access.deny[0]".to_string(),
                    "`10.0.0.0/33`: prefix length `33` is out of range; expected 0 to 32"
                        .to_string()
                ),
                (
                    "ip_access.deny[1]".to_string(),
                    "`2001:db8::1/32` has bits set after the prefix length; did you mean `2001:db8::/32`?".to_string()
                ),
                (
                    "ip_access.deny[2]".to_string(),
                    "`::/129`: prefix length `129` is out of range; expected 0 to 128".to_string()
                ),
                (
                    "ip_access.deny[3]".to_string(),
                    "`10.0.0.0/x`: prefix length `x` is not a number; expected 0 to 32"
                        .to_string()
                ),
            ]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rejected_entries() {
        for bad in [
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0.0/1000",
            "10.0.0.0/ 8",
            " 10.0.0.0/8",
            "10.0.0/8",
            "10.0.0.0.0/8",
            "0x0a000000/8",
            "[2001:db8::]/32",
            "2001:db8::/32:80",
            "fe80::1%eth0",
            "fe80::/10%eth0",
            "localhost",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let zone = Cidr::parse("fe80::1%eth0").unwrap_err();
        assert_eq!(
            zone,
            "`fe80::1%eth0`: zone identifiers are not supported in entries; remove `%eth0`"
        );
        assert!(
            Cidr::parse("10.0.0.0/08").is_ok(),
            "leading zero is still 8"
        );
        let all = cidr("0.0.0.0/0");
        assert!(Cidr::parse("10.0.0.0/0")
            .unwrap_err()
            .contains("`0.0.0.0/0`"));
        assert_eq!(all.to_string(), "0.0.0.0/0");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn compile_keeps_valid_entries_and_reports_the_rest() {
        let doc: IpAccessDoc =
            serde_json::from_value(json!({"deny": ["10.0.0.0/8", "bad"]})).unwrap();
        let mut errors = vec![];
        let l = IpList::compile(&doc, "routes[3].ip_access", &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "routes[3].ip_access.deny[1]");
        assert_eq!(l.deny(), [cidr("10.0.0.0/8")]);
        assert!(l.allow().is_empty());

        let doc: IpAccessDoc = serde_json::from_value(json!({})).unwrap();
        assert_eq!(doc, IpAccessDoc::default());
        assert!(serde_json::from_value::<IpAccessDoc>(json!({"allow": [], "block": []})).is_err());
        assert!(serde_json::from_value::<IpAccessDoc>(json!({"allow": "10.0.0.0/8"})).is_err());
    }
}
