//! Recording admin actions and connector lifecycle events in the audit log.
//!
//! **Invariant:** every change an admin makes through the API, and every registration, renewal and
//! revocation, is recorded whether it succeeded or failed, with its actor and request ID.

use postern_store::{NewAuditEvent, Outcome, Store};

/// Who did something, as the audit log names them.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

impl Actor {
    pub fn bootstrap() -> Actor {
        Actor("admin:bootstrap".to_owned())
    }

    pub fn admin_token(id: &str) -> Actor {
        Actor(format!("admin:{id}"))
    }

    pub fn connector(id: &str) -> Actor {
        Actor(format!("connector:{id}"))
    }

    /// A connector that is not registered yet, known by its registration token.
    pub fn registration(hostname: &str) -> Actor {
        Actor(format!("registration:{hostname}"))
    }
}

/// Records one event. A failure to record is logged loudly but does not undo the action, which
/// has already been committed.
pub async fn record(
    store: &Store,
    actor: &Actor,
    action: &str,
    target: &str,
    result: Result<&str, &str>,
    request_id: &str,
) {
    let (outcome, detail) = match result {
        Ok(d) => (Outcome::Success, d),
        Err(d) => (Outcome::Failure, d),
    };
    let event = NewAuditEvent {
        actor: &actor.0,
        action,
        target,
        outcome,
        detail,
        request_id,
    };
    if let Err(e) = store.record(&event).await {
        tracing::error!(error = %e, actor = %actor.0, action, target, "cannot write the audit log");
    }
}
