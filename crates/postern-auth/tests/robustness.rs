//! Randomised input into every parser that reads attacker-controlled bytes: none may panic, and a
//! mutated cookie never opens. A cheap stand-in for cargo-fuzz targets that runs in every CI.

mod common;

use common::*;
use postern_auth::idtoken;
use postern_auth::{
    AppId, AppOrigin, Expectations, Jwks, KeyRing, ReturnTo, Session, SessionId, StateCookie,
    UnixTime,
};
use rand::{Rng, SeedableRng};

const ITERATIONS: usize = 20_000;
const ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/\\%:?#@ \t";

/// A fixed seed, so that a failure reproduces run after run.
fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(0x5057_7e52)
}

fn random_text(rng: &mut impl Rng, max: usize) -> String {
    let len = rng.gen_range(0..max);
    if rng.gen_bool(0.5) {
        (0..len)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect()
    } else {
        let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// `s` with one random character replaced, inserted or removed.
fn mutate(rng: &mut impl Rng, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let i = rng.gen_range(0..chars.len());
    let c = ALPHABET[rng.gen_range(0..ALPHABET.len())] as char;
    match rng.gen_range(0..3) {
        0 => chars[i] = c,
        1 => chars.insert(i, c),
        _ => {
            chars.remove(i);
        }
    }
    chars.into_iter().collect()
}

#[test]
fn random_and_mutated_cookies_never_open() {
    let mut rng = rng();
    let ring = KeyRing::generate();
    let app = AppId::new("wiki").unwrap();
    let now = UnixTime::from_secs(NOW);
    let session = Session {
        id: SessionId::generate(),
        app: app.clone(),
        issuer: ISSUER.into(),
        subject: "user-1".into(),
        email: None,
        name: None,
        groups: vec!["staff".into()],
        amr: vec![],
        acr: None,
        auth_time: None,
        issued_at: now,
        expires_at: UnixTime::from_secs(NOW + 60),
    };
    let cookie = session.seal(&ring);
    let state = StateCookie::start(app.clone(), ReturnTo::root(), now).seal(&ring);
    for _ in 0..ITERATIONS {
        let random = random_text(&mut rng, 300);
        assert!(
            Session::open(&ring, &random, &app, now).is_err(),
            "{random:?}"
        );
        assert!(
            StateCookie::open(&ring, &random, &app, now).is_err(),
            "{random:?}"
        );
        let mutated = mutate(&mut rng, &cookie);
        if mutated != cookie {
            assert!(
                Session::open(&ring, &mutated, &app, now).is_err(),
                "{mutated:?}"
            );
        }
        let mutated = mutate(&mut rng, &state);
        if mutated != state {
            assert!(
                StateCookie::open(&ring, &mutated, &app, now).is_err(),
                "{mutated:?}"
            );
        }
    }
}

#[test]
fn random_and_mutated_tokens_never_panic() {
    let mut rng = rng();
    let key = es256("k1");
    let jwks = Jwks::from_json(jwks_json(&[&key]).as_bytes()).unwrap();
    let expect = Expectations::id_token(ISSUER, CLIENT, NONCE);
    let now = UnixTime::from_secs(NOW);
    let valid = mint(&key, &claims());
    // Header-shaped prefixes get past the first checks, so the random tail reaches deeper code.
    let header = b64(r#"{"alg":"ES256","kid":"k1"}"#);
    for i in 0..ITERATIONS {
        let random = random_text(&mut rng, 400);
        let _ = idtoken::verify(&random, &jwks, &expect, now);
        let _ = idtoken::verify(&format!("{header}.{random}"), &jwks, &expect, now);
        let _ = Jwks::from_json(random.as_bytes());
        // Mutations of a valid token need a signature check each; a quarter of them suffices.
        if i % 4 == 0 {
            let _ = idtoken::verify(&mutate(&mut rng, &valid), &jwks, &expect, now);
        }
    }
}

#[test]
fn random_return_targets_stay_on_the_origin() {
    let mut rng = rng();
    let origin = AppOrigin::parse("https://app.example.com").unwrap();
    for _ in 0..ITERATIONS {
        let random = random_text(&mut rng, 60);
        for target in [
            ReturnTo::from_untrusted(&origin, &random),
            ReturnTo::from_request(&origin, &format!("/{random}")),
        ] {
            let location = target.location(&origin);
            assert!(
                location.as_str().starts_with("https://app.example.com/"),
                "{random:?} -> {location}"
            );
        }
    }
}
