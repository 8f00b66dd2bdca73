//! Writes the genuine seeds of the corpora: cookies sealed with the fixed key ring and tokens
//! signed with the fixed issuer key, each as one corpus file. The targets accept exactly these as
//! authentic, so run this after changing a fixture or a wire format, and commit the result:
//!
//! ```sh
//! cargo run -p postern-fuzz --example seeds
//! ```

use postern_auth::{AppOrigin, ReturnTo, Session, SessionId, StateCookie, UnixTime};
use postern_fuzz::{
    app, cookie_ring, corpus_dir, honest_header, now, sign_raw, valid_claims, ISSUER, NOW,
};
use serde_json::json;

fn write(target: &str, name: &str, value: &str) {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    std::fs::write(dir.join(name), value).expect("write a seed");
}

fn main() {
    let ring = cookie_ring();
    let session = |groups: Vec<String>, email: Option<&str>| Session {
        id: SessionId::generate(),
        app: app(),
        issuer: ISSUER.to_owned(),
        subject: "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ".to_owned(),
        email: email.map(str::to_owned),
        name: Some("Ada Lovelace".to_owned()),
        groups,
        amr: vec!["pwd".to_owned(), "mfa".to_owned()],
        acr: Some("mfa".to_owned()),
        auth_time: Some(now()),
        issued_at: now(),
        expires_at: UnixTime::from_secs(NOW + 8 * 3600),
    };
    let uuid_groups = (0..20)
        .map(|i| format!("{i:08x}-6c67-4c5b-b112-36a304b66dad"))
        .collect();
    let genuine_session = session(vec!["staff".to_owned()], Some("ada@example.com")).seal(&ring);
    write("cookie_open", "genuine-session-1", &genuine_session);
    write(
        "cookie_open",
        "genuine-session-2",
        &session(uuid_groups, None).seal(&ring),
    );
    // Near misses: each is one step from a genuine cookie, and none may open.
    let mut last_changed = genuine_session.clone();
    let last = last_changed
        .pop()
        .map_or('A', |c| if c == 'A' { 'B' } else { 'A' });
    last_changed.push(last);
    write("cookie_open", "tampered-last-character", &last_changed);
    write(
        "cookie_open",
        "tampered-truncated",
        &genuine_session[..genuine_session.len() - 1],
    );
    let mut elsewhere = session(vec![], None);
    elsewhere.app = postern_fuzz::other_app();
    write(
        "cookie_open",
        "genuine-other-session-1",
        &elsewhere.seal(&ring),
    );
    let origin = AppOrigin::parse("https://wiki.example.com").expect("a valid origin");
    for (i, target) in ["/", "/pages/Home?action=edit"].iter().enumerate() {
        let state = StateCookie::start(app(), ReturnTo::from_request(&origin, target), now());
        write(
            "cookie_open",
            &format!("genuine-state-{}", i + 1),
            &state.seal(&ring),
        );
    }

    let header = honest_header();
    write(
        "jwt_token",
        "genuine-id-token",
        &sign_raw(&header, valid_claims().to_string().as_bytes()),
    );
    let token = sign_raw(&header, valid_claims().to_string().as_bytes());
    let (signed, signature) = token.rsplit_once('.').expect("a JWS has three parts");
    write("jwt_token", "tampered-no-signature", &format!("{signed}."));
    let payload = signed.split('.').nth(1).expect("a JWS has three parts");
    let none = postern_fuzz::b64(r#"{"alg":"none"}"#);
    write(
        "jwt_token",
        "tampered-alg-none",
        &format!("{none}.{payload}."),
    );
    let other = sign_raw(&header, br#"{"iss":"x"}"#);
    let (other_signed, _) = other.rsplit_once('.').expect("a JWS has three parts");
    write(
        "jwt_token",
        "tampered-signature-of-another-token",
        &format!("{other_signed}.{signature}"),
    );
    write(
        "jwt_token",
        "encrypted-five-parts",
        &format!("{signed}.{signature}.AAAA.BBBB"),
    );
    let mut many_groups = valid_claims();
    many_groups["groups"] = json!((0..200)
        .map(|i| format!("{i:08x}-6c67-4c5b-b112-36a304b66dad"))
        .collect::<Vec<_>>());
    many_groups["aud"] = json!([CLIENT_ALT, postern_fuzz::CLIENT]);
    many_groups["azp"] = json!(postern_fuzz::CLIENT);
    write(
        "jwt_token",
        "genuine-id-token-200-groups",
        &sign_raw(&header, many_groups.to_string().as_bytes()),
    );
}

/// A second audience, as multi-audience issuers send.
const CLIENT_ALT: &str = "api://wiki";
