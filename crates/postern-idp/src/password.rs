//! Passwords: the policy a new password must meet, and Argon2id hashing.
//!
//! **Invariant:** an unknown user costs the same hash as a known one ([`verify_or_dummy`]), so the
//! answer's timing does not tell whether an account exists.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::limits::MAX_PASSWORD_BYTES;

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
    #[error("the password must be at most {MAX_PASSWORD_BYTES} bytes long")]
    TooLong,
}

/// Checks a new password for `email` against the policy.
pub fn check_policy(email: &str, password: &str) -> Result<(), WeakPassword> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(WeakPassword::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(WeakPassword::TooLong);
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

/// The most memory a stored hash may ask for (in KiB): four times the default cost. A hash
/// asking for more is treated as malformed rather than allocated.
const MAX_MEMORY_KIB: u32 = 4 * Params::DEFAULT_M_COST;

/// The memory Argon2id works in is allocated at least this large (in 1 KiB blocks), though only
/// the cost's 19 MiB is touched. The C allocator serves an allocation this large (past glibc's
/// largest dynamic mmap threshold, 32 MiB on 64-bit) with its own mapping and unmaps it on
/// free, so a burst of hashes gives its memory back to the system at once instead of leaving
/// it in the allocator's arenas; untouched pages never count as resident.
const ALLOCATION_BLOCKS: usize = 33 * 1024;

/// Runs Argon2id with `params` into `out`, in memory that is returned to the system afterwards
/// (see [`ALLOCATION_BLOCKS`]).
fn argon2_into(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    let blocks = params.block_count();
    let mut memory: Vec<Block> = Vec::with_capacity(blocks.max(ALLOCATION_BLOCKS));
    memory.resize(blocks, Block::default());
    Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt,
        out,
        &mut memory,
    )
}

/// An Argon2id hash in PHC string format, with a random salt and the crate's default cost
/// (RFC 9106's second recommended option).
pub fn hash(password: &str) -> Result<String, HashError> {
    let err = |e: &dyn std::fmt::Display| HashError(e.to_string());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| err(&e))?;
    let params = Params::default();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(
        Algorithm::Argon2id,
        Version::V0x13,
        params.clone(),
        password.as_bytes(),
        salt_bytes,
        &mut out,
    )
    .map_err(|e| err(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| err(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| err(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC hash; a malformed hash never matches, nor does one that
/// asks for more than [`MAX_MEMORY_KIB`]. The comparison is constant-time.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    if params.m_cost() > MAX_MEMORY_KIB {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if argon2_into(
        algorithm,
        version,
        params,
        password.as_bytes(),
        salt,
        &mut out,
    )
    .is_err()
    {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(&out).is_ok_and(|got| got == expected)
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
        check(
            "ada@example.com",
            &"x".repeat(MAX_PASSWORD_BYTES + 1),
            Err(WeakPassword::TooLong),
        );
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

    #[test]
    fn hashes_made_by_the_crates_own_verifier_check_and_greedy_ones_are_refused() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // Interoperates with the argon2 crate's own hashing and verifying, both ways.
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"correct horse battery", &salt)
            .unwrap()
            .to_string();
        assert!(verify("correct horse battery", &theirs));
        let ours = hash("correct horse battery").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse battery", &parsed)
            .is_ok());
        // A stored hash that asks for a gigabyte is not worked on.
        let greedy = ours.replace("m=19456", "m=1048576");
        assert!(!verify("correct horse battery", &greedy));
    }
}
