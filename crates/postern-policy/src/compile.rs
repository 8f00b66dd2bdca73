//! Policies checked and indexed once, then decided many times.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::model::{
    AppTarget, Control, Grant, LocationTarget, NamedLocation, Platform, Policy, PolicyState,
    RiskLevel, SessionControls, Targets, TimeWindow, UserTarget, Weekday,
};
use crate::{Decision, Facts, Outcome, PolicyResult, Verdict};

/// Names a policy may refer to, as the store knows them.
pub trait Known {
    fn group(&self, name: &str) -> bool;
    fn app(&self, name: &str) -> bool;
}

/// A refused policy or location: which one, which field, why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// The policy's or location's name.
    pub name: String,
    /// The field, as written in a policy file (`conditions.locations.include[1]`).
    pub field: String,
    pub reason: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.name, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.name, self.field, self.reason)
        }
    }
}

/// The most policies and named locations, and the most entries in one list: far beyond what an
/// organisation writes, and what keeps a decision within microseconds.
pub const MAX_POLICIES: usize = 500;
pub const MAX_LOCATIONS: usize = 500;
pub const MAX_LIST_ENTRIES: usize = 1_000;
/// Names of policies and locations.
pub const MAX_NAME_CHARS: usize = 100;

/// Policies and named locations, checked and indexed.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    policies: Vec<Compiled>,
    locations: Vec<Location>,
}

#[derive(Clone, Debug)]
struct Location {
    nets: Vec<IpNet>,
    countries: Vec<[u8; 2]>,
    trusted: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Any,
    Trusted,
    Named(usize),
}

#[derive(Clone, Debug)]
struct Compiled {
    /// Shared with every decision that names it.
    name: Arc<str>,
    state: PolicyState,
    users: Targets<UserTarget>,
    apps: Targets<AppTarget>,
    locations: Option<Targets<Place>>,
    platforms: Option<Targets<Platform>>,
    /// Bit `level as u8` set for each level the policy applies to; 0: any.
    sign_in_risk: u8,
    user_risk: u8,
    times: Vec<Window>,
    grant: Grant,
    session: SessionControls,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    /// Bit 0 Monday … bit 6 Sunday.
    days: u8,
    from: u16,
    to: u16,
    offset_minutes: i16,
}

impl Policies {
    /// The rules a policy must also meet when it is written, beyond [`Policies::compile`]'s
    /// (which stored policies from before these rules still pass): names without invisible or
    /// text-direction characters or outer spaces, times of two digits each, no `all` with a
    /// block.
    pub fn check_new_policy(p: &Policy) -> Result<(), PolicyError> {
        check_new_name(&p.name)?;
        if p.grant.block && p.grant.all {
            return Err(err(
                &p.name,
                "grant.all",
                "all applies to required controls; a block has none",
            ));
        }
        let digits = |t: &str| {
            t.split_once(':').is_some_and(|(h, m)| {
                [h, m]
                    .iter()
                    .all(|x| x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit()))
            })
        };
        for (i, w) in p.conditions.times.iter().enumerate() {
            if !digits(&w.from) || !digits(&w.to) {
                return Err(err(
                    &p.name,
                    &format!("conditions.times[{i}]"),
                    "from and to are HH:MM, two digits each",
                ));
            }
        }
        Ok(())
    }

    /// The rules a named location must also meet when it is written: its name, and no IPv6
    /// range wider than /96 that takes in IPv4-mapped addresses (clients' IPv4 addresses are
    /// read as IPv4, so such a range would seem to hold them and never would).
    pub fn check_new_location(l: &NamedLocation) -> Result<(), PolicyError> {
        check_new_name(&l.name)?;
        let mapped: IpAddr = "::ffff:0.0.0.0".parse().expect("an address");
        for (i, net) in l.cidrs.iter().enumerate() {
            if let IpNet::V6(v6) = net {
                if v6.prefix_len() < 96 && net.trunc().contains(&mapped) {
                    return Err(err(
                        &l.name,
                        &format!("cidrs[{i}]"),
                        format!("{net} takes in IPv4-mapped addresses, which are matched as IPv4: give the IPv4 ranges themselves (or use `any` in the policy)"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks every policy and location; the first problem is refused, naming its field.
    pub fn compile(
        policies: &[Policy],
        locations: &[NamedLocation],
        known: &dyn Known,
    ) -> Result<Policies, PolicyError> {
        Policies::compile_with_rules(&[], policies, locations, known)
    }

    /// As [`Policies::compile`], with `rules` (an app's own settings as policies, one or two
    /// per app) decided first; they do not count towards [`MAX_POLICIES`].
    pub fn compile_with_rules(
        rules: &[Policy],
        policies: &[Policy],
        locations: &[NamedLocation],
        known: &dyn Known,
    ) -> Result<Policies, PolicyError> {
        if locations.len() > MAX_LOCATIONS {
            return Err(err("locations", "", format!("at most {MAX_LOCATIONS}")));
        }
        if policies.len() > MAX_POLICIES {
            return Err(err("policies", "", format!("at most {MAX_POLICIES}")));
        }
        let policies: Vec<&Policy> = rules.iter().chain(policies).collect();
        let mut compiled_locations = Vec::with_capacity(locations.len());
        for (i, l) in locations.iter().enumerate() {
            check_name(&l.name, "location")?;
            if locations[..i].iter().any(|o| o.name == l.name) {
                return Err(err(&l.name, "name", "another location has this name"));
            }
            compiled_locations.push(location(l)?);
        }
        let mut compiled = Vec::with_capacity(policies.len());
        let mut names = std::collections::HashSet::with_capacity(policies.len());
        for p in &policies {
            check_name(&p.name, "policy")?;
            if !names.insert(p.name.as_str()) {
                return Err(err(&p.name, "name", "another policy has this name"));
            }
            compiled.push(policy(p, locations, known)?);
        }
        Ok(Policies {
            policies: compiled,
            locations: compiled_locations,
        })
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Decides a sign-in or a request.
    pub fn decide(&self, facts: &Facts<'_>) -> Decision {
        let mut places: Option<Vec<bool>> = None;
        let mut results = Vec::new();
        let mut verdict = Verdict::Allow;
        let mut session = SessionControls::default();
        for p in &self.policies {
            if p.state == PolicyState::Off || !p.applies(facts, &self.locations, &mut places) {
                continue;
            }
            let outcome = p.outcome(facts);
            if p.state == PolicyState::On {
                if rank(outcome) > rank_verdict(&verdict) {
                    verdict = verdict_for(outcome, &p.name);
                }
                if let Some(h) = p.session.sign_in_frequency_hours {
                    session.sign_in_frequency_hours = Some(
                        session
                            .sign_in_frequency_hours
                            .map_or(h, |current| current.min(h)),
                    );
                }
                session.no_persistent_session |= p.session.no_persistent_session;
            }
            results.push(PolicyResult {
                policy: p.name.clone(),
                state: p.state,
                outcome,
            });
        }
        Decision {
            verdict,
            results,
            session,
        }
    }
}

/// How strongly an outcome refuses: the strongest among enforced policies decides.
fn rank(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Satisfied => 0,
        Outcome::NeedsSignIn => 1,
        Outcome::NeedsMfa => 2,
        Outcome::NeedsPasskey => 3,
        Outcome::Blocked => 4,
    }
}

fn rank_verdict(v: &Verdict) -> u8 {
    match v {
        Verdict::Allow => 0,
        Verdict::RequireSignIn { .. } => 1,
        Verdict::RequireMfa { .. } => 2,
        Verdict::RequirePasskey { .. } => 3,
        Verdict::Block { .. } => 4,
    }
}

fn verdict_for(outcome: Outcome, policy: &Arc<str>) -> Verdict {
    let policy = policy.clone();
    match outcome {
        Outcome::Satisfied => Verdict::Allow,
        Outcome::NeedsSignIn => Verdict::RequireSignIn { policy },
        Outcome::NeedsMfa => Verdict::RequireMfa { policy },
        Outcome::NeedsPasskey => Verdict::RequirePasskey { policy },
        Outcome::Blocked => Verdict::Block { policy },
    }
}

impl Compiled {
    fn applies(
        &self,
        facts: &Facts<'_>,
        locations: &[Location],
        places: &mut Option<Vec<bool>>,
    ) -> bool {
        let user = |t: &UserTarget| match t {
            UserTarget::All => true,
            UserTarget::Admins => facts.user.admin,
            UserTarget::Assigned => facts.user.assigned,
            UserTarget::User(u) => {
                u == facts.user.subject
                    || facts.user.email.is_some_and(|e| e.eq_ignore_ascii_case(u))
            }
            UserTarget::Group(g) => facts.user.groups.iter().any(|m| m == g),
        };
        if !matches(&self.users, user) {
            return false;
        }
        let app = |t: &AppTarget| match t {
            AppTarget::All => true,
            AppTarget::App(a) => a == facts.app,
        };
        if !matches(&self.apps, app) {
            return false;
        }
        if self.sign_in_risk != 0 && self.sign_in_risk & bit(facts.sign_in_risk) == 0 {
            return false;
        }
        if self.user_risk != 0 && self.user_risk & bit(facts.user_risk) == 0 {
            return false;
        }
        if let Some(platforms) = &self.platforms {
            let platform = |t: &Platform| *t == Platform::Any || *t == facts.platform;
            if !matches(platforms, platform) {
                return false;
            }
        }
        if !self.times.is_empty() && !self.times.iter().any(|w| w.contains(facts.now)) {
            return false;
        }
        if let Some(targets) = &self.locations {
            let inside = places.get_or_insert_with(|| {
                let ip = crate::unmapped(facts.ip);
                locations
                    .iter()
                    .map(|l| l.contains(ip, facts.country))
                    .collect()
            });
            let place = |t: &Place| match *t {
                Place::Any => true,
                Place::Trusted => inside
                    .iter()
                    .zip(locations)
                    .any(|(hit, l)| *hit && l.trusted),
                Place::Named(i) => inside[i],
            };
            if !matches(targets, place) {
                return false;
            }
        }
        true
    }

    fn outcome(&self, facts: &Facts<'_>) -> Outcome {
        let Grant {
            block,
            require: controls,
            all,
        } = &self.grant;
        if *block {
            return Outcome::Blocked;
        }
        let outcome = {
            {
                let has = |c: &Control| match c {
                    Control::Mfa => facts.strength.multi_factor,
                    Control::Passkey => facts.strength.phishing_resistant,
                };
                let ok = if *all {
                    controls.iter().all(has)
                } else {
                    controls.iter().any(has)
                };
                if ok {
                    Outcome::Satisfied
                } else {
                    // Ask for the least that satisfies the grant: with "any", MFA if it is among
                    // the choices; with "all", a passkey if it is required (it is MFA too).
                    let passkey = controls.contains(&Control::Passkey);
                    let mfa = controls.contains(&Control::Mfa);
                    if (*all && passkey) || !mfa {
                        Outcome::NeedsPasskey
                    } else {
                        Outcome::NeedsMfa
                    }
                }
            }
        };
        if outcome == Outcome::Satisfied {
            if let Some(hours) = self.session.sign_in_frequency_hours {
                if facts.now.saturating_sub(facts.signed_in_at) > i64::from(hours) * 3600 {
                    return Outcome::NeedsSignIn;
                }
            }
        }
        outcome
    }
}

/// Include and exclude lists: some include matches and no exclude does.
fn matches<T>(targets: &Targets<T>, hit: impl Fn(&T) -> bool) -> bool {
    targets.include.iter().any(&hit) && !targets.exclude.iter().any(&hit)
}

fn bit(level: RiskLevel) -> u8 {
    1 << (level as u8)
}

impl Location {
    /// `ip` is read as IPv4 when it is IPv4-mapped (see [`crate::unmapped`]).
    fn contains(&self, ip: IpAddr, country: Option<&str>) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
            || country.is_some_and(|c| self.countries.iter().any(|k| k == c.as_bytes()))
    }
}

impl Window {
    fn contains(&self, now: i64) -> bool {
        let local = now.saturating_add(i64::from(self.offset_minutes) * 60);
        let day = local.div_euclid(86_400);
        let minute = (local.rem_euclid(86_400) / 60) as u16;
        // 1970-01-01 was a Thursday: day 0 is weekday 3 counting from Monday.
        let weekday = |d: i64| 1u8 << (d + 3).rem_euclid(7);
        if self.from < self.to {
            self.days & weekday(day) != 0 && (self.from..self.to).contains(&minute)
        } else {
            (self.days & weekday(day) != 0 && minute >= self.from)
                || (self.days & weekday(day - 1) != 0 && minute < self.to)
        }
    }
}

fn err(name: &str, field: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError {
        name: name.to_owned(),
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Unicode's default-ignorable code points (format characters, joiners, bidi controls, variation
/// selectors, fillers, tags) and line separators: shown as nothing, or reordering what follows.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{2800}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

fn check_name(name: &str, what: &str) -> Result<(), PolicyError> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(err(
            name,
            "name",
            format!("a {what} needs a name of 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(err(name, "name", "control characters are not allowed"));
    }
    Ok(())
}

/// What a name must also be when it is written (stored ones that predate these rules still
/// load, so an upgrade never makes the edge refuse everyone).
fn check_new_name(name: &str) -> Result<(), PolicyError> {
    // Invisible and text-direction characters make a name read as another in logs and pages.
    if name.chars().any(invisible) {
        return Err(err(
            name,
            "name",
            "invisible or text-direction characters are not allowed",
        ));
    }
    if name.trim() != name {
        return Err(err(
            name,
            "name",
            "a name does not start or end with spaces",
        ));
    }
    Ok(())
}

fn location(l: &NamedLocation) -> Result<Location, PolicyError> {
    if l.cidrs.is_empty() && l.countries.is_empty() {
        return Err(err(&l.name, "cidrs", "name at least one CIDR or country"));
    }
    for (field, len) in [("cidrs", l.cidrs.len()), ("countries", l.countries.len())] {
        if len > MAX_LIST_ENTRIES {
            return Err(err(
                &l.name,
                field,
                format!("at most {MAX_LIST_ENTRIES} entries"),
            ));
        }
    }
    let mut countries = Vec::with_capacity(l.countries.len());
    for (i, c) in l.countries.iter().enumerate() {
        if !crate::country::exists(c) {
            return Err(err(
                &l.name,
                &format!("countries[{i}]"),
                format!("{c:?} is not an ISO 3166-1 alpha-2 country code (upper case, e.g. DE)"),
            ));
        }
        let b = c.as_bytes();
        countries.push([b[0], b[1]]);
    }
    Ok(Location {
        nets: l
            .cidrs
            .iter()
            .map(|n| crate::unmapped_net(n.trunc()))
            .collect(),
        countries,
        trusted: l.trusted,
    })
}

fn policy(
    p: &Policy,
    locations: &[NamedLocation],
    known: &dyn Known,
) -> Result<Compiled, PolicyError> {
    let e = |field: &str, reason: String| err(&p.name, field, reason);
    check_targets(&p.users, "users", |t| match t {
        UserTarget::Group(g) if !known.group(g) => Some(format!("no group is named {g:?}")),
        UserTarget::User(u) if u.is_empty() || u.len() > 320 => {
            Some("a user is an email or subject of 1 to 320 bytes".to_owned())
        }
        _ => None,
    })
    .map_err(|(f, r)| e(&f, r))?;
    check_targets(&p.apps, "apps", |t| match t {
        AppTarget::App(a) if !known.app(a) => Some(format!("no app is named {a:?}")),
        _ => None,
    })
    .map_err(|(f, r)| e(&f, r))?;
    let c = &p.conditions;
    let places = match &c.locations {
        None => None,
        Some(t) => {
            let resolve = |l: &LocationTarget| match l {
                LocationTarget::Any => Ok(Place::Any),
                LocationTarget::Trusted => Ok(Place::Trusted),
                LocationTarget::Named(n) => locations
                    .iter()
                    .position(|l| &l.name == n)
                    .map(Place::Named)
                    .ok_or_else(|| format!("no location is named {n:?}")),
            };
            check_targets(t, "conditions.locations", |l| resolve(l).err())
                .map_err(|(f, r)| e(&f, r))?;
            Some(Targets {
                include: t
                    .include
                    .iter()
                    .map(|l| resolve(l).unwrap_or(Place::Any))
                    .collect(),
                exclude: t
                    .exclude
                    .iter()
                    .map(|l| resolve(l).unwrap_or(Place::Any))
                    .collect(),
            })
        }
    };
    if let Some(t) = &c.platforms {
        check_targets(t, "conditions.platforms", |_| None).map_err(|(f, r)| e(&f, r))?;
    }
    if c.times.len() > MAX_LIST_ENTRIES {
        return Err(e(
            "conditions.times",
            format!("at most {MAX_LIST_ENTRIES} entries"),
        ));
    }
    let mut times = Vec::with_capacity(c.times.len());
    for (i, w) in c.times.iter().enumerate() {
        times.push(window(w).map_err(|r| e(&format!("conditions.times[{i}]"), r))?);
    }
    if p.grant.block != p.grant.require.is_empty() {
        return Err(e(
            "grant",
            "either block: true, or require: [mfa] or [passkey] (or both)".to_owned(),
        ));
    }
    if p.session.sign_in_frequency_hours == Some(0) {
        return Err(e(
            "session.sign_in_frequency_hours",
            "at least 1 hour".to_owned(),
        ));
    }
    Ok(Compiled {
        name: Arc::from(p.name.as_str()),
        state: p.state,
        users: p.users.clone(),
        apps: p.apps.clone(),
        locations: places,
        platforms: c.platforms.clone(),
        sign_in_risk: c.sign_in_risk.iter().fold(0, |m, l| m | bit(*l)),
        user_risk: c.user_risk.iter().fold(0, |m, l| m | bit(*l)),
        times,
        grant: p.grant.clone(),
        session: p.session.clone(),
    })
}

/// An empty include (which would apply to nobody, silently) and oversized lists are refused;
/// `bad` judges each entry.
fn check_targets<T>(
    t: &Targets<T>,
    field: &str,
    bad: impl Fn(&T) -> Option<String>,
) -> Result<(), (String, String)> {
    if t.include.is_empty() {
        return Err((
            format!("{field}.include"),
            "name at least one (or `all`/`any`)".to_owned(),
        ));
    }
    if t.include.len() + t.exclude.len() > MAX_LIST_ENTRIES {
        return Err((
            field.to_owned(),
            format!("at most {MAX_LIST_ENTRIES} entries"),
        ));
    }
    for (list, entries) in [("include", &t.include), ("exclude", &t.exclude)] {
        for (i, entry) in entries.iter().enumerate() {
            if let Some(reason) = bad(entry) {
                return Err((format!("{field}.{list}[{i}]"), reason));
            }
        }
    }
    Ok(())
}

fn window(w: &TimeWindow) -> Result<Window, String> {
    if w.days.is_empty() {
        return Err("name at least one day".to_owned());
    }
    if !(-14 * 60..=14 * 60).contains(&w.utc_offset_minutes) {
        return Err("utc_offset_minutes is between -840 and 840".to_owned());
    }
    let from = minutes(&w.from, false).ok_or("from is HH:MM, 00:00 to 23:59")?;
    let to = minutes(&w.to, true).ok_or("to is HH:MM, 00:01 to 24:00")?;
    if from == to {
        return Err("from and to are the same time".to_owned());
    }
    let days = w.days.iter().fold(0u8, |m, d| {
        m | 1
            << match d {
                Weekday::Mon => 0,
                Weekday::Tue => 1,
                Weekday::Wed => 2,
                Weekday::Thu => 3,
                Weekday::Fri => 4,
                Weekday::Sat => 5,
                Weekday::Sun => 6,
            }
    });
    Ok(Window {
        days,
        from,
        to,
        offset_minutes: w.utc_offset_minutes,
    })
}

/// `HH:MM` as minutes of the day; `24:00` only as an end.
fn minutes(s: &str, end: bool) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if end => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}
