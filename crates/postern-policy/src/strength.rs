//! What a sign-in proved: one definition of "multi-factor" and "phishing-resistant" for every
//! issuer, read from the ID token's `amr` (RFC 8176 authentication method references) and `acr`.
//!
//! Factors are counted by kind (something you know, have, are), not by name: `["pwd", "pin"]` is
//! two things the user knows, one factor. An `acr` counts only when it is exactly one of the
//! values below, never because it contains "mfa" somewhere.

use serde::{Deserialize, Serialize};

/// The strength of one sign-in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strength {
    /// At least two kinds of factor, or the issuer said so (`amr` `mfa`, or a multi-factor `acr`).
    pub multi_factor: bool,
    /// A key bound to the site's origin (a passkey or FIDO security key), which a phishing page
    /// cannot replay. Always multi-factor too: the key is something you have, unlocked by
    /// something you know or are (WebAuthn user verification).
    pub phishing_resistant: bool,
}

/// `acr` values that assert multi-factor authentication: OpenID PAPE's, and Postern's own
/// built-in provider's.
const MULTI_FACTOR_ACR: &[&str] = &[
    "http://schemas.openid.net/pape/policies/2007/06/multi-factor",
    "mfa",
];

/// `acr` values that assert phishing-resistant authentication (OpenID PAPE).
const PHISHING_RESISTANT_ACR: &[&str] = &[
    "http://schemas.openid.net/pape/policies/2007/06/phishing-resistant",
    "phr",
    "phrh",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Knowledge,
    Possession,
    Inherence,
}

/// The kind of factor an RFC 8176 method is, when it is one.
fn kind(method: &str) -> Option<Kind> {
    Some(match method {
        "pwd" | "pin" | "kba" => Kind::Knowledge,
        "otp" | "hwk" | "swk" | "sms" | "tel" | "sc" | "pop" | "fido" => Kind::Possession,
        "fpt" | "face" | "iris" | "retina" | "vbm" => Kind::Inherence,
        _ => return None,
    })
}

/// Methods that prove a key bound to the origin: WebAuthn keys (`hwk`, `swk`, as Postern's
/// provider reports passkeys) and Entra's `fido`.
fn origin_bound(method: &str) -> bool {
    matches!(method, "hwk" | "swk" | "fido")
}

impl Strength {
    /// Reads a sign-in's `amr` and `acr`.
    pub fn of<S: AsRef<str>>(amr: &[S], acr: Option<&str>) -> Strength {
        let mut kinds = [false; 3];
        let mut asserted_mfa = false;
        let mut key = false;
        for method in amr.iter().map(AsRef::as_ref) {
            if method == "mfa" {
                asserted_mfa = true;
            }
            key |= origin_bound(method);
            if let Some(k) = kind(method) {
                kinds[k as usize] = true;
            }
        }
        let distinct = kinds.iter().filter(|k| **k).count();
        let acr_phr = acr.is_some_and(|a| PHISHING_RESISTANT_ACR.contains(&a));
        let acr_mfa = acr.is_some_and(|a| MULTI_FACTOR_ACR.contains(&a));
        let multi_factor = asserted_mfa || distinct >= 2 || acr_mfa || acr_phr;
        // A key is phishing-resistant once it was unlocked by a second factor (user
        // verification); a bare security-key touch is one possession factor.
        let phishing_resistant = acr_phr || (key && multi_factor);
        Strength {
            multi_factor,
            phishing_resistant,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(amr: &[&str], acr: Option<&str>, multi_factor: bool, phishing_resistant: bool) {
        assert_eq!(
            Strength::of(amr, acr),
            Strength {
                multi_factor,
                phishing_resistant
            },
            "amr {amr:?}, acr {acr:?}"
        );
    }

    #[test]
    fn factors_are_counted_by_kind_and_acr_only_by_exact_value() {
        check(&[], None, false, false);
        check(&["pwd"], None, false, false);
        check(&["pwd", "pwd"], None, false, false);
        check(&["pwd", "pin"], None, false, false);
        check(&["pwd", "kba"], None, false, false);
        check(&["otp", "sms"], None, false, false);
        check(&["pwd", "otp"], None, true, false);
        check(&["pwd", "sms"], None, true, false);
        check(&["otp", "fpt"], None, true, false);
        check(&["mfa"], None, true, false);
        check(&["pwd"], Some("mfa"), true, false);
        check(&["pwd"], Some("nomfa"), false, false);
        check(&["pwd"], Some("mfa-optional"), false, false);
        check(&["pwd"], Some("urn:mace:incommon:iap:silver"), false, false);
        check(
            &["pwd"],
            Some("http://schemas.openid.net/pape/policies/2007/06/multi-factor"),
            true,
            false,
        );
        check(&["pwd", "unknown-method"], None, false, false);
        // Passkeys as Postern's provider reports them, and as other issuers do.
        check(&["hwk", "mfa"], None, true, true);
        check(&["swk", "mfa"], None, true, true);
        check(&["hwk", "pin"], None, true, true);
        check(&["hwk", "fpt"], None, true, true);
        check(&["fido", "mfa"], None, true, true);
        // A security key touched without user verification is one factor.
        check(&["hwk"], None, false, false);
        check(&["hwk", "user"], None, false, false);
        // A password and a one-time code are multi-factor, not phishing-resistant.
        check(&["pwd", "otp", "mfa"], None, true, false);
        check(
            &["pwd"],
            Some("http://schemas.openid.net/pape/policies/2007/06/phishing-resistant"),
            true,
            true,
        );
    }
}
