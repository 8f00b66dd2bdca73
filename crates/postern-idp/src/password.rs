//! Passwords: the policy a new password must meet, and Argon2id hashing.
//!
//! **Invariant:** an unknown user costs the same hash as a known one ([`verify_or_dummy`]), so the
//! answer's timing does not tell whether an account exists.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// NIST SP 800-63B asks for at least 8; 12 keeps offline guessing of a leaked hash expensive.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Passwords that appear at the top of every breach list; refused whatever their length.
const COMMON: &[&str] = &[
    "123456789012",
    "1234567890123",
    "password1234",
    "password12345",
    "password123456",
    "passwordpassword",
    "qwertyuiop12",
    "qwertyuiopasdf",
    "iloveyou1234",
    "letmein12345",
    "welcome12345",
    "administrator",
    "changeme1234",
    "correcthorsebatterystaple",
    "trustno1trustno1",
    "aaaaaaaaaaaa",
    "abcdefghijkl",
    "abc123abc123",
    "111111111111",
    "000000000000",
    "p@ssw0rd1234",
    "football1234",
    "baseball1234",
    "sunshine1234",
    "princess1234",
    "monkey123456",
    "dragon123456",
    "master123456",
];

/// Why a password was refused, as the message the person sees.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassword {
    #[error("the password must be at least {MIN_PASSWORD_CHARS} characters long")]
    TooShort,
    #[error("the password must not contain the email address or its part before the @")]
    ContainsEmail,
    #[error("the password is on the list of commonly used passwords; choose another")]
    Common,
}

/// Checks a new password for `email` against the policy.
pub fn check_policy(email: &str, password: &str) -> Result<(), WeakPassword> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(WeakPassword::TooShort);
    }
    let lower = password.to_lowercase();
    let email = email.to_lowercase();
    let local = email.split('@').next().unwrap_or_default();
    if lower.contains(&email) || (local.chars().count() >= 3 && lower.contains(local)) {
        return Err(WeakPassword::ContainsEmail);
    }
    if COMMON.contains(&lower.as_str()) {
        return Err(WeakPassword::Common);
    }
    Ok(())
}

/// Hashing failed (it only can with impossible parameters); kept typed so callers report it.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// An Argon2id hash in PHC string format, with a random salt and the crate's default cost
/// (RFC 9106's second recommended option).
pub fn hash(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches the PHC hash; a malformed hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Verifies against the user's hash, or against a dummy hash when there is no user, so both cost
/// one Argon2id computation. Returns `false` for an unknown user.
pub fn verify_or_dummy(password: &str, phc: Option<&str>) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    match phc {
        Some(phc) => verify(password, phc),
        None => {
            let dummy = DUMMY.get_or_init(|| hash("postern-dummy-password").unwrap_or_default());
            let _ = verify(password, dummy);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(email: &str, password: &str, expected: Result<(), WeakPassword>) {
        assert_eq!(check_policy(email, password), expected, "{password:?}");
    }

    #[test]
    fn policy() {
        check("ada@example.com", "short", Err(WeakPassword::TooShort));
        check(
            "ada@example.com",
            "elevenchars",
            Err(WeakPassword::TooShort),
        );
        check("ada@example.com", "twelve chars", Ok(()));
        check(
            "ada@example.com",
            "xxAda@Example.comxx",
            Err(WeakPassword::ContainsEmail),
        );
        check(
            "lovelace@example.com",
            "my-LOVELACE-pass",
            Err(WeakPassword::ContainsEmail),
        );
        check("ada@example.com", "Password1234", Err(WeakPassword::Common));
        check("ada@example.com", "correct horse battery", Ok(()));
    }

    #[test]
    fn hashes_verify_and_are_argon2id() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("wrong horse battery", &h));
        assert!(!verify("anything", "not a hash"));
        assert!(!verify_or_dummy("anything", None));
        assert!(verify_or_dummy("correct horse battery", Some(&h)));
    }
}
