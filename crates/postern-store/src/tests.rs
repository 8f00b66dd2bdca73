use std::time::Duration;

use super::*;

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("state.db"))
        .await
        .unwrap();
    (dir, store)
}

fn cert(serial: &str) -> CertRecord {
    CertRecord {
        serial_hex: serial.into(),
        pem: "pem".into(),
        not_before: 0,
        not_after: 100,
    }
}

fn app(name: &str, host: &str) -> NewApp {
    NewApp {
        name: name.into(),
        external_url: format!("https://{host}"),
        external_host: host.into(),
        internal_url: "http://127.0.0.1:1".into(),
        group: "g".into(),
        preauth: Preauth::Passthrough,
        preserve_host: false,
        insecure_skip_backend_tls_verify: false,
        backend_timeout: Duration::from_secs(85),
        maintenance: false,
        oidc: None,
        access: AccessRules::default(),
        cookie: CookieOptions::default(),
    }
}

#[tokio::test]
async fn apps_and_groups_survive_reopen_and_bump_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let store = Store::open_sqlite(&path).await.unwrap();
        let v0 = store.config_version().await.unwrap();
        store.create_group("g").await.unwrap();
        store.publish_app(&app("a", "a.example")).await.unwrap();
        assert_eq!(store.config_version().await.unwrap(), v0 + 2);
    }
    let store = Store::open_sqlite(&path).await.unwrap();
    let apps = store.apps().await.unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].external_host, "a.example");
    assert_eq!(apps[0].backend_timeout, Duration::from_secs(85));
}

#[tokio::test]
async fn conflicts_are_refused_and_change_nothing() {
    let (_d, store) = store().await;
    store.create_group("g").await.unwrap();
    assert!(matches!(
        store.create_group("g").await,
        Err(StoreError::Conflict(_))
    ));
    store.publish_app(&app("a", "a.example")).await.unwrap();
    let v = store.config_version().await.unwrap();
    let dup_name = store.publish_app(&app("a", "b.example")).await;
    assert!(matches!(dup_name, Err(StoreError::Conflict(m)) if m.contains("named")));
    let dup_host = store.publish_app(&app("b", "a.example")).await;
    assert!(matches!(dup_host, Err(StoreError::Conflict(m)) if m.contains("a.example")));
    let mut no_group = app("c", "c.example");
    no_group.group = "nope".into();
    assert!(matches!(
        store.publish_app(&no_group).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.config_version().await.unwrap(), v);
    assert_eq!(store.apps().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_token_registers_exactly_one_connector() {
    let (_d, store) = store().await;
    store.create_group("g").await.unwrap();
    let token = store
        .create_registration_token("g", Duration::from_secs(60))
        .await
        .unwrap();
    let (c, _) = store
        .register_connector::<()>(&token, "h", "1", |_| Ok(cert("01")))
        .await
        .unwrap();
    assert_eq!(c.group, "g");
    let again = store
        .register_connector::<()>(&token, "h", "1", |_| Ok(cert("02")))
        .await;
    assert!(matches!(
        again,
        Err(RegisterError::Token(TokenProblem::Used))
    ));
    assert_eq!(store.connectors().await.unwrap().len(), 1);
}

#[tokio::test]
async fn refused_tokens_and_csrs_store_nothing() {
    let (_d, store) = store().await;
    store.create_group("g").await.unwrap();
    let unknown = store
        .register_connector::<()>("pst_nope", "h", "1", |_| Ok(cert("01")))
        .await;
    assert!(matches!(
        unknown,
        Err(RegisterError::Token(TokenProblem::Unknown))
    ));
    let expired = store
        .create_registration_token("g", Duration::ZERO)
        .await
        .unwrap();
    let res = store
        .register_connector::<()>(&expired, "h", "1", |_| Ok(cert("01")))
        .await;
    assert!(matches!(
        res,
        Err(RegisterError::Token(TokenProblem::Expired))
    ));
    // A refused CSR keeps the token usable.
    let token = store
        .create_registration_token("g", Duration::from_secs(60))
        .await
        .unwrap();
    let res = store
        .register_connector(&token, "h", "1", |_| Err("bad csr"))
        .await;
    assert!(matches!(res, Err(RegisterError::Sign("bad csr"))));
    assert!(store.connectors().await.unwrap().is_empty());
    store
        .register_connector::<()>(&token, "h", "1", |_| Ok(cert("01")))
        .await
        .unwrap();
}

#[tokio::test]
async fn app_ids_are_never_reused() {
    let (_d, store) = store().await;
    store.create_group("g").await.unwrap();
    store.publish_app(&app("a", "a.example")).await.unwrap();
    let b = store.publish_app(&app("b", "b.example")).await.unwrap();
    store.delete_app("b").await.unwrap();
    let c = store.publish_app(&app("c", "c.example")).await.unwrap();
    assert!(c.id > b.id, "{} reused {}", c.id, b.id);
}

#[tokio::test]
async fn updates_keep_the_id_and_refuse_conflicts() {
    let (_d, store) = store().await;
    store.create_group("g").await.unwrap();
    store.create_group("h").await.unwrap();
    let a = store.publish_app(&app("a", "a.example")).await.unwrap();
    store.publish_app(&app("b", "b.example")).await.unwrap();
    let v = store.config_version().await.unwrap();

    let mut change = a.settings();
    change.internal_url = "http://10.0.0.1:80/".into();
    change.group = "h".into();
    change.maintenance = true;
    let updated = store.update_app("a", &change).await.unwrap();
    assert_eq!(updated.id, a.id);
    assert_eq!(updated.group, "h");
    assert!(updated.maintenance);
    assert_eq!(store.config_version().await.unwrap(), v + 1);

    let mut clash = updated.settings();
    clash.external_host = "b.example".into();
    assert!(matches!(
        store.update_app("a", &clash).await,
        Err(StoreError::Conflict(_))
    ));
    let mut unknown_group = updated.settings();
    unknown_group.group = "nope".into();
    assert!(matches!(
        store.update_app("a", &unknown_group).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.update_app("zzz", &updated.settings()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.app("a").await.unwrap(), updated);
    assert_eq!(store.config_version().await.unwrap(), v + 1);
}

#[tokio::test]
async fn groups_rename_and_delete_only_when_unused() {
    let (_d, store) = store().await;
    store.create_group("g").await.unwrap();
    store.create_group("other").await.unwrap();
    store.publish_app(&app("a", "a.example")).await.unwrap();
    assert!(matches!(
        store.rename_group("g", "other").await,
        Err(StoreError::Conflict(_))
    ));
    store.rename_group("g", "renamed").await.unwrap();
    assert_eq!(store.app("a").await.unwrap().group, "renamed");

    let err = store.delete_group("renamed").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::InUse(m) if m.contains("apps a")),
        "{err}"
    );
    let token = store
        .create_registration_token("renamed", Duration::from_secs(60))
        .await
        .unwrap();
    let (c, _) = store
        .register_connector::<()>(&token, "h", "1", |_| Ok(cert("01")))
        .await
        .unwrap();
    store.delete_app("a").await.unwrap();
    let err = store.delete_group("renamed").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::InUse(m) if m.contains(&c.id)),
        "{err}"
    );
    // A revoked connector does not hold its group.
    store.revoke_connector(&c.id).await.unwrap();
    store.delete_group("renamed").await.unwrap();
    assert!(matches!(
        store.connector(&c.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete_group("renamed").await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn revoked_connectors_are_not_moved_or_renewed() {
    let (_d, store) = store().await;
    store.create_group("g").await.unwrap();
    store.create_group("h").await.unwrap();
    let token = store
        .create_registration_token("g", Duration::from_secs(60))
        .await
        .unwrap();
    let (c, _) = store
        .register_connector::<()>(&token, "h", "1", |_| Ok(cert("01")))
        .await
        .unwrap();
    let (renewed, _) = store
        .renew_connector::<()>(&c.id, "01", |_| {
            Ok(CertRecord {
                not_after: 200,
                ..cert("02")
            })
        })
        .await
        .unwrap();
    assert_eq!(renewed.cert_not_after, Some(200));
    assert_eq!(store.move_connector(&c.id, "h").await.unwrap().group, "h");
    store.revoke_connector(&c.id).await.unwrap();
    assert!(matches!(
        store.revoke_connector(&c.id).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.move_connector(&c.id, "g").await,
        Err(StoreError::Conflict(_))
    ));
    let refused = store
        .renew_connector::<()>(&c.id, "02", |_| Ok(cert("03")))
        .await;
    assert!(matches!(
        refused,
        Err(RegisterError::Store(StoreError::Conflict(_)))
    ));
    assert!(matches!(
        store
            .renew_connector::<()>("c_unknown", "01", |_| Ok(cert("04")))
            .await,
        Err(RegisterError::Store(StoreError::NotFound { .. }))
    ));
    assert_eq!(
        store.connector(&c.id).await.unwrap().cert_not_after,
        Some(200)
    );
}

#[tokio::test]
async fn admin_tokens_authenticate_until_revoked_or_expired() {
    let (_d, store) = store().await;
    let (t, secret) = store.create_admin_token("ci", None).await.unwrap();
    assert_eq!(
        store
            .authenticate_admin_token(&secret)
            .await
            .unwrap()
            .unwrap()
            .id,
        t.id
    );
    assert!(store
        .authenticate_admin_token("pat_forged")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .admin_token(&t.id)
        .await
        .unwrap()
        .last_used_at
        .is_some());
    store.revoke_admin_token(&t.id).await.unwrap();
    assert!(store
        .authenticate_admin_token(&secret)
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        store.revoke_admin_token(&t.id).await,
        Err(StoreError::Conflict(_))
    ));
    let (_, expired) = store
        .create_admin_token("short", Some(Duration::ZERO))
        .await
        .unwrap();
    assert!(store
        .authenticate_admin_token(&expired)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn audit_filters_and_pages() {
    let (_d, store) = store().await;
    for (actor, action) in [
        ("admin:a", "app.publish"),
        ("admin:b", "app.delete"),
        ("admin:a", "group.create"),
        ("connector:c", "connector.renew"),
        ("admin:a", "app.update"),
    ] {
        store
            .record(&NewAuditEvent {
                actor,
                action,
                target: "t",
                outcome: Outcome::Success,
                detail: "",
                request_id: "r",
            })
            .await
            .unwrap();
    }
    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery {
            limit: 100,
            ..Default::default()
        };
        f(&mut q);
        q
    };
    let actions =
        |events: Vec<AuditEvent>| -> Vec<String> { events.into_iter().map(|e| e.action).collect() };
    let all = store.audit(&q(|_| {})).await.unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(
        actions(
            store
                .audit(&q(|q| q.actor = Some("admin:a".into())))
                .await
                .unwrap()
        ),
        ["app.update", "group.create", "app.publish"]
    );
    assert_eq!(
        actions(
            store
                .audit(&q(|q| q.action = Some("app.".into())))
                .await
                .unwrap()
        ),
        ["app.update", "app.delete", "app.publish"]
    );
    assert_eq!(
        actions(
            store
                .audit(&q(|q| q.action = Some("app.delete".into())))
                .await
                .unwrap()
        ),
        ["app.delete"]
    );
    let page1 = store.audit(&q(|q| q.limit = 2)).await.unwrap();
    assert_eq!(page1.len(), 2);
    let mut next = q(|q| q.limit = 2);
    next.before_id = Some(page1[1].id);
    let page2 = store.audit(&next).await.unwrap();
    assert_eq!(page2.len(), 2);
    assert!(page2[0].id < page1[1].id);
    let future = store
        .audit(&q(|q| q.since_ms = Some(i64::MAX / 2)))
        .await
        .unwrap();
    assert!(future.is_empty());
    let past = store.audit(&q(|q| q.until_ms = Some(0))).await.unwrap();
    assert!(past.is_empty());
}

#[tokio::test]
async fn oidc_settings_assignments_and_revocations_are_kept() {
    let (_d, store) = store().await;
    store.create_group("g").await.unwrap();
    let mut new = app("a", "a.example");
    new.preauth = Preauth::Oidc;
    new.oidc = Some(OidcClient {
        issuer: Some("https://issuer.example".into()),
        client_id: "client".into(),
        client_secret: Some("s3cret".into()),
        issuer_verifies_email: true,
    });
    new.access.require_mfa = true;
    new.cookie.persistent = true;
    let a = store.publish_app(&new).await.unwrap();
    assert_eq!(a.settings().oidc, new.oidc);
    // An update keeps what it is given, the issuer's email trust included.
    let mut changed = a.settings();
    if let Some(o) = changed.oidc.as_mut() {
        o.issuer_verifies_email = false;
    }
    let a = store.update_app("a", &changed).await.unwrap();
    assert_eq!(
        a.oidc.as_ref().map(|o| o.issuer_verifies_email),
        Some(false)
    );
    assert!(a.access.require_mfa && !a.access.assignment_required);
    assert!(a.cookie.persistent && a.cookie.http_only);
    assert!(
        !format!("{:?}", a.oidc).contains("s3cret"),
        "the secret is masked in Debug"
    );

    let v = store.config_version().await.unwrap();
    assert!(store
        .assign("a", &Assignee::User("ann@example.com".into()))
        .await
        .unwrap());
    assert!(!store
        .assign("a", &Assignee::User("ann@example.com".into()))
        .await
        .unwrap());
    store
        .assign("a", &Assignee::Group("staff".into()))
        .await
        .unwrap();
    assert_eq!(store.config_version().await.unwrap(), v + 2);
    assert_eq!(store.assignments().await.unwrap().len(), 2);
    assert!(matches!(
        store.assign("nope", &Assignee::Group("staff".into())).await,
        Err(StoreError::NotFound { .. })
    ));
    store
        .unassign("a", &Assignee::Group("staff".into()))
        .await
        .unwrap();
    assert!(matches!(
        store.unassign("a", &Assignee::Group("staff".into())).await,
        Err(StoreError::NotFound { .. })
    ));
    // Assignments go with their app.
    store.delete_app("a").await.unwrap();
    assert!(store.assignments().await.unwrap().is_empty());

    let at = store.revoke_sessions("ann@example.com").await.unwrap();
    assert_eq!(
        store.session_revocations().await.unwrap(),
        vec![("ann@example.com".to_owned(), at)]
    );
    // A sign-out prunes sign-outs older than the longest session, and only those.
    sqlx::query("INSERT INTO session_revocations (principal, revoked_at) VALUES ('session:old', ?), ('session:recent', ?)")
        .bind(at - 100)
        .bind(at - 10)
        .execute(&store.pool)
        .await
        .unwrap();
    let out = store.sign_out_session("new", 50).await.unwrap();
    let mut left = store.session_revocations().await.unwrap();
    left.sort();
    assert_eq!(
        left,
        vec![
            ("ann@example.com".to_owned(), at),
            ("session:new".to_owned(), out),
            ("session:recent".to_owned(), at - 10),
        ]
    );

    let first = store.key_ring("session", || "one".into()).await.unwrap();
    let second = store.key_ring("session", || "two".into()).await.unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("one", "one"));
    store.save_key_ring("session", "three").await.unwrap();
    assert_eq!(
        store.key_ring("session", || "four".into()).await.unwrap(),
        "three"
    );
}

#[tokio::test]
async fn migrations_apply_every_missing_version() {
    let (dir, store) = store().await;
    let versions = || async {
        sqlx::query_scalar::<_, i64>("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&store.pool)
            .await
            .unwrap()
    };
    assert_eq!(versions().await, (1..=13).collect::<Vec<i64>>());
    // A version below the highest that is missing (one filled in later) is applied on open.
    sqlx::query("DELETE FROM schema_migrations WHERE version = 5")
        .execute(&store.pool)
        .await
        .unwrap();
    sqlx::query("DROP TABLE idp_passkeys")
        .execute(&store.pool)
        .await
        .unwrap();
    let reopened = Store::open_sqlite(&dir.path().join("state.db"))
        .await
        .unwrap();
    let passkeys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idp_passkeys")
        .fetch_one(&reopened.pool)
        .await
        .unwrap();
    assert_eq!(passkeys, 0);
    assert_eq!(versions().await, (1..=13).collect::<Vec<i64>>());
}

/// Transactions that read, then write, from many tasks at once: each waits for the write lock
/// instead of failing with "database is locked" (as a deferred transaction does when another
/// writer commits between its read and its write).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_read_then_write_transactions_wait_for_each_other() {
    async fn bump(store: Store) -> Result<(), sqlx::Error> {
        let mut tx = store.write().await?;
        let (n,): (i64,) = sqlx::query_as("SELECT n FROM counter")
            .fetch_one(&mut *tx)
            .await?;
        tokio::task::yield_now().await;
        sqlx::query("UPDATE counter SET n = ?")
            .bind(n + 1)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
    let (_dir, store) = store().await;
    sqlx::query("CREATE TABLE counter (n INTEGER NOT NULL)")
        .execute(&store.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO counter VALUES (0)")
        .execute(&store.pool)
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        tasks.spawn(bump(store.clone()));
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().expect("a transaction failed instead of waiting");
    }
    let (n,): (i64,) = sqlx::query_as("SELECT n FROM counter")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(n, 64, "no update was lost");
}
