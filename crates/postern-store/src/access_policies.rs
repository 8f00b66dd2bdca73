//! Conditional-access policies and named locations, kept as the JSON documents the admin API
//! checked (`postern_policy` compiles them; the store does not read inside). Every change bumps
//! the config version, so each edge reloads and decides with the new set.

use sqlx::Row;

use crate::{bump_version, now, Store, StoreError};

/// Which kind of document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessDoc {
    Policy,
    Location,
}

impl AccessDoc {
    fn as_str(self) -> &'static str {
        match self {
            AccessDoc::Policy => "policy",
            AccessDoc::Location => "location",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            AccessDoc::Policy => "policy",
            AccessDoc::Location => "named location",
        }
    }
}

impl Store {
    /// Every document of `kind` as `(name, JSON)`, in the order they were created.
    pub async fn access_docs(&self, kind: AccessDoc) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT name, doc FROM access_docs WHERE kind = ? ORDER BY rowid")
            .bind(kind.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Creates or replaces the document `name` of `kind` (a replaced one keeps its place).
    /// Returns whether it existed.
    pub async fn put_access_doc(
        &self,
        kind: AccessDoc,
        name: &str,
        doc: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let existed = sqlx::query("UPDATE access_docs SET doc = ? WHERE kind = ? AND name = ?")
            .bind(doc)
            .bind(kind.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if !existed {
            sqlx::query(
                "INSERT INTO access_docs (kind, name, doc, created_at) VALUES (?, ?, ?, ?)",
            )
            .bind(kind.as_str())
            .bind(name)
            .bind(doc)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        bump_version(&mut tx).await?;
        self.commit(tx).await?;
        Ok(existed)
    }

    /// Deletes the document `name` of `kind`.
    pub async fn delete_access_doc(&self, kind: AccessDoc, name: &str) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let gone = sqlx::query("DELETE FROM access_docs WHERE kind = ? AND name = ?")
            .bind(kind.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Err(StoreError::NotFound {
                what: kind.noun(),
                name: name.to_owned(),
            });
        }
        bump_version(&mut tx).await?;
        self.commit(tx).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn documents_are_kept_in_order_replaced_in_place_and_bump_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("s.db")).await.unwrap();
        let v0 = store.config_version().await.unwrap();
        assert!(!store
            .put_access_doc(AccessDoc::Policy, "b", "{\"v\":1}")
            .await
            .unwrap());
        store
            .put_access_doc(AccessDoc::Policy, "a", "{}")
            .await
            .unwrap();
        assert!(store
            .put_access_doc(AccessDoc::Policy, "b", "{\"v\":2}")
            .await
            .unwrap());
        store
            .put_access_doc(AccessDoc::Location, "office", "{}")
            .await
            .unwrap();
        assert_eq!(
            store.access_docs(AccessDoc::Policy).await.unwrap(),
            [
                ("b".to_owned(), "{\"v\":2}".to_owned()),
                ("a".to_owned(), "{}".to_owned())
            ]
        );
        assert_eq!(
            store.access_docs(AccessDoc::Location).await.unwrap().len(),
            1
        );
        assert_eq!(store.config_version().await.unwrap(), v0 + 4);
        store
            .delete_access_doc(AccessDoc::Policy, "b")
            .await
            .unwrap();
        assert!(matches!(
            store.delete_access_doc(AccessDoc::Policy, "b").await,
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(store.access_docs(AccessDoc::Policy).await.unwrap().len(), 1);
    }
}
