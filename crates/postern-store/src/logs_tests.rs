//! The audit and sign-in logs: audited changes commit with their record or not at all, the
//! chains find what was changed by hand, retention keeps them verifiable.

use super::*;

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("state.db"))
        .await
        .unwrap();
    (dir, store)
}

fn audit(action: &str, target: &str) -> Audit {
    Audit {
        actor: "admin:tok_1".into(),
        action: action.into(),
        target: target.into(),
        outcome: Outcome::Success,
        detail: "d".into(),
        request_id: "req-1".into(),
    }
}

fn signin(user: &str, app: &str, at_ms: i64, result: SigninResult) -> NewSignin {
    NewSignin {
        at_ms,
        user_id: Some(format!("sub-{user}")),
        user_principal_name: user.into(),
        app_id: Some("1".into()),
        app_display_name: Some(app.into()),
        ip_address: "127.0.0.1".into(),
        client_app_used: BROWSER.into(),
        correlation_id: "req".into(),
        is_interactive: true,
        result,
        error_code: "ok".into(),
        failure_reason: String::new(),
        operating_system: Some("Linux".into()),
        browser: Some("Firefox 120".into()),
        authentication_requirement: SINGLE_FACTOR.into(),
        authentication_methods: vec!["password".into()],
        issuer: "https://issuer.example".into(),
        location: None,
        decided: None,
    }
}

async fn events(store: &Store) -> Vec<AuditEvent> {
    store
        .audit(&AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn an_audited_change_commits_with_its_record_or_not_at_all() {
    let (_dir, store) = store().await;
    let audited = store.audited(audit("group.create", "g"));
    audited.create_group("g").await.unwrap();
    assert!(audited.audit_written());
    let e = events(&store).await;
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].action.as_str(), e[0].target.as_str()),
        ("group.create", "g")
    );
    assert_eq!(e[0].uid.len(), 36);

    // A refused change writes nothing, so its record is still pending for the caller to write
    // as a failure.
    let refused = store.audited(audit("group.create", "g"));
    assert!(refused.create_group("g").await.is_err());
    assert!(!refused.audit_written());
    assert_eq!(events(&store).await.len(), 1);

    // One record per handle: a second change through it is not audited twice.
    let once = store.audited(audit("group.create", "h"));
    once.create_group("h").await.unwrap();
    once.create_group("i").await.unwrap();
    assert_eq!(events(&store).await.len(), 2);
}

#[tokio::test]
async fn a_new_connector_is_named_in_its_registration_record() {
    let (_dir, store) = store().await;
    store.create_group("g").await.unwrap();
    let token = store
        .create_registration_token("g", std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let audited = store.audited(audit("connector.register", "-"));
    let (connector, _) = audited
        .register_connector::<std::convert::Infallible>(&token, "host", "1", |_| {
            Ok(CertRecord {
                serial_hex: "01".into(),
                pem: "pem".into(),
                not_before: 0,
                not_after: 100,
            })
        })
        .await
        .unwrap();
    let e = &events(&store).await[0];
    assert_eq!(e.target, connector.id);
    assert_eq!(e.detail, "group g, certificate expires 100");
}

async fn sql(store: &Store, q: &str) {
    sqlx::query(q).execute(&store.pool).await.unwrap();
}

/// Running `update` on the sign-ins is found: the first record is named as altered.
async fn first_record_altered(store: &Store, update: &str) {
    sql(store, update).await;
    assert_eq!(
        broken(store, Log::Signins).await,
        Some(Broken::Altered { id: 1 })
    );
}

async fn broken(store: &Store, log: Log) -> Option<Broken> {
    store.verify_log(log).await.unwrap().broken
}

#[tokio::test]
async fn verification_names_the_first_altered_missing_or_inserted_record() {
    let (_dir, store) = store().await;
    for i in 0..5 {
        store
            .record_audit(&audit("app.publish", &format!("a{i}")))
            .await
            .unwrap();
        store
            .record_sign_in(&signin(
                "u@example.com",
                "wiki",
                1000 + i,
                SigninResult::Success,
            ))
            .await
            .unwrap();
    }
    for log in Log::ALL {
        let v = store.verify_log(log).await.unwrap();
        assert_eq!((v.records, v.broken), (5, None), "{log:?}");
    }

    sql(&store, "UPDATE audit_events SET detail = 'x' WHERE id = 3").await;
    assert_eq!(
        broken(&store, Log::Audit).await,
        Some(Broken::Altered { id: 3 })
    );
    sql(
        &store,
        "UPDATE signins SET user_principal_name = 'x' WHERE id = 2",
    )
    .await;
    assert_eq!(
        broken(&store, Log::Signins).await,
        Some(Broken::Altered { id: 2 })
    );

    let (_dir, store) = self::store().await;
    for i in 0..5 {
        store
            .record_audit(&audit("app.publish", &format!("a{i}")))
            .await
            .unwrap();
    }
    sql(&store, "DELETE FROM audit_events WHERE id = 2").await;
    assert_eq!(
        broken(&store, Log::Audit).await,
        Some(Broken::Missing { id: 2 })
    );

    let (_dir, store) = self::store().await;
    for i in 0..5 {
        store
            .record_audit(&audit("app.publish", &format!("a{i}")))
            .await
            .unwrap();
    }
    sql(
        &store,
        "INSERT INTO audit_events (id, uid, at_ms, actor, action, target, result, detail,
             request_id, prev_hash, hash)
         SELECT 6, 'u', at_ms, actor, action, target, result, detail, request_id, hash, hash
         FROM audit_events WHERE id = 5",
    )
    .await;
    assert_eq!(
        broken(&store, Log::Audit).await,
        Some(Broken::Inserted { id: 6 })
    );

    // The newest record deleted is missing too: the head remembers it.
    sql(&store, "DELETE FROM audit_events WHERE id >= 5").await;
    assert_eq!(
        broken(&store, Log::Audit).await,
        Some(Broken::Missing { id: 5 })
    );
}

#[tokio::test]
async fn retention_prunes_from_the_oldest_end_and_the_chain_still_verifies() {
    let (_dir, store) = store().await;
    for i in 0..6 {
        store
            .record_sign_in(&signin(
                "u@example.com",
                "wiki",
                1000 * i,
                SigninResult::Success,
            ))
            .await
            .unwrap();
    }
    // By age: the first two; by count: then one more (keep 3).
    assert_eq!(store.prune_signins(2000, 3).await.unwrap(), 3);
    let v = store.verify_log(Log::Signins).await.unwrap();
    assert_eq!((v.records, v.broken), (3, None));
    // Everything gone: still intact, and the next record continues the chain.
    assert_eq!(store.prune_signins(i64::MAX, 0).await.unwrap(), 3);
    assert_eq!(broken(&store, Log::Signins).await, None);
    store
        .record_sign_in(&signin(
            "u@example.com",
            "wiki",
            9000,
            SigninResult::Success,
        ))
        .await
        .unwrap();
    assert_eq!(broken(&store, Log::Signins).await, None);
    // Deleting the oldest by hand, without moving the anchor, is found.
    store
        .record_sign_in(&signin(
            "u@example.com",
            "wiki",
            9001,
            SigninResult::Success,
        ))
        .await
        .unwrap();
    sql(&store, "DELETE FROM signins WHERE id = 7").await;
    assert_eq!(
        broken(&store, Log::Signins).await,
        Some(Broken::Missing { id: 7 })
    );
}

#[tokio::test]
async fn audit_events_from_before_the_chain_are_chained_at_open() {
    let (dir, store) = store().await;
    store
        .record_audit(&audit("app.publish", "a"))
        .await
        .unwrap();
    // As an older edge wrote them: no uid, no hashes, ids from AUTOINCREMENT.
    sql(
        &store,
        "UPDATE audit_events SET uid = NULL, prev_hash = NULL, hash = NULL",
    )
    .await;
    sql(
        &store,
        "UPDATE log_heads SET seq = 0, hash = '0000000000000000000000000000000000000000000000000000000000000000' WHERE log = 'audit'",
    )
    .await;
    sql(
        &store,
        "INSERT INTO audit_events (at_ms, actor, action, target, result, detail, request_id)
         VALUES (1, 'admin:bootstrap', 'group.create', 'g', 'success', '', 'r')",
    )
    .await;
    drop(store);
    let store = Store::open_sqlite(&dir.path().join("state.db"))
        .await
        .unwrap();
    let v = store.verify_log(Log::Audit).await.unwrap();
    assert_eq!((v.records, v.broken), (2, None));
    store
        .record_audit(&audit("app.publish", "b"))
        .await
        .unwrap();
    let v = store.verify_log(Log::Audit).await.unwrap();
    assert_eq!((v.records, v.broken), (3, None));
}

#[tokio::test]
async fn sign_ins_are_found_by_user_app_result_and_time_in_pages() {
    let (_dir, store) = store().await;
    let rows = [
        ("a@example.com", "wiki", 1000, SigninResult::Success),
        ("b@example.com", "wiki", 2000, SigninResult::Failure),
        ("A@example.com", "mail", 3000, SigninResult::Success),
        ("a@example.com", "wiki", 4000, SigninResult::Failure),
    ];
    for (u, a, t, r) in rows {
        store.record_sign_in(&signin(u, a, t, r)).await.unwrap();
    }
    let check = |q: SigninQuery, expected: &'static [i64]| {
        let store = store.clone();
        async move {
            let got: Vec<i64> = store
                .signins(&SigninQuery {
                    limit: q.limit.max(1),
                    ..q
                })
                .await
                .unwrap()
                .iter()
                .map(|s| s.id)
                .collect();
            assert_eq!(got, expected);
        }
    };
    let q = |f: fn(&mut SigninQuery)| {
        let mut q = SigninQuery {
            limit: 100,
            ..Default::default()
        };
        f(&mut q);
        q
    };
    check(q(|_| {}), &[4, 3, 2, 1]).await;
    check(q(|q| q.user = Some("a@example.com".into())), &[4, 3, 1]).await;
    check(q(|q| q.app = Some("wiki".into())), &[4, 2, 1]).await;
    check(q(|q| q.result = Some(SigninResult::Failure)), &[4, 2]).await;
    check(q(|q| q.since_ms = Some(2000)), &[4, 3, 2]).await;
    check(q(|q| q.until_ms = Some(2000)), &[1]).await;
    check(q(|q| q.limit = 2), &[4, 3]).await;
    check(
        q(|q| {
            q.limit = 2;
            q.before_id = Some(3)
        }),
        &[2, 1],
    )
    .await;
    check(q(|q| q.after_id = Some(2)), &[3, 4]).await;
}

#[tokio::test]
async fn long_sign_in_text_is_cut_at_a_character_boundary() {
    let (_dir, store) = store().await;
    let mut s = signin("u@example.com", "wiki", 1, SigninResult::Failure);
    s.failure_reason = "é".repeat(SIGNIN_TEXT_BYTES);
    s.browser = Some("x".repeat(SIGNIN_TEXT_BYTES * 4));
    store.record_sign_in(&s).await.unwrap();
    let got = &store
        .signins(&SigninQuery {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()[0];
    assert!(got.record.failure_reason.len() <= SIGNIN_TEXT_BYTES);
    assert!(got.record.failure_reason.chars().all(|c| c == 'é'));
    assert_eq!(
        got.record.browser.as_ref().unwrap().len(),
        SIGNIN_TEXT_BYTES
    );
    assert_eq!(broken(&store, Log::Signins).await, None);
}

#[tokio::test]
async fn export_cursors_only_move_forward() {
    let (_dir, store) = store().await;
    assert_eq!(store.export_cursor("file", Log::Audit).await.unwrap(), 0);
    store
        .set_export_cursor("file", Log::Audit, 5)
        .await
        .unwrap();
    store
        .set_export_cursor("file", Log::Audit, 3)
        .await
        .unwrap();
    assert_eq!(store.export_cursor("file", Log::Audit).await.unwrap(), 5);
    assert_eq!(store.export_cursor("file", Log::Signins).await.unwrap(), 0);
}

#[tokio::test]
async fn a_located_sign_in_keeps_its_place_and_the_chain_covers_it() {
    let (_dir, store) = store().await;
    let mut located = signin("a@example.com", "wiki", 1000, SigninResult::Success);
    located.location = Some(Location {
        city: Some("Bracknell".into()),
        state: Some("England".into()),
        country_or_region: Some("GB".into()),
        coordinates: Some((51.4035987854, -0.7617999911)),
    });
    store.record_sign_in(&located).await.unwrap();
    // Known to the database but not placed anywhere: stored as located, every part empty.
    let mut nowhere = signin("a@example.com", "wiki", 1001, SigninResult::Success);
    nowhere.location = Some(Location::default());
    store.record_sign_in(&nowhere).await.unwrap();
    store
        .record_sign_in(&signin(
            "a@example.com",
            "wiki",
            1002,
            SigninResult::Success,
        ))
        .await
        .unwrap();
    let page = store
        .signins(&SigninQuery {
            limit: 10,
            ..SigninQuery::default()
        })
        .await
        .unwrap();
    let places: Vec<_> = page
        .iter()
        .rev()
        .map(|s| s.record.location.clone())
        .collect();
    assert_eq!(
        places,
        [located.location.clone(), Some(Location::default()), None]
    );
    let v = store.verify_log(Log::Signins).await.unwrap();
    assert_eq!((v.records, v.broken), (3, None));

    first_record_altered(
        &store,
        "UPDATE signins SET location_country = 'FR' WHERE id = 1",
    )
    .await;
    let (_dir, store) = self::store().await;
    store.record_sign_in(&located).await.unwrap();
    first_record_altered(&store, "UPDATE signins SET located = 0 WHERE id = 1").await;
}

#[tokio::test]
async fn retention_never_hides_records_deleted_by_hand_nor_opens_a_hole() {
    let (_dir, store) = store().await;
    for i in 0..6 {
        store
            .record_sign_in(&signin(
                "u@example.com",
                "wiki",
                10_000 + i,
                SigninResult::Success,
            ))
            .await
            .unwrap();
    }
    // The oldest deleted by hand; a retention pass that has nothing to remove must not move the
    // anchor past them.
    sql(&store, "DELETE FROM signins WHERE id <= 2").await;
    assert_eq!(store.prune_signins(0, 1000).await.unwrap(), 0);
    assert_eq!(
        broken(&store, Log::Signins).await,
        Some(Broken::Missing { id: 1 })
    );

    // Times out of order by a few milliseconds (taken before the write lock): retention by age
    // removes a prefix, never a record in the middle.
    let (_dir, store) = self::store().await;
    for at in [1000, 1005, 999, 1010, 5000] {
        store
            .record_sign_in(&signin("u@example.com", "wiki", at, SigninResult::Success))
            .await
            .unwrap();
    }
    // Older than 1001: records 1 and 3; record 2 (1005) goes with them.
    assert_eq!(store.prune_signins(1001, 1000).await.unwrap(), 3);
    let v = store.verify_log(Log::Signins).await.unwrap();
    assert_eq!((v.records, v.broken), (2, None));
}

#[tokio::test]
async fn a_decided_sign_in_keeps_its_policies_and_risk_and_the_chain_covers_them() {
    let (_dir, store) = store().await;
    let mut decided = signin("a@example.com", "wiki", 1000, SigninResult::Failure);
    decided.decided = Some(Decided {
        conditional_access_status: "failure".into(),
        applied_policies: vec![
            "Block Tor:failure".into(),
            "Watch, with\nnewline:reportOnlySuccess".into(),
        ],
        risk_level: "medium".into(),
        risk_event_types: vec!["anonymizedIPAddress".into()],
    });
    store.record_sign_in(&decided).await.unwrap();
    // Hostile names are cut and cannot split a list; a flood of policies is capped.
    let mut many = signin("a@example.com", "wiki", 1001, SigninResult::Success);
    many.decided = Some(Decided {
        conditional_access_status: "success".into(),
        applied_policies: (0..100).map(|i| format!("p{i}:success")).collect(),
        risk_level: "none".into(),
        risk_event_types: Vec::new(),
    });
    store.record_sign_in(&many).await.unwrap();
    let page = store
        .signins(&SigninQuery {
            limit: 10,
            ..SigninQuery::default()
        })
        .await
        .unwrap();
    let first = page[1].record.decided.clone().unwrap();
    assert_eq!(first.conditional_access_status, "failure");
    assert_eq!(
        first.applied_policies,
        ["Block Tor:failure", "Watch  with newline:reportOnlySuccess"]
    );
    assert_eq!(first.risk_level, "medium");
    assert_eq!(first.risk_event_types, ["anonymizedIPAddress"]);
    let second = page[0].record.decided.clone().unwrap();
    assert_eq!(
        second.applied_policies.len(),
        crate::logs::MAX_DECIDED_ITEMS
    );
    assert!(second.risk_event_types.is_empty());
    let v = store.verify_log(Log::Signins).await.unwrap();
    assert_eq!((v.records, v.broken), (2, None));

    first_record_altered(
        &store,
        "UPDATE signins SET ca_status = 'success' WHERE id = 1",
    )
    .await;
    let (_dir, store) = self::store().await;
    store.record_sign_in(&decided).await.unwrap();
    first_record_altered(&store, "UPDATE signins SET risk_events = '' WHERE id = 1").await;
}
