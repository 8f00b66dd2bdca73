//! Fuzz targets for every parser that reads bytes an attacker controls, on the stable toolchain.
//!
//! The targets are `bolero::check!()` tests in `tests/`, one file per surface:
//!
//! | target | what it feeds | property |
//! |---|---|---|
//! | `tunnel_meta::fuzz_tunnel_meta_decode` | header lines into [`postern_proto::StreamMeta::decode`], `strip`, `TunnelRefusal::parse` | decoding agrees with a model of the format; what decodes encodes back to itself; `strip` leaves no reserved header and keeps every other one |
//! | `tunnel_meta::fuzz_tunnel_meta_round_trip` | any metadata into `encode`, then `decode` | round trip exactly when the request ID is a valid one, an error otherwise |
//! | `cookies::fuzz_cookie_open` | any string as a session and a state cookie | only the genuine cookies of the corpus open, for their app and purpose only |
//! | `cookies::fuzz_cookie_seal_and_tamper` | any session, then one changed character | it opens as itself (unless expired or too long); changed, it never opens |
//! | `jwt::fuzz_jwt_token` | any string as an ID token | only the genuine tokens of the corpus verify |
//! | `jwt::fuzz_jwt_claims` | any payload, signed with the issuer's key | accepted exactly when a model of the claim rules accepts it, with the same values |
//! | `jwt::fuzz_jwt_header` | any protected header, signed | accepted only with `alg: ES256`, no `crit` and the JWKS's `kid` (or none) |
//! | `base_path::fuzz_base_path` | any request path under several internal base paths | a path that passes never resolves outside the base path, as a server would resolve it |
//!
//! Under `cargo test` each target runs its committed corpus (`tests/__fuzz__/NAME/corpus/`, NAME
//! being the test's name without `fuzz_`: real metadata, cookies, tokens, claims and paths), then
//! random inputs for one second, or as `BOLERO_RANDOM_TEST_TIME_MS` or `BOLERO_RANDOM_ITERATIONS`
//! say. Random bytes are spelled into inputs near the valid ones ([`claims_from`],
//! [`header_from`], [`token_from`], and the spellers in the target files), where the decisions
//! are. A failure prints the input and `BOLERO_RANDOM_SEED=…`, which replays it. A long run:
//! `BOLERO_RANDOM_TEST_TIME_MS=600000 cargo test -p postern-fuzz`.
//!
//! This library holds what the targets share: fixed keys (test keys, used nowhere else), the
//! models the properties compare against, and small helpers.

use std::path::PathBuf;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::DecodePrivateKey as _;
use postern_auth::{AppId, Jwks, KeyRing, UnixTime};
use serde_json::{json, Map, Value};

/// The instant every target runs at: clocks are parameters, so a corpus never goes stale.
pub const NOW: u64 = 1_800_000_000;
/// The issuer the JWT targets expect.
pub const ISSUER: &str = "https://login.example.com/tenant/v2.0";
/// The client (audience) the JWT targets expect.
pub const CLIENT: &str = "wiki-client";
/// The nonce the ID-token targets expect.
pub const NONCE: &str = "n-0S6_WzA2Mj";
/// The `kid` of the issuer's one key.
pub const KID: &str = "fuzz-k1";
/// The app the cookie targets open cookies for.
pub const APP: &str = "wiki";
/// Another app: a cookie of [`APP`] must never open here.
pub const OTHER_APP: &str = "other-app";

/// A fixed cookie key ring. Its secret is public (it is in this file): it seals the corpus's
/// genuine cookies and nothing else.
const COOKIE_RING: &str = r#"{"format":"postern-cookie-keys","version":1,"keys":[{"id":1,"secret":"h68r4RRYznhBz7KYu71zuCHvwDrxaC-f8MaI11Z4Vls"}]}"#;

/// A fixed P-256 key (PKCS#8, base64). Public like the ring: it signs the corpus's genuine tokens.
const ISSUER_KEY_PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgxp4mMBYaGTiaazc1ihqqXQzpGcWjSezI4UJzyMEYdiehRANCAAQ4zr/8/I8RKsFEbUHap2/RohDG8B2sdlSuqpm48450f1mD9X9FynLN2chnZd+VX5gjqX+j0/8tuoTeVG2Hv38A";

/// The fixed cookie key ring.
pub fn cookie_ring() -> KeyRing {
    KeyRing::from_json(COOKIE_RING).expect("the fixed key ring loads")
}

pub fn app() -> AppId {
    AppId::new(APP).expect("a valid app id")
}

pub fn other_app() -> AppId {
    AppId::new(OTHER_APP).expect("a valid app id")
}

pub fn now() -> UnixTime {
    UnixTime::from_secs(NOW)
}

fn issuer_secret() -> p256::SecretKey {
    let der = base64::engine::general_purpose::STANDARD
        .decode(ISSUER_KEY_PKCS8)
        .expect("the fixed key is base64");
    p256::SecretKey::from_pkcs8_der(&der).expect("the fixed key is PKCS#8 P-256")
}

/// The issuer's signing key (parsed once per process: the targets sign on every input).
pub fn issuer_key() -> &'static EncodingKey {
    static KEY: OnceLock<EncodingKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let der = base64::engine::general_purpose::STANDARD
            .decode(ISSUER_KEY_PKCS8)
            .expect("the fixed key is base64");
        EncodingKey::from_ec_der(&der)
    })
}

/// The issuer's JWKS: its one key, as a verifier reads it.
pub fn issuer_jwks() -> &'static Jwks {
    static JWKS: OnceLock<Jwks> = OnceLock::new();
    JWKS.get_or_init(|| {
        let point = issuer_secret().public_key().to_encoded_point(false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            unreachable!("an uncompressed point has both coordinates")
        };
        let doc = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": KID, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]});
        Jwks::from_json(doc.to_string().as_bytes()).expect("the fixed JWKS loads")
    })
}

/// A token whose header and payload are exactly the given bytes, signed ES256 with the issuer's
/// key: what an issuer (or an attacker holding its key) could send.
pub fn sign_raw(header: &[u8], payload: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), issuer_key(), Algorithm::ES256)
        .expect("ES256 signs any message");
    format!("{message}.{signature}")
}

/// Base64url without padding, as JWTs and cookies use it.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The header an honest issuer sends.
pub fn honest_header() -> Vec<u8> {
    json!({"alg": "ES256", "typ": "JWT", "kid": KID})
        .to_string()
        .into_bytes()
}

/// Claims of a valid ID token for [`CLIENT`] at [`NOW`].
pub fn valid_claims() -> Value {
    json!({
        "iss": ISSUER, "aud": CLIENT, "sub": "user-1", "nonce": NONCE,
        "iat": NOW - 10, "exp": NOW + 3600, "email": "ada@example.com", "email_verified": true,
        "groups": ["staff", "wiki-editors"], "amr": ["pwd", "mfa"],
    })
}

/// The most edits a random input makes to a valid value: more would only drift further from the
/// values where the interesting decisions are, at the cost of speed.
pub const MAX_EDITS: usize = 16;

/// Claim names and values random inputs spell payloads from: each valid, near-valid (inside and
/// just outside the leeway) or of a wrong type.
const CLAIM_NAMES: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "nonce",
    "azp",
    "email",
    "email_verified",
    "groups",
    "amr",
    "acr",
    "auth_time",
    "sid",
    "name",
];

fn claim_values() -> Vec<Value> {
    vec![
        json!(ISSUER),
        json!("https://evil.example"),
        json!(CLIENT),
        json!([CLIENT]),
        json!(["api://other", CLIENT]),
        json!([]),
        json!([1]),
        json!(NOW + 3600),
        json!(NOW - 59),
        json!(NOW - 60),
        json!(NOW - 61),
        json!(NOW + 59),
        json!(NOW + 60),
        json!(NOW + 61),
        json!((NOW + 3600).to_string()),
        json!(-1),
        json!(1.8e9),
        json!(1e300),
        json!(NONCE),
        json!("other"),
        Value::Null,
        json!(true),
        json!("true"),
        json!({"a": 1}),
        json!(["staff", "wiki-editors"]),
        json!(""),
    ]
}

/// A claims payload: the input itself when it is a JSON object (the corpus), otherwise the valid
/// claims with one claim replaced per pair of input bytes (name, value), so random inputs explore
/// tokens one or two mistakes away from valid.
pub fn claims_from(input: &[u8]) -> Vec<u8> {
    if serde_json::from_slice::<Map<String, Value>>(input).is_ok() {
        return input.to_vec();
    }
    let values = claim_values();
    let mut claims = valid_claims();
    for pair in input.chunks_exact(2).take(MAX_EDITS) {
        let name = CLAIM_NAMES[usize::from(pair[0]) % CLAIM_NAMES.len()];
        match &values[usize::from(pair[1]) % values.len()] {
            // Absent, rather than null (a null is also tried, through `json!(null)` above).
            Value::String(s) if s.is_empty() => {
                claims.as_object_mut().map(|c| c.remove(name));
            }
            value => claims[name] = value.clone(),
        }
    }
    claims.to_string().into_bytes()
}

/// A protected header: the input itself when it is a JSON object, otherwise the honest header
/// with members set from pairs of input bytes.
pub fn header_from(input: &[u8]) -> Vec<u8> {
    if serde_json::from_slice::<Map<String, Value>>(input).is_ok() {
        return input.to_vec();
    }
    const NAMES: &[&str] = &[
        "alg", "kid", "typ", "crit", "jwk", "jku", "x5u", "x5c", "cty", "b64",
    ];
    let values = [
        json!("ES256"),
        json!("none"),
        json!("HS256"),
        json!("RS256"),
        json!("ES384"),
        json!("EdDSA"),
        json!(KID),
        json!("other-kid"),
        json!("JWT"),
        json!(["exp"]),
        json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
        json!("https://evil.example/jwks"),
        json!(1),
        Value::Null,
        json!(false),
    ];
    let mut header: Value = serde_json::from_slice(&honest_header()).expect("a JSON header");
    for pair in input.chunks_exact(2).take(MAX_EDITS) {
        header[NAMES[usize::from(pair[0]) % NAMES.len()]] =
            values[usize::from(pair[1]) % values.len()].clone();
    }
    header.to_string().into_bytes()
}

/// A token: the input itself when it is text with a dot (the corpus), otherwise one of `genuine`
/// with characters replaced, inserted or removed at positions the input picks.
pub fn token_from(input: &[u8], genuine: &[String]) -> String {
    match std::str::from_utf8(input) {
        Ok(token) if token.contains('.') || genuine.is_empty() => return token.to_owned(),
        _ => {}
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/";
    let Some((&pick, edits)) = input.split_first() else {
        return String::new();
    };
    let mut token = genuine[usize::from(pick) % genuine.len()]
        .clone()
        .into_bytes();
    for edit in edits.chunks_exact(3).take(MAX_EDITS) {
        if token.is_empty() {
            break;
        }
        let at = (usize::from(edit[0]) << 8 | usize::from(edit[1])) % token.len();
        let c = ALPHABET[usize::from(edit[2]) % ALPHABET.len()];
        match edit[2] % 3 {
            0 => token[at] = c,
            1 => token.insert(at, c),
            _ => {
                token.remove(at);
            }
        }
    }
    String::from_utf8(token).expect("edits keep the token ASCII")
}

/// The committed corpus directory of a target (`tests/__fuzz__/NAME/corpus`).
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/__fuzz__")
        .join(target)
        .join("corpus")
}

/// The corpus files of `target` whose names start with `prefix`, as text, with their names.
pub fn corpus_entries(target: &str, prefix: &str) -> Vec<(String, String)> {
    let dir = corpus_dir(target);
    let mut entries: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the corpus {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_owned();
            if !name.starts_with(prefix) {
                return None;
            }
            let text = std::fs::read_to_string(entry.path()).ok()?;
            Some((name, text))
        })
        .collect();
    entries.sort();
    entries
}

/// How a server resolves a request path, for the base-path property: percent-encoded dots,
/// slashes and backslashes decoded, backslashes taken as slashes, each segment's `;` path
/// parameters dropped (Tomcat and Jetty read `/..;x/` as `/../`), then the dot segments removed
/// (RFC 3986, section 5.2.4). The query is not part of the path.
pub fn resolve_like_a_server(path_and_query: &str) -> String {
    let path = path_and_query.split('?').next().unwrap_or("");
    let mut decoded = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(c) = rest.chars().next() {
        let escape = rest.get(..3).map(str::to_ascii_lowercase);
        match escape.as_deref() {
            Some("%2e") => {
                decoded.push('.');
                rest = &rest[3..];
                continue;
            }
            Some("%2f") | Some("%5c") => {
                decoded.push('/');
                rest = &rest[3..];
                continue;
            }
            _ => {}
        }
        decoded.push(if c == '\\' { '/' } else { c });
        rest = &rest[c.len_utf8()..];
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        let segment = segment.split(';').next().unwrap_or_default();
        match segment {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Whether `resolved` is `base` or below it (`base` without a trailing slash; "" is the root).
pub fn within(base: &str, resolved: &str) -> bool {
    base.is_empty()
        || resolved == base
        || resolved
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A model of the claim rules of `postern_auth::idtoken::verify` (OpenID Connect Core §3.1.3.7),
/// written from the rules, not from the code: `Ok` with the values it reads, or `Err` with the
/// rule that refuses. `nonce` is `Some` for an ID token, `None` for a bearer access token.
pub fn model_claims(payload: &[u8], nonce: Option<&str>) -> Result<ModelClaims, &'static str> {
    const LEEWAY: u64 = 60;
    let raw: Map<String, Value> =
        serde_json::from_slice(payload).map_err(|_| "not a JSON object")?;
    let present = |k: &str| raw.get(k).filter(|v| !v.is_null());
    let string = |k: &str| match present(k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err("a string claim of another type"),
    };
    let list = |k: &str| match present(k) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or("a list with a non-string")
            })
            .collect(),
        Some(_) => Err("a list claim of another type"),
    };
    let date = |k: &str| match present(k) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Ok(Some(u)),
            (None, Some(f)) if f.is_finite() && f >= 0.0 => Ok(Some(f.floor() as u64)),
            _ => Err("a negative date"),
        },
        Some(_) => Err("a date that is not a number"),
    };
    let boolean = |k: &str| match present(k) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(_) => Err("a boolean of another type"),
    };
    let iss = string("iss")?.ok_or("no iss")?;
    let sub = string("sub")?.ok_or("no sub")?;
    let aud = list("aud")?;
    if aud.is_empty() {
        return Err("no aud");
    }
    let azp = string("azp")?;
    let email = string("email")?;
    boolean("email_verified")?;
    string("name")?;
    let groups = list("groups")?;
    let amr = list("amr")?;
    string("acr")?;
    date("auth_time")?;
    let exp = date("exp")?.ok_or("no exp")?;
    let iat = date("iat")?;
    let nbf = date("nbf")?;
    string("sid")?;
    let token_nonce = string("nonce")?;
    if iss != ISSUER {
        return Err("another issuer");
    }
    if !aud.iter().any(|a| a == CLIENT) {
        return Err("another audience");
    }
    if let Some(azp) = &azp {
        if (nonce.is_some() || aud.len() > 1) && azp != CLIENT {
            return Err("another authorized party");
        }
    }
    if NOW >= exp.saturating_add(LEEWAY) {
        return Err("expired");
    }
    if nbf.is_some_and(|nbf| NOW.saturating_add(LEEWAY) < nbf) {
        return Err("not yet valid");
    }
    match iat {
        Some(iat) if iat > NOW.saturating_add(LEEWAY) => return Err("issued in the future"),
        None if nonce.is_some() => return Err("an ID token without iat"),
        _ => {}
    }
    if let Some(expected) = nonce {
        if token_nonce.as_deref() != Some(expected) {
            return Err("another nonce");
        }
    }
    Ok(ModelClaims {
        subject: sub,
        audience: aud,
        email,
        groups,
        amr,
        expires_at: exp,
    })
}

/// Whether a JSON object names a member twice. RFC 7519 (section 4) lets a parser either refuse
/// such a token or take the last value; a model that takes the last one is then right only when
/// the code does not refuse.
pub fn has_duplicate_members(payload: &[u8]) -> bool {
    struct Names(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Names {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Names;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Names, A::Error> {
                    let mut names = Vec::new();
                    while let Some((name, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        names.push(name);
                    }
                    Ok(Names(names))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    let Ok(Names(mut names)) = serde_json::from_slice::<Names>(payload) else {
        return false;
    };
    let count = names.len();
    names.sort();
    names.dedup();
    names.len() != count
}

/// What [`model_claims`] reads from an accepted payload.
#[derive(Debug, PartialEq, Eq)]
pub struct ModelClaims {
    pub subject: String,
    pub audience: Vec<String>,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub amr: Vec<String>,
    pub expires_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_model_resolves_like_rfc_3986() {
        for (path, resolved) in [
            ("/a/b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/./b/", "/a/b/"),
            ("/a/..", "/"),
            ("/../../x", "/x"),
            ("/a/%2e%2E/x?q=/../..", "/x"),
            ("/a/..%2fx", "/x"),
            ("/a\\..\\x", "/x"),
            ("/a/%5c..%5cx", "/a/x"),
            ("/a/%252e%252e/x", "/a/%252e%252e/x"),
            ("/a/.b/..c", "/a/.b/..c"),
        ] {
            assert_eq!(resolve_like_a_server(path), resolved, "{path}");
        }
        assert!(within("/app", "/app"));
        assert!(within("/app", "/app/x"));
        assert!(!within("/app", "/application"));
        assert!(!within("/app", "/"));
        assert!(within("", "/anything"));
    }

    #[test]
    fn the_claims_model_accepts_a_valid_token_and_names_what_it_refuses() {
        let valid = valid_claims();
        assert!(model_claims(valid.to_string().as_bytes(), Some(NONCE)).is_ok());
        for (patch, reason) in [
            (json!({"iss": "https://evil"}), "another issuer"),
            (json!({"exp": "4102444800"}), "a date that is not a number"),
            (json!({"exp": NOW - 61}), "expired"),
            (json!({"aud": []}), "no aud"),
            (json!({"nonce": "x"}), "another nonce"),
        ] {
            let mut claims = valid.clone();
            for (k, v) in patch.as_object().into_iter().flatten() {
                claims[k] = v.clone();
            }
            assert_eq!(
                model_claims(claims.to_string().as_bytes(), Some(NONCE)),
                Err(reason),
                "{patch}"
            );
        }
    }
}
