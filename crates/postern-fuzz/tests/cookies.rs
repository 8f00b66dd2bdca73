//! Fuzz targets for the session and state cookies (`postern_auth::session`, `state_cookie`), opened
//! through the key ring as the edge opens every cookie a browser sends.

use postern_auth::keyring::MAX_COOKIE_VALUE_LEN;
use postern_auth::{AppOrigin, CookieError, ReturnTo, Session, SessionId, StateCookie, UnixTime};
use postern_fuzz::{app, cookie_ring, corpus_entries, now, other_app};

/// The genuine cookies of the corpus, sealed with the fixed ring (`examples/seeds.rs`).
fn genuine(kind: &str) -> Vec<String> {
    corpus_entries("cookie_open", &format!("genuine-{kind}-"))
        .into_iter()
        .map(|(_, text)| text)
        .collect()
}

#[test]
fn fuzz_cookie_open() {
    let ring = cookie_ring();
    let (app, other) = (app(), other_app());
    let sessions = genuine("session");
    let states = genuine("state");
    let others = genuine("other-session");
    bolero::check!().for_each(|input: &[u8]| {
        let value = String::from_utf8_lossy(input);
        let session = Session::open(&ring, &value, &app, now());
        let state = StateCookie::open(&ring, &value, &app, now());
        // Opening is authentication: only what the ring sealed opens, and nothing else.
        assert_eq!(
            session.is_ok(),
            sessions.contains(&value.to_string()),
            "{value:?}: {session:?}"
        );
        assert_eq!(
            state.is_ok(),
            states.contains(&value.to_string()),
            "{value:?}: {state:?}"
        );
        // Bound to the app it was sealed for: another app opens only its own.
        assert_eq!(
            Session::open(&ring, &value, &other, now()).is_ok(),
            others.contains(&value.to_string()),
            "{value:?}"
        );
        assert!(StateCookie::open(&ring, &value, &other, now()).is_err());
        if let Ok(session) = session {
            // Re-sealed, the session opens as itself (a new nonce, the same content).
            let again = Session::open(&ring, &session.seal(&ring), &app, now());
            assert_eq!(again.as_ref(), Ok(&session));
        }
    });
}

#[test]
fn genuine_corpus_cookies_open() {
    // Without genuine cookies `fuzz_cookie_open` would only ever see refusals, and prove little.
    let ring = cookie_ring();
    let (sessions, states) = (genuine("session"), genuine("state"));
    let others = genuine("other-session");
    assert!(
        !sessions.is_empty() && !states.is_empty() && !others.is_empty(),
        "the corpus lost its genuine cookies"
    );
    for value in &others {
        Session::open(&ring, value, &other_app(), now()).expect("opens on its own app");
        assert!(
            Session::open(&ring, value, &app(), now()).is_err(),
            "another app's session never opens here"
        );
    }
    for value in &sessions {
        let session = Session::open(&ring, value, &app(), now()).expect("a genuine session opens");
        assert_eq!(session.issuer, postern_fuzz::ISSUER);
        assert!(
            StateCookie::open(&ring, value, &app(), now()).is_err(),
            "a session is no state"
        );
    }
    for value in &states {
        StateCookie::open(&ring, value, &app(), now()).expect("a genuine state cookie opens");
        assert!(
            Session::open(&ring, value, &app(), now()).is_err(),
            "a state is no session"
        );
    }
}

type SessionInput = (
    (String, String, Option<String>, Option<String>),
    (Vec<String>, Vec<String>, Option<String>, Option<u32>),
    (u32, u32),
    (u16, char, String),
);

#[test]
fn fuzz_cookie_seal_and_tamper() {
    let ring = cookie_ring();
    let origin = AppOrigin::parse("https://wiki.example.com").expect("a valid origin");
    bolero::check!()
        .with_max_len(1024)
        .with_type::<SessionInput>()
        .for_each(
            |(
                (issuer, subject, email, name),
                (groups, amr, acr, auth_time),
                (issued, lifetime),
                (at, replacement, target),
            )| {
                let session = Session {
                    id: SessionId::generate(),
                    app: app(),
                    issuer: issuer.clone(),
                    subject: subject.clone(),
                    email: email.clone(),
                    name: name.clone(),
                    groups: groups.clone(),
                    amr: amr.clone(),
                    acr: acr.clone(),
                    auth_time: auth_time.map(|t| UnixTime::from_secs(u64::from(t))),
                    issued_at: UnixTime::from_secs(u64::from(*issued)),
                    expires_at: UnixTime::from_secs(
                        postern_fuzz::NOW - 1_000_000 + u64::from(*lifetime),
                    ),
                };
                let sealed = session.seal(&ring);
                let opened = Session::open(&ring, &sealed, &app(), now());
                if sealed.len() > MAX_COOKIE_VALUE_LEN {
                    assert!(
                        matches!(opened, Err(CookieError::Malformed { .. })),
                        "{opened:?}"
                    );
                } else if session.expires_at <= now() {
                    assert!(
                        matches!(opened, Err(CookieError::Expired { .. })),
                        "{opened:?}"
                    );
                } else {
                    assert_eq!(opened.as_ref(), Ok(&session));
                }
                // Never on another app.
                assert!(Session::open(&ring, &sealed, &other_app(), now()).is_err());
                // One character changed: never opens, whatever it became.
                let mut chars: Vec<char> = sealed.chars().collect();
                let i = usize::from(*at) % chars.len();
                chars[i] = *replacement;
                let tampered: String = chars.into_iter().collect();
                if tampered != sealed {
                    let result = Session::open(&ring, &tampered, &app(), now());
                    assert!(result.is_err(), "{tampered:?} opened: {result:?}");
                }
                // A state cookie for any return target round-trips, and never opens as a session.
                let state =
                    StateCookie::start(app(), ReturnTo::from_untrusted(&origin, target), now());
                let sealed = state.seal(&ring);
                assert_eq!(
                    StateCookie::open(&ring, &sealed, &app(), now()).as_ref(),
                    Ok(&state)
                );
                assert!(Session::open(&ring, &sealed, &app(), now()).is_err());
            },
        );
}
