//! Identity protection's records: detections are bounded (one per kind, user and hour; pruned
//! after 90 days), the administrator's decisions change what stands, and a confirmed
//! compromise ends every session.

use super::*;

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("state.db"))
        .await
        .unwrap();
    (dir, store)
}

const HOUR_MS: i64 = 3_600_000;
const T0: i64 = 1_900_000_000_000;

fn detection(subject: &str, kind: &str, level: &str, at_ms: i64) -> NewDetection {
    NewDetection {
        at_ms,
        issuer: "https://issuer.example".into(),
        subject: subject.into(),
        user_principal_name: format!("{subject}@example.com"),
        kind: kind.into(),
        level: level.into(),
        ip_address: "192.0.2.7".into(),
        detail: "seen".into(),
        source: "edge".into(),
        correlation_id: "req-1".into(),
    }
}

fn levels(users: &[RiskyUser], subject: &str) -> (String, Vec<String>) {
    let u = users.iter().find(|u| u.subject == subject).unwrap();
    let mut standing = u.standing.clone();
    standing.sort();
    (u.state.clone(), standing)
}

#[tokio::test]
async fn one_detection_per_kind_user_and_hour() {
    let (_d, store) = store().await;
    let v0 = store.config_version().await.unwrap();
    assert!(store
        .record_detection(&detection("ann", "anonymizedIPAddress", "medium", T0))
        .await
        .unwrap());
    assert!(
        store.config_version().await.unwrap() > v0,
        "edges must see the new risk"
    );
    // The same kind within the hour is not stored again; another kind or user is.
    for i in 1..50 {
        let again = detection("ann", "anonymizedIPAddress", "medium", T0 + i * 60_000);
        assert!(!store.record_detection(&again).await.unwrap());
    }
    assert!(store
        .record_detection(&detection("ann", "unlikelyTravel", "high", T0 + 1))
        .await
        .unwrap());
    assert!(store
        .record_detection(&detection("bob", "anonymizedIPAddress", "medium", T0 + 2))
        .await
        .unwrap());
    assert!(store
        .record_detection(&detection(
            "ann",
            "anonymizedIPAddress",
            "medium",
            T0 + HOUR_MS + 1
        ))
        .await
        .unwrap());
    let all = store.detections(None, 0, 1_000).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].at_ms, T0 + HOUR_MS + 1, "newest first");
    let anns = store
        .detections(Some("ANN@example.com"), 0, 1_000)
        .await
        .unwrap();
    assert_eq!(anns.len(), 3, "the user filter ignores case");
    assert!(anns.iter().all(|d| d.state == "atRisk"));
    let users = store.risky_users(T0 + HOUR_MS + 1).await.unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(
        levels(&users, "ann"),
        ("atRisk".into(), vec!["high".into(), "medium".into()])
    );
}

#[tokio::test]
async fn old_detections_stop_counting_and_are_pruned() {
    let (_d, store) = store().await;
    store
        .record_detection(&detection("ann", "leakedCredentials", "high", T0))
        .await
        .unwrap();
    let later = T0 + DETECTION_RETENTION_MS + HOUR_MS;
    // Past the retention period, the old detection no longer stands…
    let users = store.risky_users(later).await.unwrap();
    assert_eq!(levels(&users, "ann"), ("atRisk".into(), vec![]));
    // …and the next detection prunes it.
    store
        .record_detection(&detection("bob", "bruteForce", "medium", later))
        .await
        .unwrap();
    let all = store.detections(None, 0, 1_000).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].subject, "bob");
}

#[tokio::test]
async fn dismissing_clears_what_stands_until_the_next_detection() {
    let (_d, store) = store().await;
    let now = crate::now() * 1000;
    store
        .record_detection(&detection("ann", "unlikelyTravel", "high", now))
        .await
        .unwrap();
    let changed = store
        .decide_user_risk("Ann@Example.com", false)
        .await
        .unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].state, "dismissed");
    assert!(changed[0].standing.is_empty());
    let d = store.detections(None, 0, 10).await.unwrap();
    assert_eq!(d[0].state, "dismissed");
    // A new kind of detection puts the user at risk again.
    store
        .record_detection(&detection("ann", "anonymizedIPAddress", "medium", now + 1))
        .await
        .unwrap();
    let users = store.risky_users(now + 1).await.unwrap();
    assert_eq!(
        levels(&users, "ann"),
        ("atRisk".into(), vec!["medium".into()])
    );
    // So does the same kind found again within the hour: the dismissed one does not hide it.
    store
        .decide_user_risk("ann@example.com", false)
        .await
        .unwrap();
    assert!(store
        .record_detection(&detection("ann", "unlikelyTravel", "high", now + 2))
        .await
        .unwrap());
    let users = store.risky_users(now + 2).await.unwrap();
    assert_eq!(
        levels(&users, "ann"),
        ("atRisk".into(), vec!["high".into()])
    );
    // Nobody by that name: refused, nothing changes.
    let before = store.config_version().await.unwrap();
    assert!(matches!(
        store.decide_user_risk("nobody@example.com", true).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.decide_user_risk("nobody@example.com", false).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.config_version().await.unwrap(), before);
}

#[tokio::test]
async fn confirming_a_compromise_ends_every_session_and_survives_new_detections() {
    let (_d, store) = store().await;
    // A directory user with no detections can be confirmed compromised.
    let user = store
        .create_user(&NewUser {
            email: "carol@example.com".into(),
            display_name: "Carol".into(),
            password_hash: "x".into(),
            admin: false,
            require_mfa: false,
            groups: vec![],
            email_verified: true,
        })
        .await
        .unwrap();
    let changed = store
        .decide_user_risk("carol@example.com", true)
        .await
        .unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].issuer, BUILT_IN_ISSUER);
    assert_eq!(changed[0].subject, user.id);
    assert_eq!(changed[0].state, "confirmedCompromised");
    let revoked: Vec<String> = store
        .session_revocations()
        .await
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(revoked.contains(&user.id), "{revoked:?}");
    assert!(revoked.contains(&"carol@example.com".to_owned()));
    // A later detection does not lower a confirmed compromise back to "at risk".
    let mut d = detection(&user.id, "bruteForce", "medium", crate::now() * 1000);
    d.issuer = BUILT_IN_ISSUER.into();
    d.user_principal_name = "carol@example.com".into();
    store.record_detection(&d).await.unwrap();
    let users = store.risky_users(crate::now() * 1000).await.unwrap();
    assert_eq!(levels(&users, &user.id).0, "confirmedCompromised");
}

#[tokio::test]
async fn history_and_failures_read_only_what_they_ask_for() {
    let (_d, store) = store().await;
    let base = |user: &str, ip: &str, at_ms: i64, ok: bool, issuer: &str| NewSignin {
        at_ms,
        user_id: Some(format!("sub-{user}")),
        user_principal_name: user.into(),
        app_id: None,
        app_display_name: None,
        ip_address: ip.into(),
        client_app_used: BROWSER.into(),
        correlation_id: "req".into(),
        is_interactive: true,
        result: if ok {
            SigninResult::Success
        } else {
            SigninResult::Failure
        },
        error_code: "x".into(),
        failure_reason: String::new(),
        operating_system: None,
        browser: None,
        authentication_requirement: SINGLE_FACTOR.into(),
        authentication_methods: vec![],
        issuer: issuer.into(),
        location: None,
        decided: None,
    };
    let idp = BUILT_IN_ISSUER;
    let other = "https://issuer.example";
    for (user, ip, at, ok, issuer) in [
        ("ann", "192.0.2.1", T0, false, idp),
        ("bob", "192.0.2.1", T0 + 1, false, idp),
        ("ann", "192.0.2.9", T0 + 2, false, idp),
        ("ann", "192.0.2.1", T0 - 10, false, idp),
        ("cid", "192.0.2.1", T0 + 3, false, other),
        ("ann", "192.0.2.1", T0 + 4, true, idp),
        ("ann", "192.0.2.1", T0 + 5, true, other),
    ] {
        store
            .record_sign_in(&base(user, ip, at, ok, issuer))
            .await
            .unwrap();
    }
    let failures = store.recent_failures("192.0.2.1", "ann", T0).await.unwrap();
    let seen: Vec<(&str, &str)> = failures
        .iter()
        .map(|f| (f.account.as_str(), f.ip_address.as_str()))
        .collect();
    // The built-in provider's failures since T0, from the address or for the account.
    assert_eq!(
        seen,
        vec![
            ("ann", "192.0.2.9"),
            ("bob", "192.0.2.1"),
            ("ann", "192.0.2.1")
        ]
    );
    let history = store.sign_in_history(other, "sub-ann", 50).await.unwrap();
    assert_eq!(history.len(), 1, "successes at that issuer only");
    assert_eq!(history[0].record.at_ms, T0 + 5);
}
