//! Identity protection at the edge, for every issuer: each verified sign-in (the callback, a
//! bearer token verified afresh) is judged by `postern_policy::risk` against the user's earlier
//! sign-ins and the operator's anonymizer list (`--anonymizer-list`); what it finds is stored as
//! detections, raises the user's risk, and sets the sign-in risk the policies see. Every other
//! request's sign-in risk is what its address shows now (an address on the list is medium).
//!
//! **Bounds:** the list file is read up to [`ANONYMIZER_LIST_BYTES`] and
//! [`postern_policy::risk::ANONYMIZER_ENTRIES`]; a list that becomes unreadable or malformed
//! keeps the one loaded before (logged). History is [`HISTORY_SIGN_INS`] records.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use postern_auth::session::Session;
use postern_policy::risk::{
    self, Anonymizers, Detection, PastSignIn, SignInFacts, HISTORY_SIGN_INS,
};
use postern_policy::RiskLevel;
use postern_store::{NewDetection, Store};

/// The largest anonymizer list read.
pub const ANONYMIZER_LIST_BYTES: u64 = 64 * 1024 * 1024;
/// How often the list file is checked for a change.
pub const ANONYMIZER_RECHECK: Duration = Duration::from_secs(2);

/// The anonymizer list, reloaded when its file changes.
pub struct Protection {
    anonymizers: ArcSwap<Anonymizers>,
    list: Option<PathBuf>,
    modified: Mutex<Option<SystemTime>>,
}

/// A sign-in to judge.
pub struct Judged<'a> {
    pub session: &'a Session,
    /// The issuer the detections are stored under (the built-in provider's store name for its
    /// own users, so its detections and the edge's count towards one user risk).
    pub issuer: &'a str,
    pub ip: IpAddr,
    pub location: Option<&'a postern_store::Location>,
    pub browser: Option<&'a str>,
    /// The network of an address (`--asn-db`), for this sign-in's and the earlier ones'.
    pub asn_of: &'a (dyn Fn(IpAddr) -> Option<u32> + Sync),
    pub request_id: &'a str,
    pub now_ms: i64,
}

impl Protection {
    /// Reads the list now: a missing, oversized or malformed file stops the edge at start.
    pub fn open(list: Option<&Path>) -> Result<Protection, String> {
        let (anonymizers, modified) = match list {
            Some(path) => {
                let (a, m) = read_list(path)?;
                tracing::info!(path = %path.display(), entries = a.len(), "anonymizer list loaded");
                (a, Some(m))
            }
            None => (Anonymizers::default(), None),
        };
        Ok(Protection {
            anonymizers: ArcSwap::from_pointee(anonymizers),
            list: list.map(Path::to_path_buf),
            modified: Mutex::new(modified),
        })
    }

    /// Whether `ip` is on the anonymizer list.
    pub fn anonymized(&self, ip: IpAddr) -> bool {
        self.anonymizers.load().contains(ip)
    }

    /// A request's sign-in risk when no sign-in is judged: what its address shows.
    pub fn request_risk(&self, ip: IpAddr) -> RiskLevel {
        if self.anonymized(ip) {
            RiskLevel::Medium
        } else {
            RiskLevel::None
        }
    }

    /// Reloads the list if its file changed; a file that cannot be used keeps the old list.
    pub fn recheck(&self) {
        let Some(path) = &self.list else { return };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut seen = self.modified.lock().unwrap_or_else(|e| e.into_inner());
        if modified == *seen {
            return;
        }
        if modified.is_none() {
            // Said once: the file went (or cannot be read); the last list stays.
            tracing::error!(path = %path.display(), "the anonymizer list is gone or unreadable; the previous one stays");
            *seen = None;
            return;
        }
        match read_list(path) {
            Ok((a, m)) => {
                tracing::info!(path = %path.display(), entries = a.len(), "anonymizer list reloaded");
                self.anonymizers.store(Arc::new(a));
                *seen = Some(m);
            }
            Err(e) => {
                tracing::error!(error = %e, "the anonymizer list changed but cannot be used; the previous one stays");
                *seen = modified;
            }
        }
    }

    /// Rechecks the list every [`ANONYMIZER_RECHECK`] while the edge runs.
    pub fn watch(self: &Arc<Self>) {
        if self.list.is_none() {
            return;
        }
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ANONYMIZER_RECHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(p) = this.upgrade() else { return };
                tokio::task::spawn_blocking(move || p.recheck()).await.ok();
            }
        });
    }

    /// Judges a verified sign-in, stores what it finds, and returns its sign-in risk and the
    /// highest level found (which now counts towards the user's risk). A store that cannot
    /// answer judges from the address alone (logged): the sign-in is not refused for it.
    pub async fn judge(&self, store: &Store, s: &Judged<'_>) -> (RiskLevel, Vec<Detection>) {
        let history = match store
            .sign_in_history(
                &s.session.issuer,
                &s.session.subject,
                HISTORY_SIGN_INS as i64,
            )
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the sign-in history; judging the address alone");
                Vec::new()
            }
        };
        let history: Vec<PastSignIn> = history
            .into_iter()
            .filter_map(|r| {
                let ip = r.record.ip_address.parse().ok()?;
                Some(PastSignIn {
                    at: r.record.at_ms / 1000,
                    ip,
                    asn: (s.asn_of)(ip),
                    country: r
                        .record
                        .location
                        .as_ref()
                        .and_then(|l| l.country_or_region.clone()),
                    coordinates: r.record.location.as_ref().and_then(|l| l.coordinates),
                    browser: r.record.browser,
                })
            })
            .collect();
        let facts = SignInFacts {
            ip: s.ip,
            country: s.location.and_then(|l| l.country_or_region.as_deref()),
            coordinates: s.location.and_then(|l| l.coordinates),
            browser: s.browser,
            asn: (s.asn_of)(s.ip),
            at: s.now_ms / 1000,
        };
        let found = risk::assess_sign_in(&facts, &history, &self.anonymizers.load());
        let upn = s.session.email.as_deref().unwrap_or(&s.session.subject);
        for d in &found {
            tracing::warn!(detection = d.kind.as_str(), level = d.level.as_str(), user = upn, ip = %s.ip, detail = %d.detail, "risk detected");
            postern_obs::metrics::risk_detection(d.kind.as_str(), d.level.as_str());
            let new = NewDetection {
                at_ms: s.now_ms,
                issuer: s.issuer.to_owned(),
                subject: s.session.subject.clone(),
                user_principal_name: upn.to_owned(),
                kind: d.kind.as_str().to_owned(),
                level: d.level.as_str().to_owned(),
                ip_address: s.ip.to_string(),
                detail: d.detail.clone(),
                source: "edge".to_owned(),
                correlation_id: s.request_id.to_owned(),
            };
            if let Err(e) = store.record_detection(&new).await {
                tracing::error!(error = %e, "cannot record a risk detection");
            }
        }
        (risk::level_of(&found), found)
    }
}

/// A stored user's risk: their state and the detections standing against them.
pub fn user_level(u: &postern_store::RiskyUser) -> RiskLevel {
    risk::stored_user_risk(&u.state, &u.standing)
}

fn read_list(path: &Path) -> Result<(Anonymizers, SystemTime), String> {
    let fail = |e: String| {
        format!(
            "the anonymizer list {}: {e}; check --anonymizer-list",
            path.display()
        )
    };
    use std::io::Read;
    // A pipe or a device would be read forever (or block the start): only a plain file.
    if !std::fs::metadata(path)
        .map_err(|e| fail(e.to_string()))?
        .is_file()
    {
        return Err(fail("it is not a regular file".to_owned()));
    }
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let modified = file
        .metadata()
        .and_then(|m| m.modified())
        .map_err(|e| fail(e.to_string()))?;
    let mut text = String::new();
    file.take(ANONYMIZER_LIST_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(e.to_string()))?;
    if text.len() as u64 > ANONYMIZER_LIST_BYTES {
        return Err(fail(format!(
            "it is longer than the {ANONYMIZER_LIST_BYTES} bytes read"
        )));
    }
    let list = Anonymizers::parse(&text).map_err(fail)?;
    Ok((list, modified))
}
