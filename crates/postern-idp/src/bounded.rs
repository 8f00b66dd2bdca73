//! A table for what the provider keeps in memory for callers who have not signed in yet (the
//! sign-ins they started, their passkey challenges): bounded in entries and in bytes, per
//! address and per client, and when a bound is reached the *oldest* entry goes. So a flood from
//! one address only ever pushes out its own entries, a flood against one client only that
//! client's, and a new entry is always taken: a flood can never make a new sign-in fail.
//!
//! A pure structure: time (Unix seconds) is a parameter.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// The bounds of one table.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// Entries in all.
    pub max_entries: usize,
    /// Bytes in all, as the entries' owners estimate them (see [`Table::insert`]).
    pub max_bytes: usize,
    /// Entries of one address.
    pub per_address: usize,
    /// Entries of one client.
    pub per_client: usize,
    /// How long an entry lives, in seconds.
    pub lifetime_secs: i64,
}

/// What every entry costs besides its own bytes: its ID, the indexes, the map's slot.
const ENTRY_OVERHEAD_BYTES: usize = 160;

struct Slot<V> {
    value: V,
    address: IpAddr,
    client: String,
    created_at: i64,
    seq: u64,
    bytes: usize,
}

/// Entries by ID, bounded by [`Caps`].
pub struct Table<V> {
    caps: Caps,
    next_seq: u64,
    entries: HashMap<String, Slot<V>>,
    /// Insertion order, oldest first.
    by_age: BTreeMap<u64, String>,
    by_address: HashMap<IpAddr, BTreeSet<u64>>,
    by_client: HashMap<String, BTreeSet<u64>>,
    bytes: usize,
}

impl<V> Table<V> {
    pub fn new(caps: Caps) -> Table<V> {
        Table {
            caps,
            next_seq: 0,
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
            by_address: HashMap::new(),
            by_client: HashMap::new(),
            bytes: 0,
        }
    }

    /// Adds `value` under `id` for `address` and `client`, costing `bytes` (the sizes of the
    /// strings it holds), first evicting whatever the caps ask for, oldest first. Returns how
    /// many entries were evicted.
    pub fn insert(
        &mut self,
        id: String,
        value: V,
        address: IpAddr,
        client: &str,
        bytes: usize,
        now: i64,
    ) -> usize {
        self.sweep(now);
        self.remove(&id);
        let bytes = bytes + id.len() + client.len() + ENTRY_OVERHEAD_BYTES;
        let mut evicted = 0;
        while self
            .by_address
            .get(&address)
            .is_some_and(|s| s.len() >= self.caps.per_address)
        {
            evicted += self.evict_first_of(Index::Address(address));
        }
        while self
            .by_client
            .get(client)
            .is_some_and(|s| s.len() >= self.caps.per_client)
        {
            evicted += self.evict_first_of(Index::Client(client));
        }
        while !self.entries.is_empty()
            && (self.entries.len() >= self.caps.max_entries
                || self.bytes + bytes > self.caps.max_bytes)
        {
            evicted += self.evict_first_of(Index::All);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_age.insert(seq, id.clone());
        self.by_address.entry(address).or_default().insert(seq);
        self.by_client
            .entry(client.to_owned())
            .or_default()
            .insert(seq);
        self.bytes += bytes;
        self.entries.insert(
            id,
            Slot {
                value,
                address,
                client: client.to_owned(),
                created_at: now,
                seq,
                bytes,
            },
        );
        evicted
    }

    fn live(&self, slot: &Slot<V>, now: i64) -> bool {
        now < slot.created_at.saturating_add(self.caps.lifetime_secs)
    }

    /// The live entry `id`.
    pub fn get(&self, id: &str, now: i64) -> Option<&V> {
        self.entries
            .get(id)
            .filter(|s| self.live(s, now))
            .map(|s| &s.value)
    }

    pub fn get_mut(&mut self, id: &str, now: i64) -> Option<&mut V> {
        let lifetime = self.caps.lifetime_secs;
        self.entries
            .get_mut(id)
            .filter(|s| now < s.created_at.saturating_add(lifetime))
            .map(|s| &mut s.value)
    }

    /// Takes the entry `id` out, if it is live (a challenge is answered once).
    pub fn take(&mut self, id: &str, now: i64) -> Option<V> {
        let slot = self.remove(id)?;
        (now < slot.created_at.saturating_add(self.caps.lifetime_secs)).then_some(slot.value)
    }

    /// Removes the entry `id`, live or not.
    pub fn remove_entry(&mut self, id: &str) -> Option<V> {
        self.remove(id).map(|s| s.value)
    }

    /// Drops the expired entries, giving their memory back.
    pub fn sweep(&mut self, now: i64) {
        while let Some((_, id)) = self.by_age.first_key_value() {
            let expired = self.entries.get(id).is_none_or(|s| !self.live(s, now));
            if !expired {
                break;
            }
            let id = id.clone();
            self.remove(&id);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bytes the entries are estimated to hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn remove(&mut self, id: &str) -> Option<Slot<V>> {
        let slot = self.entries.remove(id)?;
        self.by_age.remove(&slot.seq);
        if let Some(set) = self.by_address.get_mut(&slot.address) {
            set.remove(&slot.seq);
            if set.is_empty() {
                self.by_address.remove(&slot.address);
            }
        }
        if let Some(set) = self.by_client.get_mut(&slot.client) {
            set.remove(&slot.seq);
            if set.is_empty() {
                self.by_client.remove(&slot.client);
            }
        }
        self.bytes -= slot.bytes;
        Some(slot)
    }

    /// Evicts the oldest entry of an index; returns how many went (0 only if it was empty).
    fn evict_first_of(&mut self, index: Index<'_>) -> usize {
        let seq = match index {
            Index::All => self.by_age.keys().next(),
            Index::Address(a) => self.by_address.get(&a).and_then(|s| s.iter().next()),
            Index::Client(c) => self.by_client.get(c).and_then(|s| s.iter().next()),
        };
        let Some(id) = seq.and_then(|seq| self.by_age.get(seq)).cloned() else {
            return 0;
        };
        usize::from(self.remove(&id).is_some())
    }
}

enum Index<'a> {
    All,
    Address(IpAddr),
    Client(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const CAPS: Caps = Caps {
        max_entries: 10,
        max_bytes: 10 * (ENTRY_OVERHEAD_BYTES + 110),
        per_address: 3,
        per_client: 5,
        lifetime_secs: 60,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    /// Inserts `n` entries named `{prefix}{i}` from `address` for `client` at `now`.
    fn fill(t: &mut Table<u32>, prefix: &str, n: u32, address: IpAddr, client: &str, now: i64) {
        for i in 0..n {
            t.insert(format!("{prefix}{i}"), i, address, client, 0, now);
        }
    }

    #[test]
    fn one_address_only_pushes_out_its_own_oldest() {
        let mut t = Table::new(CAPS);
        t.insert("user".into(), 0, ip(2), "c", 0, 0);
        fill(&mut t, "a", 1000, ip(1), "c", 0);
        assert_eq!(t.get("user", 1), Some(&0), "another address's entry stays");
        assert_eq!(t.get("a0", 1), None, "the oldest of the flood went");
        assert_eq!(t.get("a999", 1), Some(&999), "the newest stays");
        assert_eq!(t.len(), 1 + CAPS.per_address);
    }

    #[test]
    fn one_client_only_pushes_out_its_own_oldest() {
        let mut t = Table::new(CAPS);
        t.insert("other".into(), 0, ip(200), "d", 0, 0);
        for a in 0..50u8 {
            t.insert(format!("c{a}"), 0, ip(a), "c", 0, 0);
        }
        assert!(t.get("other", 1).is_some());
        assert!(t.get("c0", 1).is_none());
        assert!(t.get("c49", 1).is_some());
        assert_eq!(t.len(), 1 + CAPS.per_client);
    }

    #[test]
    fn totals_in_entries_and_bytes_evict_the_oldest_and_always_take_the_new() {
        let cases: &[(&str, usize, usize)] = &[
            // (what, bytes per entry, entries kept)
            ("entries", 0, CAPS.max_entries),
            ("bytes", 100, CAPS.max_entries),
            ("bytes", 400, 4),
        ];
        for (what, bytes, kept) in cases {
            let mut t = Table::new(Caps {
                per_address: 1000,
                per_client: 1000,
                ..CAPS
            });
            for i in 0..100u32 {
                t.insert(format!("e{i}"), i, ip(i as u8), "c", *bytes, 0);
                assert!(
                    t.get(&format!("e{i}"), 0).is_some(),
                    "{what}: the new one is in"
                );
            }
            assert_eq!(t.len(), *kept, "{what} {bytes}");
            assert!(t.bytes() <= CAPS.max_bytes, "{what}");
            assert!(t.get("e99", 0).is_some() && t.get("e0", 0).is_none());
        }
    }

    #[test]
    fn entries_expire_are_taken_once_and_the_sweep_frees_them() {
        let mut t = Table::new(CAPS);
        fill(&mut t, "x", 3, ip(1), "c", 0);
        assert_eq!(t.take("x0", 59), Some(0));
        assert_eq!(t.take("x0", 59), None, "once");
        assert_eq!(t.take("x1", 60), None, "expired");
        assert!(t.get("x2", 60).is_none());
        *t.get_mut("x2", 59).unwrap() = 7;
        assert_eq!(t.remove_entry("x2"), Some(7));
        fill(&mut t, "y", 3, ip(1), "c", 100);
        t.sweep(159);
        assert_eq!(t.len(), 3);
        t.sweep(160);
        assert!(t.is_empty());
        assert_eq!(t.bytes(), 0, "every byte accounted for is given back");
    }
}
