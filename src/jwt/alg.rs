//! JWS algorithms Tollgate accepts. `none` is not one of them and cannot be configured.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
}

/// Which JWK `kty` (and curve) can carry keys for an algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Hmac,
    Rsa,
    Ec(&'static str),
    Ed25519,
}

impl Alg {
    pub const ALL: [Alg; 13] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::ES512,
        Alg::EdDSA,
    ];

    pub fn parse(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::ES512 => "ES512",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub const fn family(self) -> Family {
        match self {
            Alg::HS256 | Alg::HS384 | Alg::HS512 => Family::Hmac,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                Family::Rsa
            }
            Alg::ES256 => Family::Ec("P-256"),
            Alg::ES384 => Family::Ec("P-384"),
            Alg::ES512 => Family::Ec("P-521"),
            Alg::EdDSA => Family::Ed25519,
        }
    }

    /// Allowed values, for error messages.
    pub fn allowed_list() -> String {
        Alg::ALL
            .iter()
            .map(|a| format!("`{}`", a.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn round_trips_and_refuses_none() {
        for a in Alg::ALL {
            assert_eq!(Alg::parse(a.as_str()), Some(a));
        }
        assert_eq!(Alg::parse("none"), None);
        assert_eq!(Alg::parse("NONE"), None);
        assert_eq!(Alg::parse("rs256"), None);
    }
}
