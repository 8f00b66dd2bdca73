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

/// Longest actor, target or detail the audit log keeps: an event names who, what and why; more
/// is a caller's payload (a path or a value echoed in an error), not a record.
pub const MAX_AUDIT_TEXT_BYTES: usize = 2048;

/// Text as the audit log keeps it: control characters escaped, so no value can forge an event's
/// line wherever it is shown, and cut at [`MAX_AUDIT_TEXT_BYTES`] (marked with `…`).
fn recordable(text: &str) -> String {
    let escaped = postern_proto::text::escape(text);
    if escaped.len() <= MAX_AUDIT_TEXT_BYTES {
        return escaped.into_owned();
    }
    let mut end = MAX_AUDIT_TEXT_BYTES;
    while !escaped.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &escaped[..end])
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
    let (actor_text, target, detail) =
        (recordable(&actor.0), recordable(target), recordable(detail));
    let event = NewAuditEvent {
        actor: &actor_text,
        action,
        target: &target,
        outcome,
        detail: &detail,
        request_id,
    };
    if let Err(e) = store.record(&event).await {
        tracing::error!(error = %e, actor = %actor.0, action, target, "cannot write the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_text_is_escaped_and_bounded() {
        assert_eq!(recordable("registration:host-1"), "registration:host-1");
        assert_eq!(recordable("a\n\x1b[31mb"), "a\\n\\x1b[31mb");
        let long = recordable(&"é".repeat(MAX_AUDIT_TEXT_BYTES));
        assert!(long.len() <= MAX_AUDIT_TEXT_BYTES + '…'.len_utf8());
        assert!(long.ends_with('…'));
    }
}
