//! Fuzz targets for ID tokens and bearer JWTs (`postern_auth::idtoken`): the header, the claims
//! and the whole token, verified against an issuer's JWKS as the edge verifies them.

use postern_auth::idtoken;
use postern_auth::{Expectations, IdTokenClaims, TokenError};
use postern_fuzz::{
    claims_from, corpus_entries, has_duplicate_members, header_from, honest_header, issuer_jwks,
    model_claims, now, sign_raw, token_from, valid_claims, CLIENT, ISSUER, KID, NONCE,
};
use serde_json::{Map, Value};

fn verify(token: &str, nonce: Option<&str>) -> Result<IdTokenClaims, TokenError> {
    let expect = match nonce {
        Some(nonce) => Expectations::id_token(ISSUER, CLIENT, nonce),
        None => Expectations::bearer(ISSUER, CLIENT),
    };
    idtoken::verify(token, issuer_jwks(), &expect, now())
}

/// The genuine tokens of the corpus, signed with the issuer's key (`examples/seeds.rs`).
fn genuine() -> Vec<String> {
    corpus_entries("jwt_token", "genuine-")
        .into_iter()
        .map(|(_, text)| text)
        .collect()
}

#[test]
fn fuzz_jwt_token() {
    let genuine = genuine();
    bolero::check!().for_each(|input: &[u8]| {
        let token = token_from(input, &genuine);
        let result = verify(&token, Some(NONCE));
        // Only what the issuer signed verifies: any change to a genuine token is refused.
        assert_eq!(
            result.is_ok(),
            genuine.contains(&token),
            "{token:?}: {result:?}"
        );
    });
}

#[test]
fn genuine_corpus_tokens_verify() {
    let genuine = genuine();
    assert!(!genuine.is_empty(), "the corpus lost its genuine tokens");
    for token in &genuine {
        let claims = verify(token, Some(NONCE)).expect("a genuine token verifies");
        assert_eq!(claims.issuer, ISSUER);
    }
}

#[test]
fn fuzz_jwt_claims() {
    let header = honest_header();
    bolero::check!().for_each(|input: &[u8]| {
        let payload = claims_from(input);
        let payload = payload.as_slice();
        let token = sign_raw(&header, payload);
        for nonce in [Some(NONCE), None] {
            let got = verify(&token, nonce);
            let expected = model_claims(payload, nonce);
            match (&got, &expected) {
                (Ok(claims), Ok(model)) => {
                    assert_eq!(claims.issuer, ISSUER);
                    assert_eq!(claims.subject, model.subject);
                    assert_eq!(claims.audience, model.audience);
                    assert_eq!(claims.email, model.email);
                    assert_eq!(claims.groups, model.groups);
                    assert_eq!(claims.amr, model.amr);
                    assert_eq!(claims.expires_at.secs(), model.expires_at);
                }
                (Err(_), Err(_)) => {}
                // A claim named twice: refusing is as right as taking the last value.
                (Err(_), Ok(_)) if has_duplicate_members(payload) => {}
                _ => panic!(
                    "verify and the claim rules disagree on {:?} (nonce {nonce:?}): {got:?} vs {expected:?}",
                    String::from_utf8_lossy(payload)
                ),
            }
        }
    });
}

#[test]
fn fuzz_jwt_header() {
    let claims = valid_claims().to_string();
    bolero::check!().for_each(|input: &[u8]| {
        let header = header_from(input);
        let header = header.as_slice();
        let token = sign_raw(header, claims.as_bytes());
        let result = verify(&token, Some(NONCE));
        let parsed: Option<Map<String, Value>> = serde_json::from_slice(header).ok();
        if result.is_ok() {
            // Accepted only with the key's own algorithm, no critical extension, and the key's id.
            let header = parsed.expect("an accepted header is a JSON object");
            assert_eq!(header.get("alg"), Some(&Value::from("ES256")), "{header:?}");
            assert!(!header.contains_key("crit"), "{header:?}");
            assert!(
                matches!(header.get("kid"), None | Some(Value::String(_)))
                    && header.get("kid").is_none_or(|kid| kid == KID),
                "{header:?}"
            );
        } else if let Some(header) = parsed {
            // And a plain honest header is never refused.
            let honest = header.get("alg") == Some(&Value::from("ES256"))
                && header.get("kid").is_none_or(|kid| kid == KID)
                && header.get("typ").is_none_or(Value::is_string)
                && header
                    .keys()
                    .all(|k| ["alg", "kid", "typ"].contains(&k.as_str()));
            assert!(!honest, "{header:?} refused: {result:?}");
        }
    });
}
