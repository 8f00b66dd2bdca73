//! The second factor: TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, one step of clock skew
//! either way, as every authenticator app expects), its enrolment QR code, and recovery codes.

use base64::Engine;
use postern_store::TotpSecret;
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Secret, TOTP};

/// How many recovery codes an enrolment hands out.
pub const RECOVERY_CODES: usize = 10;

/// The name authenticator apps show next to the account.
const ISSUER: &str = "Postern";

/// A fresh TOTP secret: 160 random bits (RFC 4226 section 4's recommended length), base32.
pub fn new_secret() -> TotpSecret {
    let bytes: [u8; 20] = rand::random();
    match Secret::Raw(bytes.to_vec()).to_encoded() {
        Secret::Encoded(s) => TotpSecret(s),
        Secret::Raw(_) => TotpSecret(String::new()),
    }
}

fn totp(secret: &TotpSecret, account: &str) -> Option<TOTP> {
    let bytes = Secret::Encoded(secret.0.clone()).to_bytes().ok()?;
    // The account label may not hold a colon (Key Uri Format); an email rarely does.
    let account = account.replace(':', "_");
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        30,
        bytes,
        Some(ISSUER.to_owned()),
        account,
    )
    .ok()
}

/// The time step (`unix / 30`) whose code `code` is, if it is valid for `secret` at `unix_secs`
/// (the current step or one either side, for clock skew). The caller refuses a step used before.
pub fn matching_step(secret: &TotpSecret, code: &str, unix_secs: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 {
        return None;
    }
    let t = totp(secret, "x")?;
    let now = unix_secs / STEP_SECS;
    [now.saturating_sub(1), now, now + 1]
        .into_iter()
        .find(|step| {
            let expected = t.generate(step * STEP_SECS);
            // Compared as digests: constant time with respect to the code's content.
            Sha256::digest(expected.as_bytes()) == Sha256::digest(code.as_bytes())
        })
}

/// Whether `code` is valid for `secret` at `unix_secs`.
pub fn check(secret: &TotpSecret, code: &str, unix_secs: u64) -> bool {
    matching_step(secret, code, unix_secs).is_some()
}

/// RFC 6238's default time step.
const STEP_SECS: u64 = 30;

/// The code for `secret` at `unix_secs` (what an authenticator app would show).
pub fn code_at(secret: &TotpSecret, unix_secs: u64) -> Option<String> {
    totp(secret, "x").map(|t| t.generate(unix_secs))
}

/// The `otpauth://` URI an authenticator app scans.
pub fn provisioning_uri(secret: &TotpSecret, account: &str) -> Option<String> {
    totp(secret, account).map(|t| t.get_url())
}

/// The URI as a QR code, an inline SVG (no image request, no JavaScript).
pub fn qr_svg(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

/// Fresh recovery codes, shown once: `xxxxx-xxxxx` from an alphabet without look-alikes.
pub fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    (0..RECOVERY_CODES)
        .map(|_| {
            let chars: Vec<u8> = (0..10)
                .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()])
                .collect();
            let s = String::from_utf8_lossy(&chars).into_owned();
            format!("{}-{}", &s[..5], &s[5..])
        })
        .collect()
}

/// How a recovery code is stored: SHA-256 of its normalised form (50 random bits each, single
/// use, and attempts are throttled, so a fast hash is enough).
pub fn recovery_code_hash(code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(normal.as_bytes()))
}

/// Whether the input looks like a recovery code rather than a TOTP code.
pub fn looks_like_recovery_code(input: &str) -> bool {
    input.chars().filter(|c| c.is_ascii_alphanumeric()).count() == 10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B: the ASCII secret "12345678901234567890", T = 59 -> 94287082
        // (8 digits); the 6-digit code is its last six digits.
        let secret = match Secret::Raw(b"12345678901234567890".to_vec()).to_encoded() {
            Secret::Encoded(s) => TotpSecret(s),
            Secret::Raw(_) => unreachable!(),
        };
        assert_eq!(code_at(&secret, 59).as_deref(), Some("287082"));
        assert!(check(&secret, "287082", 59));
        assert!(check(&secret, "287 082", 89));
        assert!(!check(&secret, "287082", 59 + 120));
        assert!(!check(&secret, "28708", 59));
        assert_eq!(matching_step(&secret, "287082", 59), Some(1));
        assert_eq!(matching_step(&secret, "287082", 75), Some(1));
    }

    #[test]
    fn enrolment_material() {
        let secret = new_secret();
        let uri = provisioning_uri(&secret, "ada@example.com").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/Postern:ada%40example.com?secret="),
            "{uri}"
        );
        assert!(qr_svg(&uri).unwrap().contains("<svg"));
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert!(codes.iter().all(|c| looks_like_recovery_code(c)));
        assert_eq!(
            recovery_code_hash(&codes[0]),
            recovery_code_hash(&codes[0].to_uppercase())
        );
    }
}
