//! Recording admin actions and connector lifecycle events in the audit log.
//!
//! **Invariant:** every change an admin makes through the API, and every registration, renewal and
//! revocation, is recorded whether it succeeded or failed, with its actor and request ID. A change
//! is recorded in the store transaction that makes it ([`Audited`]): a change whose record cannot
//! be written does not happen. A refused change made nothing, so its record is written on its own.
//!
//! The actor is always who authenticated (the admin token's ID, the bootstrap token, the
//! connector's certificate, the administrator who approved a device sign-in), never a value
//! from the request body.

use std::sync::Mutex;

use postern_store::{Audit, Outcome, Store};

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

    /// A connector that is not registered yet, known by the registration token it presented
    /// (a prefix of the token's SHA-256, which names it without revealing it).
    pub fn registration_token(token: &str) -> Actor {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(token.as_bytes());
        let prefix: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Actor(format!("registration-token:{prefix}"))
    }

    /// The built-in provider's administrator who approved a connector's device sign-in.
    pub fn approved_by(email: &str) -> Actor {
        Actor(format!("idp-admin:{email}"))
    }

    /// A caller who proved nothing (a registration refused before any credential checked out).
    pub fn unauthenticated() -> Actor {
        Actor("unauthenticated".to_owned())
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

/// One audited change in progress: hands out the store handle that writes its record in the
/// change's transaction, then records a refusal (or a change that committed no transaction).
pub struct Audited {
    base: Store,
    actor: String,
    action: String,
    target: String,
    request_id: String,
    handle: Mutex<Option<Store>>,
}

impl Audited {
    pub fn new(base: &Store, actor: &Actor, action: &str, target: &str, request_id: &str) -> Self {
        Audited {
            base: base.clone(),
            actor: recordable(&actor.0),
            action: action.to_owned(),
            target: recordable(target),
            request_id: request_id.to_owned(),
            handle: Mutex::new(None),
        }
    }

    fn record(&self, action: &str, outcome: Outcome, detail: &str) -> Audit {
        Audit {
            actor: self.actor.clone(),
            action: action.to_owned(),
            target: self.target.clone(),
            outcome,
            detail: recordable(detail),
            request_id: self.request_id.clone(),
        }
    }

    /// The store handle to make the change with: its first committed transaction also writes the
    /// record, with `detail` (what changes).
    pub fn store(&self, detail: &str) -> Store {
        self.store_all(&[(&self.action, detail)])
    }

    /// [`Audited::store`] for a change that is several audited actions at once.
    pub fn store_all(&self, records: &[(&str, &str)]) -> Store {
        let audits = records
            .iter()
            .map(|(action, detail)| self.record(action, Outcome::Success, detail))
            .collect();
        let store = self.base.audited_all(audits);
        *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = Some(store.clone());
        store
    }

    /// After the change: a refusal is recorded on its own (with `detail`, why); a success whose
    /// record no transaction wrote (nothing needed changing) is recorded on its own too.
    pub async fn finish<T>(&self, result: Result<&T, &str>) {
        let handle = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        let written = handle.as_ref().is_some_and(Store::audit_written);
        let audit = match result {
            Err(why) if written => self.record(
                &self.action,
                Outcome::Failure,
                &format!("the change was made and recorded, then: {why}"),
            ),
            Err(why) => self.record(&self.action, Outcome::Failure, why),
            Ok(_) if written => return,
            Ok(_) => self.record(&self.action, Outcome::Success, "no change"),
        };
        self.write(&audit).await;
    }

    /// Records a success that committed nothing to the store (a backup read it all), with
    /// `detail`, what was done.
    pub async fn succeeded(&self, detail: &str) {
        self.write(&self.record(&self.action, Outcome::Success, detail))
            .await;
    }

    async fn write(&self, audit: &Audit) {
        if let Err(e) = self.base.record_audit(audit).await {
            tracing::error!(error = %e, actor = %self.actor, action = %audit.action, target = %self.target, "cannot write the audit log");
        }
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
