//! Connectors: their health, moving one to another group, revoking one.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{finish, unknown_group, Admin};
use crate::api::{ApiFailure, ApiJson};
use crate::state::Shared;

/// A connector as the admin API shows it.
#[derive(Serialize, Deserialize)]
pub struct ConnectorView {
    pub id: String,
    pub group: String,
    pub hostname: String,
    pub version: String,
    /// The address it last connected from.
    pub address: Option<String>,
    /// `active` (tunnels open), `inactive` (none) or `revoked`.
    pub status: String,
    pub tunnels: usize,
    /// Requests carried by its open tunnels.
    pub requests: u64,
    /// Unix seconds.
    pub registered_at: i64,
    /// Unix seconds: when a tunnel or control call from it was last seen.
    pub last_seen_at: Option<i64>,
    /// Unix seconds: when its newest certificate expires.
    pub cert_not_after: Option<i64>,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConnector {
    /// Move the connector to this group.
    group: String,
}

fn open_tunnels(shared: &Shared) -> HashMap<String, (usize, u64)> {
    let mut open: HashMap<String, (usize, u64)> = HashMap::new();
    for (_, t) in shared.tunnels.snapshot() {
        let entry = open.entry(t.connector_id.clone()).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += t.served();
    }
    open
}

fn view(c: postern_store::Connector, open: &HashMap<String, (usize, u64)>) -> ConnectorView {
    let (tunnels, requests) = open.get(&c.id).copied().unwrap_or((0, 0));
    let status = if c.revoked_at.is_some() {
        "revoked"
    } else if tunnels > 0 {
        "active"
    } else {
        "inactive"
    };
    ConnectorView {
        status: status.to_owned(),
        tunnels,
        requests,
        id: c.id,
        group: c.group,
        hostname: c.hostname,
        version: c.version,
        address: c.address,
        registered_at: c.registered_at,
        last_seen_at: if tunnels > 0 {
            Some(postern_store::now())
        } else {
            c.last_seen_at
        },
        cert_not_after: c.cert_not_after,
        revoked_at: c.revoked_at,
    }
}

pub async fn list(
    State(shared): State<Arc<Shared>>,
) -> Result<Json<Vec<ConnectorView>>, ApiFailure> {
    let open = open_tunnels(&shared);
    let connectors = shared.store.connectors().await?;
    Ok(Json(
        connectors.into_iter().map(|c| view(c, &open)).collect(),
    ))
}

pub async fn show(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<ConnectorView>, ApiFailure> {
    let c = shared.store.connector(&id).await?;
    Ok(Json(view(c, &open_tunnels(&shared))))
}

pub async fn update(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateConnector>,
) -> Result<Json<ConnectorView>, ApiFailure> {
    let audit = admin.begin(&shared, "connector.move", &id);
    let result = async {
        let before = shared.store.connector(&id).await?;
        shared
            .store
            .group(&req.group)
            .await
            .map_err(|e| unknown_group(e, &req.group))?;
        let detail = format!("group {} -> {}", before.group, req.group);
        let moved = audit.store(&detail).move_connector(&id, &req.group).await?;
        shared.reload().await?;
        tracing::info!(connector = %id, from = %before.group, to = %moved.group, "connector moved");
        Ok(view(moved, &open_tunnels(&shared)))
    }
    .await;
    finish(&audit, &result).await;
    result.map(Json)
}

pub async fn revoke(
    State(shared): State<Arc<Shared>>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> Result<Json<ConnectorView>, ApiFailure> {
    let audit = admin.begin(&shared, "connector.revoke", &id);
    let result = async {
        let group = shared.store.connector(&id).await?.group;
        let revoked = audit
            .store(&format!("group {group}"))
            .revoke_connector(&id)
            .await?;
        // The reload closes its tunnels and ends its config long-poll with a refusal.
        shared.reload().await?;
        tracing::info!(connector = %id, "connector revoked");
        Ok(view(revoked, &open_tunnels(&shared)))
    }
    .await;
    finish(&audit, &result).await;
    result.map(Json)
}
