//! Conditional access at the edge: the stored policies and named locations, compiled at each
//! reload, decided with `postern_policy` for every signed-in request (cookie or bearer token) and
//! at the sign-in callback, for every issuer.
//!
//! An app's own settings are policies too ([`app_rules`]): "assignment required" blocks everyone
//! not `assigned`, "require MFA" requires MFA, each named after the app and decided with the
//! others (deny wins), so what-if and the sign-in log show them like any policy.
//!
//! **Invariant:** policies that cannot be compiled let nothing through (503 naming why), and a
//! report-only policy never changes what happens (it is logged).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use postern_auth::session::Session;
use postern_auth::UnixTime;
use postern_policy::{
    AppTarget, Control, Decision, Facts, Grant, Known, NamedLocation, Platform, Policies, Policy,
    PolicyState, RiskLevel, Strength, Targets, UserFacts, UserTarget, Verdict,
};
use postern_store::{AccessDoc, App, Preauth, Store, StoreError};

use crate::rescue::Refusal;

/// The policies as the routing snapshot holds them.
#[derive(Debug)]
pub struct Access {
    /// `Err` when the stored documents do not compile (hand-edited): nothing is let through.
    policies: Result<Policies, String>,
    /// Subjects of the built-in directory's enabled administrators (the `admins` target).
    admins: HashSet<String>,
    /// The built-in provider's issuer: only its subjects are directory users.
    built_in_issuer: String,
    /// Users at risk, by issuer then subject: their user risk (identity protection).
    user_risk: HashMap<String, HashMap<String, RiskLevel>>,
    /// The same by principal name (lower-case), the highest of any issuer: for what-if, which
    /// names a user by email.
    named_risk: HashMap<String, RiskLevel>,
}

impl Default for Access {
    fn default() -> Access {
        Access {
            policies: Ok(Policies::default()),
            admins: HashSet::new(),
            built_in_issuer: String::new(),
            user_risk: HashMap::new(),
            named_risk: HashMap::new(),
        }
    }
}

/// The stored policies and locations, parsed.
pub async fn stored(store: &Store) -> Result<(Vec<Policy>, Vec<NamedLocation>), String> {
    let parse = |kind: &str, name: &str, doc: &str| {
        format!("the stored {kind} {name:?} cannot be read: {doc}")
    };
    let mut policies = Vec::new();
    for (name, doc) in store
        .access_docs(AccessDoc::Policy)
        .await
        .map_err(|e| e.to_string())?
    {
        policies
            .push(serde_json::from_str(&doc).map_err(|e| parse("policy", &name, &e.to_string()))?);
    }
    let mut locations = Vec::new();
    for (name, doc) in store
        .access_docs(AccessDoc::Location)
        .await
        .map_err(|e| e.to_string())?
    {
        locations.push(
            serde_json::from_str(&doc).map_err(|e| parse("location", &name, &e.to_string()))?,
        );
    }
    Ok((policies, locations))
}

/// Names as the store knows them, for checking a policy before it is stored: apps, and groups
/// of the built-in directory or named in an app's assignments (an issuer's groups are known
/// only once an assignment names them).
pub struct StoreNames {
    apps: HashSet<String>,
    groups: HashSet<String>,
}

impl StoreNames {
    pub async fn load(store: &Store) -> Result<StoreNames, StoreError> {
        let apps = store.apps().await?.into_iter().map(|a| a.name).collect();
        let mut groups: HashSet<String> = store
            .directory_groups()
            .await?
            .into_iter()
            .map(|g| g.name)
            .collect();
        for (_, who) in store.assignments().await? {
            if let postern_store::Assignee::Group(g) = who {
                groups.insert(g);
            }
        }
        Ok(StoreNames { apps, groups })
    }
}

impl Known for StoreNames {
    fn group(&self, name: &str) -> bool {
        self.groups.contains(name)
    }
    fn app(&self, name: &str) -> bool {
        self.apps.contains(name)
    }
}

/// At reload, names were checked when each policy was stored; one that names what has since
/// gone simply never matches.
pub(crate) struct AnyName;

impl Known for AnyName {
    fn group(&self, _: &str) -> bool {
        true
    }
    fn app(&self, _: &str) -> bool {
        true
    }
}

/// Which of an app's own settings a policy stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppRule {
    Assignment,
    Mfa,
}

const ASSIGNMENT_RULE: &str = ": assignment required";
const MFA_RULE: &str = ": require MFA";

/// The app setting `policy` stands for, if it is one (an administrator's policy cannot have
/// such a name: see [`reserved_name`]).
pub fn app_rule(policy: &str) -> Option<AppRule> {
    if policy.ends_with(ASSIGNMENT_RULE) {
        Some(AppRule::Assignment)
    } else if policy.ends_with(MFA_RULE) {
        Some(AppRule::Mfa)
    } else {
        None
    }
}

/// Why an administrator's policy may not be named `name`, if it may not.
pub fn reserved_name(name: &str) -> Option<String> {
    if name == "what-if" {
        return Some("what-if is the name of the what-if endpoint; choose another".to_owned());
    }
    // Read as a person reads it: any case, any kind of space.
    let read: String = name
        .split(char::is_whitespace)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    let like =
        read.ends_with(&ASSIGNMENT_RULE.to_lowercase()) || read.ends_with(&MFA_RULE.to_lowercase());
    like.then(|| {
        format!(
            "names ending in {ASSIGNMENT_RULE:?} or {MFA_RULE:?} are kept for apps' own settings \
             (app update --assignment-required / --require-mfa)"
        )
    })
}

/// The policies an app's sign-in settings stand for, before any administrator's.
pub fn app_rules(apps: &[App]) -> Vec<Policy> {
    let rule = |app: &App, suffix: &str, users: Vec<UserTarget>, exclude, grant| Policy {
        name: format!("{}{suffix}", app.name),
        state: PolicyState::On,
        users: Targets {
            include: users,
            exclude,
        },
        apps: Targets {
            include: vec![AppTarget::App(app.name.clone())],
            exclude: vec![],
        },
        conditions: Default::default(),
        grant,
        session: Default::default(),
    };
    let mut rules = Vec::new();
    for app in apps.iter().filter(|a| a.preauth == Preauth::Oidc) {
        if app.access.assignment_required {
            rules.push(rule(
                app,
                ASSIGNMENT_RULE,
                vec![UserTarget::All],
                vec![UserTarget::Assigned],
                Grant {
                    block: true,
                    ..Grant::default()
                },
            ));
        }
        if app.access.require_mfa {
            rules.push(rule(
                app,
                MFA_RULE,
                vec![UserTarget::All],
                vec![],
                Grant {
                    require: vec![Control::Mfa],
                    ..Grant::default()
                },
            ));
        }
    }
    rules
}

impl Access {
    /// The snapshot's policies: `apps`' own rules, then the stored policies.
    pub async fn load(
        store: &Store,
        built_in_issuer: &str,
        apps: &[App],
    ) -> Result<Access, StoreError> {
        let policies = match stored(store).await {
            Ok((policies, locations)) => {
                Policies::compile_with_rules(&app_rules(apps), &policies, &locations, &AnyName)
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &policies {
            tracing::error!(error = %e, "the access policies cannot be used; signed-in requests are refused until they are fixed");
        }
        let admins = store
            .users()
            .await?
            .into_iter()
            .filter(|u| u.admin && u.enabled)
            .map(|u| u.id)
            .collect();
        let mut user_risk: HashMap<String, HashMap<String, RiskLevel>> = HashMap::new();
        let mut named_risk: HashMap<String, RiskLevel> = HashMap::new();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for u in store.risky_users(now_ms).await? {
            let level = crate::risk::user_level(&u);
            if level == RiskLevel::None {
                continue;
            }
            // The built-in provider's own detections name it by its store name.
            let named = named_risk
                .entry(u.user_principal_name.to_lowercase())
                .or_insert(RiskLevel::None);
            *named = (*named).max(level);
            let issuer = if u.issuer == postern_store::BUILT_IN_ISSUER {
                built_in_issuer.to_owned()
            } else {
                u.issuer
            };
            let entry = user_risk
                .entry(issuer)
                .or_default()
                .entry(u.subject)
                .or_insert(RiskLevel::None);
            *entry = (*entry).max(level);
        }
        Ok(Access {
            policies,
            admins,
            built_in_issuer: built_in_issuer.to_owned(),
            user_risk,
            named_risk,
        })
    }

    /// `session`'s user risk as of the last reload.
    pub fn user_risk(&self, session: &Session) -> RiskLevel {
        self.user_risk
            .get(&session.issuer)
            .and_then(|users| users.get(&session.subject))
            .copied()
            .unwrap_or(RiskLevel::None)
    }

    /// The user risk of whoever has the principal name `name` (any case, any issuer).
    pub fn named_user_risk(&self, name: &str) -> RiskLevel {
        self.named_risk
            .get(&name.to_lowercase())
            .copied()
            .unwrap_or(RiskLevel::None)
    }

    /// Decides `session`'s access to `app` (to which it is `assigned` or not) from `ip` on
    /// `platform` with the (sign-in, user) risk given, at `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &self,
        session: &Session,
        (app, assigned): (&str, bool),
        ip: IpAddr,
        country: Option<&str>,
        platform: Platform,
        (sign_in_risk, user_risk): (RiskLevel, RiskLevel),
        now: UnixTime,
    ) -> Result<Decision, Refusal> {
        let policies = self
            .policies
            .as_ref()
            .map_err(|reason| Refusal::PoliciesUnusable {
                reason: reason.clone(),
            })?;
        let admin =
            session.issuer == self.built_in_issuer && self.admins.contains(&session.subject);
        let facts = Facts {
            user: UserFacts {
                subject: &session.subject,
                email: session.email.as_deref(),
                groups: &session.groups,
                admin,
                assigned,
            },
            app,
            ip,
            country,
            platform,
            sign_in_risk,
            user_risk,
            strength: Strength::of(&session.amr, session.acr.as_deref()),
            signed_in_at: session.auth_time.unwrap_or(session.issued_at).secs() as i64,
            now: now.secs() as i64,
        };
        let decision = policies.decide(&facts);
        for r in &decision.results {
            if r.state == PolicyState::ReportOnly {
                tracing::info!(policy = %r.policy, outcome = ?r.outcome, app, user = %session.subject, "report-only policy evaluated");
            }
        }
        Ok(decision)
    }
}

/// The policy platform of a `User-Agent`.
pub fn platform_of(user_agent: &str) -> Platform {
    platform_of_system(postern_policy::device_detail(user_agent).0.as_deref())
}

/// The policy platform of an operating system as `device_detail` names it.
pub fn platform_of_system(system: Option<&str>) -> Platform {
    match system {
        Some("Android") => Platform::Android,
        Some("iOS") => Platform::Ios,
        Some("Windows") => Platform::Windows,
        Some("macOS") => Platform::Macos,
        Some("Linux") | Some("ChromeOS") => Platform::Linux,
        _ => Platform::Other,
    }
}

/// What a verdict asks of a request.
pub enum Demand {
    /// Let it through.
    Nothing,
    /// Refuse it: a policy blocks it.
    Refuse(Refusal),
    /// A new sign-in could meet it (a second factor, a passkey, a fresh sign-in); where the
    /// browser cannot be sent back to the issuer, refuse it with this.
    SignInAgain(Refusal),
}

/// The demand of `verdict` on `session`'s request to `app`. An app's own rules refuse as
/// they always have (`not_assigned`, `mfa_required`).
pub fn demand(app: &str, session: &Session, verdict: &Verdict) -> Demand {
    let unmet = |policy: &str, what| {
        Demand::SignInAgain(match app_rule(policy) {
            Some(AppRule::Mfa) => Refusal::MfaRequired {
                app: app.to_owned(),
            },
            _ => Refusal::PolicyUnmet {
                app: app.to_owned(),
                policy: policy.to_owned(),
                what,
            },
        })
    };
    match verdict {
        Verdict::Allow => Demand::Nothing,
        Verdict::Block { policy } if app_rule(policy) == Some(AppRule::Assignment) => {
            Demand::Refuse(Refusal::NotAssigned {
                app: app.to_owned(),
                user: session
                    .email
                    .clone()
                    .unwrap_or_else(|| session.subject.clone()),
            })
        }
        Verdict::Block { policy } => Demand::Refuse(Refusal::PolicyBlocked {
            app: app.to_owned(),
            policy: policy.to_string(),
        }),
        Verdict::RequireMfa { policy } => unmet(policy, "a second factor"),
        Verdict::RequirePasskey { policy } => unmet(policy, "a passkey"),
        Verdict::RequireSignIn { policy } => unmet(policy, "a fresh sign-in"),
    }
}

/// What a sign-in's record keeps of its decision and of the risk found in it.
pub fn decided(
    decision: &Decision,
    risk: RiskLevel,
    found: &[postern_policy::risk::Detection],
) -> postern_store::Decided {
    let mut applied: Vec<(bool, String)> = decision
        .results
        .iter()
        .filter_map(|r| {
            let ok = r.outcome == postern_policy::Outcome::Satisfied;
            let result = match (r.state, ok) {
                (PolicyState::On, true) => "success",
                (PolicyState::On, false) => "failure",
                (PolicyState::ReportOnly, true) => "reportOnlySuccess",
                (PolicyState::ReportOnly, false) => "reportOnlyFailure",
                (PolicyState::Off, _) => return None,
            };
            Some((r.state != PolicyState::On, format!("{}:{result}", r.policy)))
        })
        .collect();
    // Enforced policies first, each kind in order: the record keeps at most
    // `MAX_DECIDED_ITEMS`, and those that decided must be among them.
    applied.sort_by_key(|(report_only, _)| *report_only);
    postern_store::Decided {
        conditional_access_status: status(decision).to_owned(),
        applied_policies: applied.into_iter().map(|(_, p)| p).collect(),
        risk_level: risk.as_str().to_owned(),
        risk_event_types: found.iter().map(|d| d.kind.as_str().to_owned()).collect(),
    }
}

/// The `conditionalAccessStatus` of a sign-in decided as `decision` (Entra's values).
pub fn status(decision: &Decision) -> &'static str {
    let enforced = decision.results.iter().any(|r| r.state == PolicyState::On);
    match (&decision.verdict, enforced) {
        (_, false) => "notApplied",
        (Verdict::Allow, true) => "success",
        (_, true) => "failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        let now = UnixTime::from_secs(1_000_000);
        Session {
            id: postern_auth::session::SessionId::generate(),
            app: postern_auth::AppId::new("a1").unwrap(),
            issuer: "https://issuer.example".into(),
            subject: "u1".into(),
            email: None,
            name: None,
            groups: vec![],
            amr: vec!["pwd".into()],
            acr: None,
            auth_time: Some(now),
            issued_at: now,
            expires_at: now,
        }
    }

    #[test]
    fn policies_that_do_not_compile_let_nothing_through() {
        let broken = Access {
            policies: Err("the stored policy \"x\" cannot be read".into()),
            ..Access::default()
        };
        let decided = broken.decide(
            &session(),
            ("wiki", false),
            "192.0.2.1".parse().unwrap(),
            None,
            Platform::Other,
            (RiskLevel::None, RiskLevel::None),
            UnixTime::from_secs(1_000_000),
        );
        assert!(matches!(decided, Err(Refusal::PoliciesUnusable { .. })));
        // No policies at all: everyone signed in is let through.
        let none = Access::default()
            .decide(
                &session(),
                ("wiki", false),
                "192.0.2.1".parse().unwrap(),
                None,
                Platform::Other,
                (RiskLevel::None, RiskLevel::None),
                UnixTime::from_secs(1_000_000),
            )
            .unwrap();
        assert_eq!(none.verdict, Verdict::Allow);
        assert_eq!(status(&none), "notApplied");
    }

    #[test]
    fn an_apps_own_settings_are_policies_that_refuse_as_they_always_did() {
        let app = |name: &str, assignment_required, require_mfa| App {
            access: postern_store::AccessRules {
                assignment_required,
                require_mfa,
            },
            id: 1,
            name: name.to_owned(),
            external_url: format!("https://{name}.example"),
            external_host: format!("{name}.example"),
            internal_url: "http://10.0.0.1/".to_owned(),
            group: "g".to_owned(),
            preauth: Preauth::Oidc,
            preserve_host: false,
            insecure_skip_backend_tls_verify: false,
            backend_timeout: std::time::Duration::from_secs(85),
            maintenance: false,
            oidc: None,
            cookie: Default::default(),
        };
        let rules = app_rules(&[app("wiki", true, true), app("crm", false, false)]);
        let names: Vec<_> = rules.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["wiki: assignment required", "wiki: require MFA"]);
        let access = Access {
            policies: Ok(Policies::compile(&rules, &[], &AnyName).unwrap()),
            ..Access::default()
        };
        let decide = |app, assigned, amr: &[&str]| {
            let mut s = session();
            s.amr = amr.iter().map(|m| m.to_string()).collect();
            let d = access
                .decide(
                    &s,
                    (app, assigned),
                    "192.0.2.1".parse().unwrap(),
                    None,
                    Platform::Other,
                    (RiskLevel::None, RiskLevel::None),
                    UnixTime::from_secs(1_000_000),
                )
                .unwrap();
            (demand(app, &s, &d.verdict), status(&d))
        };
        assert!(matches!(
            decide("wiki", false, &["pwd", "otp"]),
            (Demand::Refuse(Refusal::NotAssigned { .. }), "failure")
        ));
        assert!(matches!(
            decide("wiki", true, &["pwd"]),
            (Demand::SignInAgain(Refusal::MfaRequired { .. }), "failure")
        ));
        assert!(matches!(
            decide("wiki", true, &["pwd", "otp"]),
            (Demand::Nothing, "success")
        ));
        assert!(matches!(
            decide("crm", false, &["pwd"]),
            (Demand::Nothing, "notApplied")
        ));
        // An administrator's policy cannot take such a name.
        assert!(reserved_name("x: require MFA").is_some());
        assert!(reserved_name("x:\u{a0}Assignment  required").is_some());
        assert!(reserved_name("x: Require mfa").is_some());
        assert!(reserved_name("what-if").is_some());
        assert!(reserved_name("require MFA for x").is_none());
    }

    #[test]
    fn user_agents_map_to_policy_platforms() {
        assert_eq!(
            platform_of("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) Safari/604.1"),
            Platform::Ios
        );
        assert_eq!(
            platform_of("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0"),
            Platform::Windows
        );
        assert_eq!(platform_of("curl/8.5.0"), Platform::Other);
    }
}
