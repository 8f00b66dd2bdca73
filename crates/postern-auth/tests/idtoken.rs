//! ID token verification against real signatures: valid tokens of each key type, and a table of
//! attacks, each refused with its own error.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use postern_auth::idtoken::{self, MAX_TOKEN_LEN};
use postern_auth::{Expectations, IdTokenClaims, Jwks, TokenError, UnixTime};
use serde_json::json;

struct Fixture {
    ec: TestKey,
    rsa: TestKey,
    ed: TestKey,
    jwks: Jwks,
}

fn fixture() -> Fixture {
    let ec = es256("ec-1");
    let rsa = rsa("rsa-1", Algorithm::RS256);
    let ed = ed25519("ed-1");
    let jwks = Jwks::from_json(jwks_json(&[&ec, &rsa, &ed]).as_bytes()).unwrap();
    Fixture { ec, rsa, ed, jwks }
}

fn verify(f: &Fixture, token: &str) -> Result<IdTokenClaims, TokenError> {
    idtoken::verify(
        token,
        &f.jwks,
        &Expectations::id_token(ISSUER, CLIENT, NONCE),
        UnixTime::from_secs(NOW),
    )
}

#[test]
fn valid_tokens_of_every_key_type() {
    let f = fixture();
    let pss = rsa("rsa-1", Algorithm::PS256);
    for (name, token) in [
        ("ES256", mint(&f.ec, &claims())),
        ("RS256", mint(&f.rsa, &claims())),
        ("PS256 on the RSA key", mint(&pss, &claims())),
        ("EdDSA", mint(&f.ed, &claims())),
        (
            "expired within the leeway",
            mint(&f.ec, &claims_with(json!({"exp": NOW - 30}))),
        ),
        (
            "several audiences, azp is us",
            mint(
                &f.ec,
                &claims_with(json!({"aud": ["api", CLIENT], "azp": CLIENT})),
            ),
        ),
    ] {
        let claims = verify(&f, &token).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(claims.subject, "user-1", "{name}");
        assert_eq!(claims.groups, ["staff", "wiki-editors"], "{name}");
        assert_eq!(claims.amr, ["pwd", "mfa"], "{name}");
        assert_eq!(claims.raw["email"], "u1@example.com", "{name}");
    }
}

#[test]
fn a_token_without_kid_uses_the_only_key_of_its_type() {
    let ec = es256("ec-1");
    let jwks =
        Jwks::from_json(jwks_json(&[&ec, &rsa("rsa-1", Algorithm::RS256)]).as_bytes()).unwrap();
    let token = mint_as(&ec, Algorithm::ES256, None, &claims());
    let expect = Expectations::id_token(ISSUER, CLIENT, NONCE);
    assert!(idtoken::verify(&token, &jwks, &expect, UnixTime::from_secs(NOW)).is_ok());
}

#[test]
fn bearer_tokens_need_no_nonce_and_may_name_another_azp() {
    let f = fixture();
    let token = mint(
        &f.ec,
        &claims_with(json!({"nonce": null, "iat": null, "azp": "cli-app", "aud": "wiki-api"})),
    );
    let expect = Expectations::bearer(ISSUER, "wiki-api");
    let claims = idtoken::verify(&token, &f.jwks, &expect, UnixTime::from_secs(NOW)).unwrap();
    assert_eq!(claims.authorized_party.as_deref(), Some("cli-app"));
}

#[test]
fn attacks_are_refused_each_with_its_own_error() {
    let f = fixture();
    let now = UnixTime::from_secs(NOW);
    let valid = mint(&f.ec, &claims());
    let [header, _, signature] =
        <[&str; 3]>::try_from(valid.split('.').collect::<Vec<_>>()).unwrap();
    let ec_header = json!({"alg": "ES256", "kid": "ec-1", "typ": "JWT"});
    let impostor = es256("ec-1");
    let confusion = |secret: &[u8]| {
        let key = TestKey {
            kid: "ec-1".into(),
            alg: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
            jwk: json!({}),
            public_bytes: vec![],
        };
        mint(&key, &claims())
    };
    let malformed = |reason: &str| TokenError::Malformed {
        reason: reason.to_owned(),
    };
    let not_allowed = |alg: &str| TokenError::AlgorithmNotAllowed {
        alg: alg.to_owned(),
    };

    let cases: Vec<(&str, String, TokenError)> = vec![
        (
            "alg none, unsigned",
            raw_token(&json!({"alg": "none", "kid": "ec-1"}), &claims(), b""),
            not_allowed("none"),
        ),
        (
            "alg None, unsigned",
            raw_token(&json!({"alg": "None"}), &claims(), b""),
            not_allowed("None"),
        ),
        (
            "HS256 keyed with the issuer's EC public key (key confusion)",
            confusion(&f.ec.public_bytes),
            not_allowed("HS256"),
        ),
        (
            "HS256 keyed with the issuer's RSA public key (key confusion)",
            confusion(&f.rsa.public_bytes),
            not_allowed("HS256"),
        ),
        (
            "HS512 keyed with the JWK text",
            raw_token(&json!({"alg": "HS512", "kid": "ec-1"}), &claims(), b"x"),
            not_allowed("HS512"),
        ),
        (
            "ES512, which no key here allows",
            raw_token(&json!({"alg": "ES512", "kid": "ec-1"}), &claims(), b"x"),
            not_allowed("ES512"),
        ),
        (
            "wrong issuer",
            mint(&f.ec, &claims_with(json!({"iss": "https://evil.example"}))),
            TokenError::WrongIssuer {
                expected: ISSUER.into(),
                found: "https://evil.example".into(),
            },
        ),
        (
            "issuer differing only by a trailing slash",
            mint(&f.ec, &claims_with(json!({"iss": format!("{ISSUER}/")}))),
            TokenError::WrongIssuer {
                expected: ISSUER.into(),
                found: format!("{ISSUER}/"),
            },
        ),
        (
            "a token for another app",
            mint(&f.ec, &claims_with(json!({"aud": "chat-client"}))),
            TokenError::WrongAudience {
                expected: CLIENT.into(),
                found: vec!["chat-client".into()],
            },
        ),
        (
            "several audiences, azp names another client",
            mint(
                &f.ec,
                &claims_with(json!({"aud": [CLIENT, "chat-client"], "azp": "chat-client"})),
            ),
            TokenError::WrongAuthorizedParty {
                expected: CLIENT.into(),
                found: "chat-client".into(),
            },
        ),
        (
            "expired beyond the leeway",
            mint(&f.ec, &claims_with(json!({"exp": NOW - 61}))),
            TokenError::Expired {
                exp: UnixTime::from_secs(NOW - 61),
                now,
            },
        ),
        (
            "exp as a string (type confusion)",
            mint(&f.ec, &claims_with(json!({"exp": "99999999999"}))),
            TokenError::InvalidClaim {
                claim: "exp",
                reason: "expected a non-negative number of seconds since the epoch",
            },
        ),
        (
            "no exp",
            mint(&f.ec, &claims_with(json!({"exp": null}))),
            TokenError::MissingClaim { claim: "exp" },
        ),
        (
            "not yet valid (nbf)",
            mint(&f.ec, &claims_with(json!({"nbf": NOW + 120}))),
            TokenError::NotYetValid {
                nbf: UnixTime::from_secs(NOW + 120),
                now,
            },
        ),
        (
            "nbf as a string (type confusion)",
            mint(&f.ec, &claims_with(json!({"nbf": "99999999999"}))),
            TokenError::InvalidClaim {
                claim: "nbf",
                reason: "expected a non-negative number of seconds since the epoch",
            },
        ),
        (
            "issued in the future",
            mint(&f.ec, &claims_with(json!({"iat": NOW + 120}))),
            TokenError::IssuedInFuture {
                iat: UnixTime::from_secs(NOW + 120),
                now,
            },
        ),
        (
            "missing nonce",
            mint(&f.ec, &claims_with(json!({"nonce": null}))),
            TokenError::MissingNonce,
        ),
        (
            "wrong nonce (replayed token)",
            mint(&f.ec, &claims_with(json!({"nonce": "other"}))),
            TokenError::WrongNonce,
        ),
        (
            "unknown kid",
            mint_as(&f.ec, Algorithm::ES256, Some("rotated-2"), &claims()),
            TokenError::UnknownKey {
                kid: "rotated-2".into(),
            },
        ),
        (
            "ES256 signature with r = s = 0",
            raw_token(&ec_header, &claims(), &[0u8; 64]),
            TokenError::BadSignature {
                kid: Some("ec-1".into()),
            },
        ),
        (
            "signed by a key not in the JWKS, under the same kid",
            mint(&impostor, &claims()),
            TokenError::BadSignature {
                kid: Some("ec-1".into()),
            },
        ),
        (
            "payload swapped after signing",
            format!(
                "{header}.{}.{signature}",
                b64(claims_with(json!({"sub": "admin"})).to_string())
            ),
            TokenError::BadSignature {
                kid: Some("ec-1".into()),
            },
        ),
        (
            "RS256 token presented against the EC key",
            mint_as(&f.rsa, Algorithm::RS256, Some("ec-1"), &claims()),
            TokenError::AlgorithmMismatch {
                alg: "RS256".into(),
                kid: "ec-1".into(),
                key: "an EC P-256 key",
                allowed: "ES256".into(),
            },
        ),
        (
            "ES256 header naming the RSA key",
            raw_token(
                &json!({"alg": "ES256", "kid": "rsa-1"}),
                &claims(),
                &[1; 64],
            ),
            TokenError::AlgorithmMismatch {
                alg: "ES256".into(),
                kid: "rsa-1".into(),
                key: "an RSA key",
                allowed: "RS256, RS384, RS512, PS256, PS384, PS512".into(),
            },
        ),
        (
            "EdDSA header naming the EC key",
            mint_as(&f.ed, Algorithm::EdDSA, Some("ec-1"), &claims()),
            TokenError::AlgorithmMismatch {
                alg: "EdDSA".into(),
                kid: "ec-1".into(),
                key: "an EC P-256 key",
                allowed: "ES256".into(),
            },
        ),
        (
            "critical header extension",
            raw_token(
                &json!({"alg": "ES256", "kid": "ec-1", "crit": ["b64"], "b64": false}),
                &claims(),
                &[1; 64],
            ),
            TokenError::CriticalHeader {
                names: vec!["b64".into()],
            },
        ),
        (
            "two parts",
            format!("{header}.{signature}"),
            malformed("expected three dot-separated parts, found 2"),
        ),
        (
            "four parts",
            format!("{valid}.x"),
            malformed("expected three dot-separated parts, found 4"),
        ),
        (
            "an encrypted token (JWE)",
            "a.b.c.d.e".to_owned(),
            malformed("encrypted tokens (JWE) are not supported"),
        ),
        (
            "header not base64url",
            format!("{}.e30.AA", "*$!"),
            malformed("header is not base64url"),
        ),
        (
            "header not JSON",
            format!("{}.e30.AA", b64("nope")),
            malformed("header is not a JSON object"),
        ),
        (
            "header without alg",
            raw_token(&json!({"kid": "ec-1"}), &claims(), b""),
            malformed("header has no \"alg\" string"),
        ),
        (
            "kid that is not a string",
            raw_token(&json!({"alg": "ES256", "kid": 7}), &claims(), b""),
            malformed("header \"kid\" is not a string"),
        ),
        (
            "no kid, signed by a key not in the JWKS",
            mint_as(&impostor, Algorithm::ES256, None, &claims()),
            TokenError::BadSignature {
                kid: Some("ec-1".into()),
            },
        ),
        (
            "too long",
            "a".repeat(MAX_TOKEN_LEN + 1),
            TokenError::TooLong {
                len: MAX_TOKEN_LEN + 1,
                max: MAX_TOKEN_LEN,
            },
        ),
    ];
    let mut failures = Vec::new();
    for (name, token, expected) in cases {
        match verify(&f, &token) {
            Err(got) if got == expected => {}
            other => failures.push(format!("{name}: expected {expected:?}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_unnamed_token_is_refused_when_several_keys_fit() {
    let (a, b) = (es256("a"), es256("b"));
    let jwks = Jwks::from_json(jwks_json(&[&a, &b]).as_bytes()).unwrap();
    let token = mint_as(&a, Algorithm::ES256, None, &claims());
    let expect = Expectations::id_token(ISSUER, CLIENT, NONCE);
    assert_eq!(
        idtoken::verify(&token, &jwks, &expect, UnixTime::from_secs(NOW)).unwrap_err(),
        TokenError::NoKeyForUnnamedToken {
            alg: "ES256".into(),
            candidates: 2
        }
    );
}

#[test]
fn error_messages_name_the_problem() {
    let err = TokenError::WrongAudience {
        expected: CLIENT.into(),
        found: vec!["chat-client".into()],
    };
    assert_eq!(
        err.to_string(),
        "token was issued for audience [\"chat-client\"], not this app's client id \"wiki-client\""
    );
    assert!(TokenError::UnknownKey { kid: "k".into() }.may_be_cured_by_jwks_refresh());
    assert!(!TokenError::WrongNonce.may_be_cured_by_jwks_refresh());
}
