//! The per-request costs of pre-authentication: opening the session cookie (target: at most 5 µs
//! of CPU), and, for information, sealing one, verifying an ES256 ID token and signing the
//! assertion.
//!
//! Figures are the benchmark thread's CPU time, not wall time: the target is a CPU budget, and
//! on a shared two-core machine wall time mostly measures the neighbours.

use std::hint::black_box;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cpu_time::ThreadTime;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::EncodePrivateKey as _;
use postern_auth::idtoken;
use postern_auth::{
    AppId, AppOrigin, AssertionSigner, Expectations, Jwks, KeyRing, Session, SessionId, UnixTime,
};
use serde_json::json;

const NOW: UnixTime = UnixTime::from_secs(1_700_000_000);

/// Criterion measurement: CPU time of the benchmarking thread.
struct ThreadCpu;

impl Measurement for ThreadCpu {
    type Intermediate = ThreadTime;
    type Value = Duration;

    fn start(&self) -> ThreadTime {
        ThreadTime::now()
    }
    fn end(&self, started: ThreadTime) -> Duration {
        started.elapsed()
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Formats nanoseconds of CPU time with a readable unit.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match typical_ns {
            t if t < 1e3 => (1.0, "ns cpu"),
            t if t < 1e6 => (1e-3, "µs cpu"),
            t if t < 1e9 => (1e-6, "ms cpu"),
            _ => (1e-9, "s cpu"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    // These benches set no throughput; the values are left as nanoseconds.
    fn scale_throughputs(&self, _: f64, _: &Throughput, _: &mut [f64]) -> &'static str {
        "ns cpu"
    }
    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns cpu"
    }
}

/// A realistic user: an Entra-style issuer and subject, email, name, MFA, ten groups of which
/// half are object ids and half names.
fn session() -> Session {
    let mut groups: Vec<String> = (0..5)
        .map(|i| format!("{i:08x}-6c67-4c5b-b112-36a304b66dad"))
        .collect();
    groups.extend((0..5).map(|i| format!("engineering-team-{i}")));
    Session {
        id: SessionId::generate(),
        app: AppId::new("0b9a3c1e-wiki").unwrap(),
        issuer: "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0"
            .into(),
        subject: "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ".into(),
        email: Some("alexandra.pemberton@contoso.example".into()),
        name: Some("Alexandra Pemberton".into()),
        groups,
        amr: vec!["pwd".into(), "mfa".into()],
        acr: None,
        auth_time: Some(NOW),
        issued_at: NOW,
        expires_at: NOW.saturating_add(Duration::from_secs(8 * 3600)),
    }
}

fn cookies(c: &mut Criterion<ThreadCpu>) {
    let mut ring = KeyRing::generate();
    // A ring mid-rotation: the cookie's key is not the first one looked at.
    let session = session();
    let cookie = session.seal(&ring);
    ring.rotate().unwrap();
    let app = session.app.clone();
    c.bench_function("session_open_10_groups", |b| {
        b.iter(|| Session::open(&ring, black_box(&cookie), &app, NOW).unwrap())
    });
    c.bench_function("session_seal_10_groups", |b| {
        b.iter(|| black_box(&session).seal(&ring))
    });
}

fn tokens(c: &mut Criterion<ThreadCpu>) {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let point = secret.public_key().to_encoded_point(false);
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let jwks = Jwks::from_json(
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())}]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let claims = json!({"iss": "https://login.example.com", "aud": "wiki", "sub": "u1",
        "nonce": "n", "iat": NOW.secs(), "exp": NOW.secs() + 3600,
        "groups": ["a", "b", "c"], "email": "u1@example.com"});
    let key = EncodingKey::from_ec_der(secret.to_pkcs8_der().unwrap().as_bytes());
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let expect = Expectations::id_token("https://login.example.com", "wiki", "n");
    c.bench_function("id_token_verify_es256", |b| {
        b.iter(|| idtoken::verify(black_box(&token), &jwks, &expect, NOW).unwrap())
    });

    let signer = AssertionSigner::generate();
    let origin = AppOrigin::parse("https://wiki.example.com").unwrap();
    let session = session();
    c.bench_function("assertion_sign_es256", |b| {
        b.iter(|| {
            signer
                .sign(
                    "https://edge.example.com",
                    &origin,
                    black_box(&session),
                    NOW,
                )
                .unwrap()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = cookies, tokens
}
criterion_main!(benches);
