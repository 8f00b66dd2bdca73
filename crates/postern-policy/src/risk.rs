//! Identity protection as pure functions: what one sign-in, the user's recent history and the
//! recent failures say about the risk of a sign-in, with Entra ID Protection's detection names
//! and levels. The caller brings the history, the anonymizer list and the clock; nothing here
//! reads a file, the store or the time.
//!
//! Signals the edge sees for any issuer (address, place, browser, travel) are judged by
//! [`assess_sign_in`]; those only the built-in provider sees (failures across accounts, a known
//! leaked password) by [`assess_failures`] and [`LeakedPasswords`]' caller.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::RiskLevel;

/// A known place: `(latitude, longitude)` in degrees.
pub type Coordinates = (f64, f64);

/// What a detection found, named as Entra ID Protection names its `riskEventType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DetectionKind {
    /// The address is a Tor exit node or an anonymizing VPN on the operator's list.
    #[serde(rename = "anonymizedIPAddress")]
    AnonymizedIpAddress,
    /// Two sign-ins farther apart than anyone could travel in the time between them.
    #[serde(rename = "unlikelyTravel")]
    UnlikelyTravel,
    /// A country or browser this user has not signed in with, once their habits are learnt.
    #[serde(rename = "unfamiliarFeatures")]
    UnfamiliarFeatures,
    /// One address failing against many accounts.
    #[serde(rename = "passwordSpray")]
    PasswordSpray,
    /// The user's password is in the operator's list of leaked passwords.
    #[serde(rename = "leakedCredentials")]
    LeakedCredentials,
    /// Many failed passwords against one account.
    #[serde(rename = "bruteForce")]
    BruteForce,
}

impl DetectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DetectionKind::AnonymizedIpAddress => "anonymizedIPAddress",
            DetectionKind::UnlikelyTravel => "unlikelyTravel",
            DetectionKind::UnfamiliarFeatures => "unfamiliarFeatures",
            DetectionKind::PasswordSpray => "passwordSpray",
            DetectionKind::LeakedCredentials => "leakedCredentials",
            DetectionKind::BruteForce => "bruteForce",
        }
    }

    pub fn parse(s: &str) -> Option<DetectionKind> {
        [
            DetectionKind::AnonymizedIpAddress,
            DetectionKind::UnlikelyTravel,
            DetectionKind::UnfamiliarFeatures,
            DetectionKind::PasswordSpray,
            DetectionKind::LeakedCredentials,
            DetectionKind::BruteForce,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One detection: what, how risky, and a sentence an administrator reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub kind: DetectionKind,
    pub level: RiskLevel,
    pub detail: String,
}

/// A sign-in's risk: the highest of its detections.
pub fn level_of(detections: &[Detection]) -> RiskLevel {
    detections
        .iter()
        .map(|d| d.level)
        .max()
        .unwrap_or(RiskLevel::None)
}

/// The sign-in being judged.
#[derive(Clone, Copy, Debug)]
pub struct SignInFacts<'a> {
    pub ip: IpAddr,
    /// ISO 3166-1 alpha-2, when a location database knows the address.
    pub country: Option<&'a str>,
    pub coordinates: Option<Coordinates>,
    pub browser: Option<&'a str>,
    /// The network (autonomous system number), when an ASN database knows the address.
    pub asn: Option<u32>,
    /// Seconds since the Unix epoch.
    pub at: i64,
}

/// An earlier successful sign-in of the same user.
#[derive(Clone, Debug, PartialEq)]
pub struct PastSignIn {
    pub at: i64,
    pub ip: IpAddr,
    pub country: Option<String>,
    pub coordinates: Option<Coordinates>,
    pub browser: Option<String>,
    pub asn: Option<u32>,
}

/// Sign-ins further apart than this are never "unlikely travel" (a city's size, and the error of
/// a location database).
pub const TRAVEL_MIN_KM: f64 = 500.0;
/// Faster than an airliner: unlikely travel, medium risk.
pub const TRAVEL_MEDIUM_KMH: f64 = 1_000.0;
/// Faster than anything: high risk.
pub const TRAVEL_HIGH_KMH: f64 = 5_000.0;
/// A user's habits are learnt after this many successful sign-ins…
pub const LEARNING_SIGN_INS: usize = 10;
/// …or once the first of them is this old, whichever comes first.
pub const LEARNING_SECONDS: i64 = 5 * 24 * 3600;
/// How many of the user's most recent sign-ins the edge brings to [`assess_sign_in`].
pub const HISTORY_SIGN_INS: usize = 50;

/// The operator's anonymizer list (Tor exits, VPN ranges): one address or CIDR per line, `#`
/// comments. Kept as merged, sorted ranges per family, so a lookup is a binary search.
#[derive(Clone, Debug, Default)]
pub struct Anonymizers {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    entries: usize,
}

/// The most entries an anonymizer list may hold.
pub const ANONYMIZER_ENTRIES: usize = 1_000_000;

impl Anonymizers {
    /// Parses a list; a line that is neither an address nor a CIDR is refused with its number.
    pub fn parse(text: &str) -> Result<Anonymizers, String> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut entries = 0;
        for (n, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("line {}: {entry:?} is neither an address nor a CIDR", n + 1)
                })?;
            if entries == ANONYMIZER_ENTRIES {
                return Err(format!(
                    "more than {ANONYMIZER_ENTRIES} entries; split the list or aggregate ranges"
                ));
            }
            entries += 1;
            match crate::unmapped_net(net) {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Ok(Anonymizers {
            v4: merged(v4),
            v6: merged(v6),
            entries,
        })
    }

    /// Entries read (before merging).
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Whether `ip` is on the list.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match crate::unmapped(ip) {
            IpAddr::V4(a) => within(&self.v4, u32::from(a)),
            IpAddr::V6(a) => within(&self.v6, u128::from(a)),
        }
    }
}

/// Sorted, non-overlapping ranges covering the same addresses as `ranges`.
fn merged<T: Ord + Copy>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

fn within<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|r| r.0 <= x);
    i > 0 && ranges[i - 1].1 >= x
}

/// Great-circle distance in kilometres.
pub fn distance_km(a: Coordinates, b: Coordinates) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6_371.0;
    let (la1, lo1) = (a.0.to_radians(), a.1.to_radians());
    let (la2, lo2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// The detections of a successful sign-in, from the user's earlier successful sign-ins
/// (`history`, any order) and the anonymizer list.
pub fn assess_sign_in(
    facts: &SignInFacts<'_>,
    history: &[PastSignIn],
    anonymizers: &Anonymizers,
) -> Vec<Detection> {
    let mut found = Vec::new();
    if anonymizers.contains(facts.ip) {
        found.push(Detection {
            kind: DetectionKind::AnonymizedIpAddress,
            level: RiskLevel::Medium,
            detail: format!("{} is on the anonymizer list", facts.ip),
        });
    }
    if let Some(d) = unlikely_travel(facts, history) {
        found.push(d);
    }
    if let Some(d) = unfamiliar(facts, history) {
        found.push(d);
    }
    found
}

fn unlikely_travel(facts: &SignInFacts<'_>, history: &[PastSignIn]) -> Option<Detection> {
    let here = facts.coordinates?;
    // The latest earlier sign-in with a place.
    let last = history
        .iter()
        .filter(|p| p.at <= facts.at && p.coordinates.is_some())
        .max_by_key(|p| p.at)?;
    let there = last.coordinates?;
    let km = distance_km(there, here);
    if km < TRAVEL_MIN_KM {
        return None;
    }
    // Same second: as fast as it gets.
    let hours = ((facts.at - last.at).max(1) as f64) / 3600.0;
    let kmh = km / hours;
    let level = if kmh >= TRAVEL_HIGH_KMH {
        RiskLevel::High
    } else if kmh >= TRAVEL_MEDIUM_KMH {
        RiskLevel::Medium
    } else {
        return None;
    };
    let place = |c: &Option<String>| c.clone().unwrap_or_else(|| "an unknown country".into());
    Some(Detection {
        kind: DetectionKind::UnlikelyTravel,
        level,
        detail: format!(
            "{km:.0} km from the sign-in {} minutes earlier (from {} in {}), {kmh:.0} km/h",
            (facts.at - last.at) / 60,
            last.ip,
            place(&last.country),
        ),
    })
}

fn unfamiliar(facts: &SignInFacts<'_>, history: &[PastSignIn]) -> Option<Detection> {
    let earlier: Vec<&PastSignIn> = history.iter().filter(|p| p.at <= facts.at).collect();
    let first = earlier.iter().map(|p| p.at).min()?;
    let learnt = earlier.len() >= LEARNING_SIGN_INS || facts.at - first >= LEARNING_SECONDS;
    if !learnt {
        return None;
    }
    let mut new = Vec::new();
    if let Some(c) = facts.country {
        if !earlier.iter().any(|p| {
            p.country
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case(c))
        }) {
            new.push(format!("country {c}"));
        }
    }
    if let Some(b) = facts.browser {
        if !earlier.iter().any(|p| p.browser.as_deref() == Some(b)) {
            new.push(format!("browser {b}"));
        }
    }
    if let Some(asn) = facts.asn {
        if !earlier.iter().any(|p| p.asn == Some(asn)) {
            new.push(format!("network AS{asn}"));
        }
    }
    let level = match new.len() {
        0 => return None,
        1 => RiskLevel::Low,
        _ => RiskLevel::Medium,
    };
    Some(Detection {
        kind: DetectionKind::UnfamiliarFeatures,
        level,
        detail: format!("new for this user: {}", new.join(", ")),
    })
}

/// A recent failed password at the built-in provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub at: i64,
    pub ip: IpAddr,
    /// The account tried (as typed, lower-cased by the caller).
    pub account: String,
}

/// Failures this far back count.
pub const FAILURE_WINDOW_SECONDS: i64 = 3600;
/// One address failing against this many distinct accounts in the window is a spray.
pub const SPRAY_ACCOUNTS: usize = 10;
/// This many failures against one account in the window is brute force (medium)…
pub const BRUTE_FORCE_FAILURES: usize = 10;
/// …and this many, high.
pub const BRUTE_FORCE_HIGH_FAILURES: usize = 50;

/// What the recent failures say about an attempt on `account` from `ip` at `now` (`failures`
/// includes this attempt's when it failed). A spray is charged to the address and to each
/// account it tried; brute force to the account.
pub fn assess_failures(
    failures: &[Failure],
    account: &str,
    ip: IpAddr,
    now: i64,
) -> Vec<Detection> {
    let recent = |f: &&Failure| now - f.at <= FAILURE_WINDOW_SECONDS && f.at <= now;
    let mut found = Vec::new();
    let mut accounts: Vec<&str> = failures
        .iter()
        .filter(recent)
        .filter(|f| f.ip == ip)
        .map(|f| f.account.as_str())
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    // Every account the address tries once it has sprayed is charged: high when it was among
    // those sprayed, medium otherwise (the spray's hit, or a neighbour behind the same NAT).
    if accounts.len() >= SPRAY_ACCOUNTS {
        found.push(Detection {
            kind: DetectionKind::PasswordSpray,
            level: if accounts.contains(&account) {
                RiskLevel::High
            } else {
                RiskLevel::Medium
            },
            detail: format!(
                "{ip} failed against {} accounts within {} minutes",
                accounts.len(),
                FAILURE_WINDOW_SECONDS / 60
            ),
        });
    }
    let against = failures
        .iter()
        .filter(recent)
        .filter(|f| f.account == account)
        .count();
    let level = if against >= BRUTE_FORCE_HIGH_FAILURES {
        RiskLevel::High
    } else if against >= BRUTE_FORCE_FAILURES {
        RiskLevel::Medium
    } else {
        RiskLevel::None
    };
    if level != RiskLevel::None {
        found.push(Detection {
            kind: DetectionKind::BruteForce,
            level,
            detail: format!(
                "{against} failed passwords for this account within {} minutes",
                FAILURE_WINDOW_SECONDS / 60
            ),
        });
    }
    found
}

/// The leaked-credentials detection for a password found in the operator's list `count` times.
pub fn leaked(count: u64) -> Detection {
    Detection {
        kind: DetectionKind::LeakedCredentials,
        level: RiskLevel::High,
        detail: format!("the password appears {count} times in the leaked-passwords list"),
    }
}

/// Looks `sha1_hex` (40 upper-case hex digits) up in one range file of the public
/// pwned-passwords format: lines `SUFFIX:COUNT`, the 35 hex digits after the file's 5-digit
/// prefix. Returns the count when found. Lines that do not fit the format are skipped.
pub fn range_lookup(range_file: &str, sha1_hex: &str) -> Option<u64> {
    let suffix = sha1_hex.get(5..)?;
    range_file.lines().find_map(|line| {
        let (s, count) = line.trim().split_once(':')?;
        s.eq_ignore_ascii_case(suffix)
            .then(|| count.trim().parse().unwrap_or(1))
    })
}

/// What an administrator decided about a user's risk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RiskState {
    /// Detections stand.
    AtRisk,
    /// An administrator confirmed the account compromised: high until dismissed.
    ConfirmedCompromised,
    /// An administrator dismissed the detections.
    Dismissed,
}

impl RiskState {
    pub fn as_str(self) -> &'static str {
        match self {
            RiskState::AtRisk => "atRisk",
            RiskState::ConfirmedCompromised => "confirmedCompromised",
            RiskState::Dismissed => "dismissed",
        }
    }

    pub fn parse(s: &str) -> Option<RiskState> {
        [
            RiskState::AtRisk,
            RiskState::ConfirmedCompromised,
            RiskState::Dismissed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Detections older than this no longer count towards user risk.
pub const USER_RISK_DAYS: i64 = 90;

/// A user's risk from the levels of the detections standing against them (those since the last
/// dismissal, within [`USER_RISK_DAYS`]) and the administrator's decision.
/// [`user_risk`] of a user as the store keeps them: the state's and levels' names (an unknown
/// state counts as at risk, an unknown level as none).
pub fn stored_user_risk(state: &str, standing: &[String]) -> RiskLevel {
    user_risk(
        RiskState::parse(state).unwrap_or(RiskState::AtRisk),
        standing.iter().filter_map(|l| RiskLevel::parse(l)),
    )
}

pub fn user_risk(state: RiskState, standing: impl IntoIterator<Item = RiskLevel>) -> RiskLevel {
    match state {
        RiskState::ConfirmedCompromised => RiskLevel::High,
        RiskState::Dismissed | RiskState::AtRisk => {
            standing.into_iter().max().unwrap_or(RiskLevel::None)
        }
    }
}

impl RiskLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::None => "none",
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
        }
    }

    pub fn parse(s: &str) -> Option<RiskLevel> {
        [
            RiskLevel::None,
            RiskLevel::Low,
            RiskLevel::Medium,
            RiskLevel::High,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;
    const PARIS: Coordinates = (48.8566, 2.3522);
    const SYDNEY: Coordinates = (-33.8688, 151.2093);
    const LYON: Coordinates = (45.764, 4.8357);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn past(at: i64, country: &str, coordinates: Coordinates, browser: &str) -> PastSignIn {
        PastSignIn {
            at,
            ip: ip("198.51.100.1"),
            country: Some(country.into()),
            coordinates: Some(coordinates),
            browser: Some(browser.into()),
            asn: Some(64500),
        }
    }

    fn facts<'a>(at: i64, country: &'a str, c: Coordinates, browser: &'a str) -> SignInFacts<'a> {
        SignInFacts {
            ip: ip("203.0.113.9"),
            country: Some(country),
            coordinates: Some(c),
            browser: Some(browser),
            asn: Some(64500),
            at,
        }
    }

    fn kinds(d: &[Detection]) -> Vec<(DetectionKind, RiskLevel)> {
        d.iter().map(|d| (d.kind, d.level)).collect()
    }

    #[test]
    fn distances_are_great_circles() {
        let d = distance_km(PARIS, SYDNEY);
        assert!((16_900.0..17_000.0).contains(&d), "{d}");
        assert!(distance_km(PARIS, PARIS) < 1e-6);
        let d = distance_km(PARIS, LYON);
        assert!((390.0..395.0).contains(&d), "{d}");
    }

    #[test]
    fn travel_table() {
        let t0 = 1_700_000_000;
        for (hours, to, want) in [
            // Paris to Sydney in an hour, in a day (about 700 km/h: a plane), in the same second.
            (1, SYDNEY, Some(RiskLevel::High)),
            (24, SYDNEY, None),
            (0, SYDNEY, Some(RiskLevel::High)),
            (10, SYDNEY, Some(RiskLevel::Medium)),
            // Paris to Lyon in minutes: under the distance that counts.
            (0, LYON, None),
        ] {
            let history = [past(t0, "FR", PARIS, "Chrome")];
            let f = facts(t0 + hours * HOUR, "AU", to, "Chrome");
            let found = assess_sign_in(&f, &history, &Anonymizers::default());
            let travel = found
                .iter()
                .find(|d| d.kind == DetectionKind::UnlikelyTravel)
                .map(|d| d.level);
            assert_eq!(travel, want, "{hours} h to {to:?}: {found:?}");
        }
    }

    #[test]
    fn travel_compares_with_the_latest_earlier_sign_in_with_a_place() {
        let t0 = 1_700_000_000;
        let mut unplaced = past(t0 + 2 * HOUR, "FR", PARIS, "Chrome");
        unplaced.coordinates = None;
        let history = [
            past(t0, "AU", SYDNEY, "Chrome"),
            past(t0 + HOUR, "FR", PARIS, "Chrome"),
            unplaced,
            // Later than the sign-in judged: not "earlier".
            past(t0 + 10 * HOUR, "AU", SYDNEY, "Chrome"),
        ];
        let f = facts(t0 + 3 * HOUR, "FR", LYON, "Chrome");
        assert!(assess_sign_in(&f, &history, &Anonymizers::default()).is_empty());
    }

    #[test]
    fn unfamiliar_features_wait_for_the_learning_period() {
        let t0 = 1_700_000_000;
        let few: Vec<PastSignIn> = (0..3)
            .map(|i| past(t0 + i * HOUR, "FR", PARIS, "Firefox"))
            .collect();
        let many: Vec<PastSignIn> = (0..LEARNING_SIGN_INS as i64)
            .map(|i| past(t0 + i * HOUR, "FR", PARIS, "Firefox"))
            .collect();
        let later = t0 + 30 * 24 * HOUR;
        let a = Anonymizers::default();
        // Learning: a handful of sign-ins over a few hours.
        let f = facts(t0 + 4 * HOUR, "DE", LYON, "Chrome");
        assert!(assess_sign_in(&f, &few, &a).is_empty());
        // Learnt by count.
        let f = facts(t0 + 12 * HOUR, "FR", LYON, "Chrome");
        assert_eq!(
            kinds(&assess_sign_in(&f, &many, &a)),
            [(DetectionKind::UnfamiliarFeatures, RiskLevel::Low)]
        );
        // Learnt by time; a new country and a new browser.
        let f = facts(later, "DE", LYON, "Chrome");
        let found = assess_sign_in(&f, &few, &a);
        assert_eq!(
            kinds(&found),
            [(DetectionKind::UnfamiliarFeatures, RiskLevel::Medium)]
        );
        assert!(
            found[0].detail.contains("country DE"),
            "{}",
            found[0].detail
        );
        // Familiar: nothing.
        let f = facts(later, "fr", PARIS, "Firefox");
        assert!(assess_sign_in(&f, &many, &a).is_empty());
        // The same country and browser from another network (a new ISP, a hosting provider).
        let f = SignInFacts {
            asn: Some(64501),
            ..facts(later, "FR", PARIS, "Firefox")
        };
        let found = assess_sign_in(&f, &many, &a);
        assert_eq!(
            kinds(&found),
            [(DetectionKind::UnfamiliarFeatures, RiskLevel::Low)]
        );
        assert!(
            found[0].detail.contains("network AS64501"),
            "{}",
            found[0].detail
        );
        // A network no database knows is not new.
        let f = SignInFacts {
            asn: None,
            ..facts(later, "FR", PARIS, "Firefox")
        };
        assert!(assess_sign_in(&f, &many, &a).is_empty());
        // No history at all: nothing to compare with.
        assert!(assess_sign_in(&f, &[], &a).is_empty());
    }

    #[test]
    fn anonymizer_lists() {
        let list = Anonymizers::parse(
            "# Tor exits\n185.220.101.7\n  10.8.0.0/16 # a VPN\n\n2001:db8:7::/48\n185.220.101.7\n::ffff:192.0.2.0/120\n",
        )
        .unwrap();
        assert_eq!(list.len(), 5);
        for (addr, want) in [
            ("185.220.101.7", true),
            ("185.220.101.8", false),
            ("10.8.200.1", true),
            ("10.9.0.1", false),
            ("::ffff:10.8.0.1", true),
            // An IPv4-mapped range is the IPv4 range.
            ("192.0.2.77", true),
            ("2001:db8:7:1::1", true),
            ("2001:db8:8::1", false),
        ] {
            assert_eq!(list.contains(ip(addr)), want, "{addr}");
        }
        let f = SignInFacts {
            ip: ip("185.220.101.7"),
            country: None,
            coordinates: None,
            browser: None,
            asn: None,
            at: 0,
        };
        assert_eq!(
            kinds(&assess_sign_in(&f, &[], &list)),
            [(DetectionKind::AnonymizedIpAddress, RiskLevel::Medium)]
        );
        let e = Anonymizers::parse("10.0.0.1\nexit-node-7\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("exit-node-7"), "{e}");
        let everything = Anonymizers::parse("0.0.0.0/0").unwrap();
        assert!(everything.contains(ip("192.0.2.1")));
        assert!(!everything.contains(ip("2001:db8::1")));
    }

    #[test]
    fn a_spray_over_many_accounts_and_brute_force_on_one() {
        let now = 1_700_000_000;
        let sprayer = ip("192.0.2.66");
        let spray: Vec<Failure> = (0..20)
            .map(|i| Failure {
                at: now - 60 + i,
                ip: sprayer,
                account: format!("user{i}@example.com"),
            })
            .collect();
        let found = assess_failures(&spray, "user3@example.com", sprayer, now);
        assert_eq!(
            kinds(&found),
            [(DetectionKind::PasswordSpray, RiskLevel::High)]
        );
        assert!(
            found[0].detail.contains("20 accounts"),
            "{}",
            found[0].detail
        );
        // The account the sprayer then gets into (its success, with no failure of its own) is
        // charged, at medium (it may be a neighbour behind the same NAT). Another address is not.
        assert_eq!(
            kinds(&assess_failures(&spray, "other@example.com", sprayer, now)),
            [(DetectionKind::PasswordSpray, RiskLevel::Medium)]
        );
        let elsewhere: IpAddr = "198.51.100.99".parse().unwrap();
        assert!(assess_failures(&spray, "other@example.com", elsewhere, now).is_empty());
        // Nine accounts: not yet a spray. Failures outside the window do not count.
        assert!(assess_failures(&spray[..9], "user3@example.com", sprayer, now).is_empty());
        let old = assess_failures(&spray, "user3@example.com", sprayer, now + 2 * HOUR);
        assert!(old.is_empty(), "{old:?}");

        let guess = |n: usize| -> Vec<Failure> {
            (0..n)
                .map(|i| Failure {
                    at: now - i as i64,
                    ip: ip("192.0.2.7"),
                    account: "alice@example.com".into(),
                })
                .collect()
        };
        let a = ip("192.0.2.7");
        assert!(assess_failures(&guess(9), "alice@example.com", a, now).is_empty());
        assert_eq!(
            kinds(&assess_failures(&guess(10), "alice@example.com", a, now)),
            [(DetectionKind::BruteForce, RiskLevel::Medium)]
        );
        assert_eq!(
            kinds(&assess_failures(&guess(50), "alice@example.com", a, now)),
            [(DetectionKind::BruteForce, RiskLevel::High)]
        );
    }

    #[test]
    fn range_files_in_the_pwned_passwords_format() {
        // SHA-1("password") = 5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8
        let sha = "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8";
        let file = "003D68EB55068C33ACE09247EE4C639306B:3\r\n1E4C9B93F3F0682250B6CF8331B7EE68FD8:9545824\r\nnot a line\n";
        assert_eq!(range_lookup(file, sha), Some(9_545_824));
        assert_eq!(range_lookup(file, &sha.to_lowercase()), Some(9_545_824));
        assert_eq!(
            range_lookup("003D68EB55068C33ACE09247EE4C639306B:3", sha),
            None
        );
        assert_eq!(range_lookup(file, "5BA"), None);
    }

    #[test]
    fn user_risk_follows_the_administrators_decision() {
        use RiskLevel::*;
        assert_eq!(user_risk(RiskState::AtRisk, [Low, High, Medium]), High);
        assert_eq!(user_risk(RiskState::AtRisk, []), None);
        assert_eq!(user_risk(RiskState::ConfirmedCompromised, []), High);
        assert_eq!(user_risk(RiskState::Dismissed, [Low]), Low);
        for k in [
            DetectionKind::AnonymizedIpAddress,
            DetectionKind::UnlikelyTravel,
            DetectionKind::UnfamiliarFeatures,
            DetectionKind::PasswordSpray,
            DetectionKind::LeakedCredentials,
            DetectionKind::BruteForce,
        ] {
            assert_eq!(DetectionKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::Value::String(k.as_str().into())
            );
        }
        for l in [None, Low, Medium, High] {
            assert_eq!(RiskLevel::parse(l.as_str()), Some(l));
        }
    }
}
