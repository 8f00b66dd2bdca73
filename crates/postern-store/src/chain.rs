//! Tamper evidence for the audit and sign-in logs: each record carries the SHA-256 of the
//! previous record of its log, and its own hash over a canonical encoding of its fields and that
//! previous hash, both computed in the transaction that inserts it.
//!
//! `log_heads` holds, per log, the last sequence number and hash (so a deleted newest record is
//! found too) and the *anchor*: the sequence number and previous hash of the oldest record kept.
//! Retention deletes from the oldest end and moves the anchor in the same transaction, so pruning
//! never breaks verification.
//!
//! The hash has no key: it finds a record changed, inserted or deleted by someone who edits the
//! database by hand without recomputing every later hash and the head. Against someone who does,
//! the copy already exported to a SIEM is the evidence.

use sha2::{Digest, Sha256};
use sqlx::{Row, Sqlite, Transaction};

use crate::hex;

/// The previous hash of a log's first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain separation: a hash of this encoding is never the hash of something else.
const ENCODING_TAG: &[u8] = b"postern-log-record-v1";

/// One of the chained logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Log {
    Audit,
    Signins,
}

impl Log {
    pub const ALL: [Log; 2] = [Log::Audit, Log::Signins];

    pub fn as_str(self) -> &'static str {
        match self {
            Log::Audit => "audit",
            Log::Signins => "signins",
        }
    }

    pub fn parse(s: &str) -> Option<Log> {
        Log::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// The canonical encoding of a record: a tag, the previous hash, then every field as its
/// length (8 bytes, big-endian) and its UTF-8 bytes, in a fixed order. No field can run into the
/// next, so two different records never share an encoding.
pub fn record_hash(prev_hash: &str, fields: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(ENCODING_TAG);
    for f in std::iter::once(prev_hash).chain(fields.iter().copied()) {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f.as_bytes());
    }
    hex(&h.finalize())
}

/// Reserves the next sequence number of `log` in `tx` and returns it with the previous hash.
/// The first statement is a write, so the transaction holds SQLite's write lock from here on and
/// no other insert can take the same number or the same previous hash.
pub(crate) async fn next(
    tx: &mut Transaction<'_, Sqlite>,
    log: Log,
) -> Result<(i64, String), sqlx::Error> {
    let row = sqlx::query("UPDATE log_heads SET seq = seq + 1 WHERE log = ? RETURNING seq, hash")
        .bind(log.as_str())
        .fetch_one(&mut **tx)
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Records `hash` as the head of `log` (after [`next`] and the insert).
pub(crate) async fn advance(
    tx: &mut Transaction<'_, Sqlite>,
    log: Log,
    hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE log_heads SET hash = ? WHERE log = ?")
        .bind(hash)
        .bind(log.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Moves `log`'s anchor past record `seq` (whose hash is `hash`), which retention deleted with
/// everything before it: the chain now starts at `seq + 1`, linked to `hash`.
pub(crate) async fn anchor_after(
    tx: &mut Transaction<'_, Sqlite>,
    log: Log,
    seq: i64,
    hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE log_heads SET anchor_seq = ?, anchor_hash = ? WHERE log = ?")
        .bind(seq + 1)
        .bind(hash)
        .bind(log.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What is wrong with a log, at the first record where it goes wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Broken {
    /// The record's fields or links do not hash to what is stored.
    Altered { id: i64 },
    /// The record with this sequence number is gone.
    Missing { id: i64 },
    /// A record the log never wrote: beyond its head.
    Inserted { id: i64 },
}

impl Broken {
    pub fn id(&self) -> i64 {
        match self {
            Broken::Altered { id } | Broken::Missing { id } | Broken::Inserted { id } => *id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Broken::Altered { .. } => "altered",
            Broken::Missing { .. } => "missing",
            Broken::Inserted { .. } => "inserted",
        }
    }
}

/// One stored record as verification sees it.
#[derive(Clone, Debug)]
pub struct Linked {
    pub id: i64,
    pub prev_hash: String,
    pub hash: String,
    /// The hash recomputed from the record's fields and its stored previous hash.
    pub computed: String,
}

/// Where a log starts and ends.
#[derive(Clone, Debug)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
    pub anchor_seq: i64,
    pub anchor_hash: String,
}

/// Walks the records of a log in order (pure: the caller reads them, page by page) and stops at
/// the first break.
pub struct Walker {
    head: Head,
    expect_id: i64,
    expect_prev: String,
}

impl Walker {
    pub fn new(head: Head) -> Walker {
        Walker {
            expect_id: head.anchor_seq,
            expect_prev: head.anchor_hash.clone(),
            head,
        }
    }

    /// Checks the next record (records come sorted by id).
    pub fn step(&mut self, r: Linked) -> Result<(), Broken> {
        if r.id > self.head.seq {
            return Err(Broken::Inserted { id: r.id });
        }
        if r.id < self.expect_id {
            // Before the anchor: kept although retention moved past it, or put there by hand.
            return Err(Broken::Inserted { id: r.id });
        }
        if r.id > self.expect_id {
            return Err(Broken::Missing { id: self.expect_id });
        }
        if r.computed != r.hash || r.prev_hash != self.expect_prev {
            return Err(Broken::Altered { id: r.id });
        }
        self.expect_id = r.id + 1;
        self.expect_prev = r.hash;
        Ok(())
    }

    /// After the last record: the log must reach its head.
    pub fn finish(self) -> Result<(), Broken> {
        if self.expect_id <= self.head.seq {
            return Err(Broken::Missing { id: self.expect_id });
        }
        if self.expect_prev != self.head.hash {
            // The newest record was replaced by one that hashes consistently but is not the one
            // the head recorded.
            return Err(Broken::Altered { id: self.head.seq });
        }
        Ok(())
    }
}

/// [`Walker`] over a whole log at once.
#[cfg(test)]
pub fn verify(head: &Head, records: impl IntoIterator<Item = Linked>) -> Option<Broken> {
    let mut w = Walker::new(head.clone());
    for r in records {
        if let Err(b) = w.step(r) {
            return Some(b);
        }
    }
    w.finish().err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> (Head, Vec<Linked>) {
        let mut prev = GENESIS_HASH.to_owned();
        let mut out = Vec::new();
        for id in 1..=n {
            let h = record_hash(&prev, &[&id.to_string(), "x"]);
            out.push(Linked {
                id,
                prev_hash: prev.clone(),
                hash: h.clone(),
                computed: h.clone(),
            });
            prev = h;
        }
        let head = Head {
            seq: n,
            hash: prev,
            anchor_seq: 1,
            anchor_hash: GENESIS_HASH.to_owned(),
        };
        (head, out)
    }

    fn check(edit: impl FnOnce(&mut Head, &mut Vec<Linked>), expected: Option<Broken>) {
        let (mut head, mut records) = chain(5);
        edit(&mut head, &mut records);
        assert_eq!(verify(&head, records), expected);
    }

    #[test]
    fn the_first_break_is_named() {
        check(|_, _| {}, None);
        check(
            |_, r| r[2].computed = "changed".into(),
            Some(Broken::Altered { id: 3 }),
        );
        check(|_, r| drop(r.remove(1)), Some(Broken::Missing { id: 2 }));
        check(|_, r| drop(r.pop()), Some(Broken::Missing { id: 5 }));
        check(|_, r| drop(r.remove(0)), Some(Broken::Missing { id: 1 }));
        check(
            |_, r| {
                let mut extra = r[4].clone();
                extra.id = 6;
                r.push(extra);
            },
            Some(Broken::Inserted { id: 6 }),
        );
        // Pruned from the oldest end with the anchor moved: intact.
        check(
            |h, r| {
                let kept = r.split_off(2);
                h.anchor_seq = 3;
                h.anchor_hash = kept[0].prev_hash.clone();
                *r = kept;
            },
            None,
        );
        // Pruned by hand without the anchor: the oldest ones are missing.
        check(|_, r| drop(r.drain(..2)), Some(Broken::Missing { id: 1 }));
        // A consistent replacement of the newest record still differs from the head.
        check(
            |_, r| {
                let prev = r[3].hash.clone();
                let h = record_hash(&prev, &["5", "forged"]);
                r[4].hash = h.clone();
                r[4].computed = h;
            },
            Some(Broken::Altered { id: 5 }),
        );
        // An empty log whose anchor is past its head is intact.
        check(
            |h, r| {
                r.clear();
                h.anchor_seq = 6;
                h.anchor_hash = h.hash.clone();
            },
            None,
        );
    }

    #[test]
    fn fields_cannot_run_into_each_other() {
        assert_ne!(
            record_hash("p", &["ab", "c"]),
            record_hash("p", &["a", "bc"])
        );
        assert_ne!(record_hash("p", &["a"]), record_hash("q", &["a"]));
    }
}
