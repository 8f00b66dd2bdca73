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
