//! Table-driven tests: policies written as an administrator writes them (YAML), facts varied one
//! at a time.

use super::*;

struct Directory;

impl Known for Directory {
    fn group(&self, name: &str) -> bool {
        matches!(name, "staff" | "contractors" | "finance")
    }
    fn app(&self, name: &str) -> bool {
        matches!(name, "wiki" | "payroll" | "grafana")
    }
}

const LOCATIONS: &str = r#"
- name: office
  cidrs: [203.0.113.0/24, "2001:db8:1::/48"]
  trusted: true
- name: embargoed
  countries: [KP, IR]
- name: germany
  countries: [DE]
- name: mapped
  cidrs: ["::ffff:198.51.100.0/120"]
"#;

fn compile(policies: &str) -> Result<Policies, PolicyError> {
    let policies: Vec<Policy> = serde_yaml_ng::from_str(policies).unwrap();
    let locations: Vec<NamedLocation> = serde_yaml_ng::from_str(LOCATIONS).unwrap();
    Policies::compile(&policies, &locations, &Directory)
}

const GROUPS: &[String] = &[];

/// A signed-in user at a neutral place, an hour after a password-only sign-in, on a Tuesday
/// (2026-12-01) at 10:00 UTC.
fn facts() -> Facts<'static> {
    Facts {
        user: UserFacts {
            subject: "sub-ada",
            email: Some("ada@example.com"),
            groups: GROUPS,
            admin: false,
            assigned: false,
        },
        app: "wiki",
        ip: "198.51.100.7".parse().unwrap(),
        country: Some("FR"),
        platform: Platform::Linux,
        sign_in_risk: RiskLevel::None,
        user_risk: RiskLevel::None,
        strength: Strength::of(&["pwd"], None),
        signed_in_at: NOW - 3600,
        now: NOW,
    }
}

const NOW: i64 = 1_796_119_200; // Tuesday 2026-12-01 10:00:00 UTC

fn check(policies: &str, change: impl FnOnce(&mut Facts<'static>), expected: Verdict) {
    let policies = compile(policies).unwrap();
    let mut f = facts();
    change(&mut f);
    let decision = policies.decide(&f);
    assert_eq!(decision.verdict, expected, "{decision:#?}");
}

fn allow() -> Verdict {
    Verdict::Allow
}
fn block(p: &str) -> Verdict {
    Verdict::Block { policy: p.into() }
}
fn mfa(p: &str) -> Verdict {
    Verdict::RequireMfa { policy: p.into() }
}
fn passkey(p: &str) -> Verdict {
    Verdict::RequirePasskey { policy: p.into() }
}

const REQUIRE_MFA_FOR_PAYROLL: &str = r#"
- name: payroll needs mfa
  state: on
  users: { include: [all] }
  apps: { include: ["app:payroll"] }
  grant: { require: [mfa] }
"#;

#[test]
fn require_mfa_applies_only_to_its_app_and_is_met_by_a_second_factor() {
    let p = REQUIRE_MFA_FOR_PAYROLL;
    check(p, |_| {}, allow());
    check(p, |f| f.app = "payroll", mfa("payroll needs mfa"));
    check(
        p,
        |f| {
            f.app = "payroll";
            f.strength = Strength::of(&["pwd", "otp"], None);
        },
        allow(),
    );
    check(
        p,
        |f| {
            f.app = "payroll";
            f.strength = Strength::of(&["pwd", "pin"], None);
        },
        mfa("payroll needs mfa"),
    );
    check(
        p,
        |f| {
            f.app = "payroll";
            f.strength = Strength::of(&["pwd"], Some("mfa-maybe"));
        },
        mfa("payroll needs mfa"),
    );
}

#[test]
fn blocked_locations_deny_and_deny_wins_over_every_requirement() {
    let p = r#"
- name: block embargoed
  state: on
  users: { include: [all] }
  apps: { include: [all] }
  conditions: { locations: { include: ["location:embargoed"] } }
  grant: { block: true }
- name: everyone needs mfa
  state: on
  users: { include: [all] }
  apps: { include: [all] }
  grant: { require: [mfa] }
"#;
    check(p, |f| f.country = Some("KP"), block("block embargoed"));
    check(
        p,
        |f| {
            f.country = Some("KP");
            f.strength = Strength::of(&["hwk", "mfa"], None);
        },
        block("block embargoed"),
    );
    check(p, |_| {}, mfa("everyone needs mfa"));
    // An address unknown to the location database is in no country.
    check(p, |f| f.country = None, mfa("everyone needs mfa"));
}

#[test]
fn trusted_locations_can_be_excluded() {
    let p = r#"
- name: mfa outside the office
  state: on
  users: { include: [all] }
  apps: { include: [all] }
  conditions: { locations: { include: [any], exclude: [trusted] } }
  grant: { require: [mfa] }
"#;
    check(p, |_| {}, mfa("mfa outside the office"));
    check(p, |f| f.ip = "203.0.113.50".parse().unwrap(), allow());
    check(p, |f| f.ip = "2001:db8:1:2::1".parse().unwrap(), allow());
    check(
        p,
        |f| f.ip = "2001:db8:2::1".parse().unwrap(),
        mfa("mfa outside the office"),
    );
}

#[test]
fn ipv4_mapped_ranges_and_addresses_are_ipv4_and_far_times_do_not_overflow() {
    let p = r#"
- name: not from mapped
  state: on
  users: { include: [all] }
  apps: { include: [all] }
  conditions:
    locations: { include: ["location:mapped"] }
    times: [{ days: [mon, tue, wed, thu, fri, sat, sun], from: "00:00", to: "24:00", utc_offset_minutes: 840 }]
  grant: { block: true }
"#;
    check(
        p,
        |f| f.ip = "198.51.100.7".parse().unwrap(),
        block("not from mapped"),
    );
    check(
        p,
        |f| f.ip = "::ffff:198.51.100.7".parse().unwrap(),
        block("not from mapped"),
    );
    check(p, |f| f.ip = "192.0.2.1".parse().unwrap(), allow());
    // The end of time (and before its start) is decided, not an overflow.
    check(
        p,
        |f| {
            f.ip = "198.51.100.7".parse().unwrap();
            f.now = i64::MAX;
        },
        block("not from mapped"),
    );
    check(
        p,
        |f| {
            f.ip = "198.51.100.7".parse().unwrap();
            f.now = i64::MIN;
            f.signed_in_at = i64::MAX;
        },
        block("not from mapped"),
    );
}

#[test]
fn assignment_is_a_policy_that_excludes_the_assigned() {
    // What an app's "assignment required" setting becomes.
    let p = r#"
- name: "wiki: assignment required"
  state: on
  users: { include: [all], exclude: [assigned] }
  apps: { include: ["app:wiki"] }
  grant: { block: true }
"#;
    check(p, |_| {}, block("wiki: assignment required"));
    check(p, |f| f.user.assigned = true, allow());
    check(p, |f| f.app = "crm", allow());
}

#[test]
fn users_groups_and_admins_are_included_and_excluded() {
    let p = r#"
- name: staff but not ada
  state: on
  users: { include: ["group:staff", admins], exclude: ["user:ADA@example.com"] }
  apps: { include: [all] }
  grant: { block: true }
"#;
    let staff: &'static [String] = Box::leak(Box::new(["staff".to_owned()]));
    check(p, |_| {}, allow());
    check(
        p,
        |f| {
            f.user.groups = staff;
            f.user.email = Some("bob@example.com");
        },
        block("staff but not ada"),
    );
    check(p, |f| f.user.groups = staff, allow());
    // Only a verified email matches: an unverified one is absent from the facts.
    check(
        p,
        |f| {
            f.user.admin = true;
            f.user.email = None;
        },
        block("staff but not ada"),
    );
    check(
        p,
        |f| {
            f.user.admin = true;
            f.user.email = None;
            f.user.subject = "ADA@example.com";
        },
        allow(),
    );
}

#[test]
fn passkeys_are_asked_for_when_required_and_password_with_totp_is_not_one() {
    let p = r#"
- name: payroll needs a passkey
  state: on
  users: { include: [all] }
  apps: { include: ["app:payroll"] }
  grant: { require: [passkey] }
"#;
    let on_payroll = |amr: &'static [&'static str]| {
        move |f: &mut Facts<'static>| {
            f.app = "payroll";
            f.strength = Strength::of(amr, None);
        }
    };
    check(
        p,
        on_payroll(&["pwd", "otp", "mfa"]),
        passkey("payroll needs a passkey"),
    );
    check(p, on_payroll(&["hwk", "mfa"]), allow());
    check(p, on_payroll(&["swk", "mfa"]), allow());
    let either = r#"
- name: mfa or passkey
  state: on
  users: { include: [all] }
  apps: { include: [all] }
  grant: { require: [passkey, mfa] }
- name: both
  state: on
  users: { include: [all] }
  apps: { include: ["app:grafana"] }
  grant: { require: [mfa, passkey], all: true }
"#;
    check(either, |_| {}, mfa("mfa or passkey"));
    check(either, on_payroll(&["pwd", "otp"]), allow());
    check(
        either,
        |f| {
            f.app = "grafana";
            f.strength = Strength::of(&["pwd", "otp"], None);
        },
        passkey("both"),
    );
}

#[test]
fn report_only_and_off_never_change_access_and_report_only_is_reported() {
    let p = r#"
- name: would block
  state: report-only
  users: { include: [all] }
  apps: { include: [all] }
  grant: { block: true }
- name: switched off
  state: off
  users: { include: [all] }
  apps: { include: [all] }
  grant: { block: true }
"#;
    let decision = compile(p).unwrap().decide(&facts());
    assert_eq!(decision.verdict, Verdict::Allow);
    assert_eq!(
        decision.results,
        [PolicyResult {
            policy: "would block".into(),
            state: PolicyState::ReportOnly,
            outcome: Outcome::Blocked,
        }]
    );
}

#[test]
fn risk_platform_and_time_conditions() {
    let p = r#"
- name: risky sign-ins need mfa
  state: on
  users: { include: [all] }
  apps: { include: [all] }
  conditions: { sign_in_risk: [medium, high] }
  grant: { require: [mfa] }
- name: high user risk is blocked
  state: on
  users: { include: [all] }
  apps: { include: [all] }
  conditions: { user_risk: [high] }
  grant: { block: true }
- name: no phones on grafana
  state: on
  users: { include: [all] }
  apps: { include: ["app:grafana"] }
  conditions: { platforms: { include: [any], exclude: [windows, macos, linux] } }
  grant: { block: true }
- name: payroll in office hours
  state: on
  users: { include: [all] }
  apps: { include: ["app:payroll"] }
  conditions:
    times: [{ days: [sat, sun], from: "00:00", to: "24:00" }, { days: [mon, tue, wed, thu, fri], from: "18:00", to: "08:00", utc_offset_minutes: 60 }]
  grant: { block: true }
"#;
    check(p, |f| f.sign_in_risk = RiskLevel::Low, allow());
    check(
        p,
        |f| f.sign_in_risk = RiskLevel::High,
        mfa("risky sign-ins need mfa"),
    );
    check(
        p,
        |f| f.user_risk = RiskLevel::High,
        block("high user risk is blocked"),
    );
    check(p, |f| f.app = "grafana", allow());
    check(
        p,
        |f| {
            f.app = "grafana";
            f.platform = Platform::Android;
        },
        block("no phones on grafana"),
    );
    // Tuesday 11:00 in UTC+1: office hours.
    check(p, |f| f.app = "payroll", allow());
    // Tuesday 19:00 in UTC+1, and Wednesday 06:59 (the window started on Tuesday).
    for now in [NOW + 8 * 3600, NOW + 20 * 3600 - 60] {
        check(
            p,
            |f| {
                f.app = "payroll";
                f.now = now;
            },
            block("payroll in office hours"),
        );
    }
    // Wednesday 08:00 in UTC+1: open again. Saturday: closed all day.
    check(
        p,
        |f| {
            f.app = "payroll";
            f.now = NOW + 21 * 3600;
        },
        allow(),
    );
    check(
        p,
        |f| {
            f.app = "payroll";
            f.now = NOW + 4 * 86_400;
        },
        block("payroll in office hours"),
    );
}

#[test]
fn sign_in_frequency_asks_for_a_fresh_sign_in_and_session_controls_combine() {
    let p = r#"
- name: daily sign-in
  state: on
  users: { include: [all] }
  apps: { include: [all] }
  grant: { require: [mfa] }
  session: { sign_in_frequency_hours: 24 }
- name: payroll hourly, no persistent cookie
  state: on
  users: { include: [all] }
  apps: { include: ["app:payroll"] }
  grant: { require: [mfa] }
  session: { sign_in_frequency_hours: 1, no_persistent_session: true }
"#;
    let strong = |f: &mut Facts<'static>| f.strength = Strength::of(&["pwd", "otp"], None);
    check(p, strong, allow());
    check(
        p,
        |f| {
            strong(f);
            f.signed_in_at = NOW - 25 * 3600;
        },
        Verdict::RequireSignIn {
            policy: "daily sign-in".into(),
        },
    );
    let policies = compile(p).unwrap();
    let mut f = facts();
    strong(&mut f);
    f.app = "payroll";
    f.signed_in_at = NOW - 7200;
    let d = policies.decide(&f);
    assert_eq!(
        d.verdict,
        Verdict::RequireSignIn {
            policy: "payroll hourly, no persistent cookie".into()
        }
    );
    assert_eq!(
        d.session,
        SessionControls {
            sign_in_frequency_hours: Some(1),
            no_persistent_session: true
        }
    );
}

fn refused(policies: &str, field: &str, reason_has: &str) {
    let e = compile(policies).unwrap_err();
    assert_eq!(e.field, field, "{e}");
    assert!(e.reason.contains(reason_has), "{e}");
}

#[test]
fn bad_policies_are_refused_naming_the_field() {
    let base = |users: &str, apps: &str, rest: &str| {
        format!("- name: p\n  state: on\n  users: {users}\n  apps: {apps}\n{rest}")
    };
    let all = "{ include: [all] }";
    refused(
        &base("{ include: [] }", all, "  grant: { block: true }\n"),
        "users.include",
        "at least one",
    );
    refused(
        &base(
            "{ include: [all], exclude: [group:nobody] }",
            all,
            "  grant: { block: true }\n",
        ),
        "users.exclude[0]",
        "no group is named \"nobody\"",
    );
    assert!(serde_yaml_ng::from_str::<Vec<Policy>>(&base(
        "{ include: [everyone] }",
        all,
        "  grant: { block: true }\n"
    ))
    .unwrap_err()
    .to_string()
    .contains("write all, admins, assigned, user:NAME, group:NAME"));
    refused(
        &base(all, all, "  grant: { block: true, require: [mfa] }\n"),
        "grant",
        "either block",
    );
    refused(
        &base(all, "{ include: [app:nope] }", "  grant: { block: true }\n"),
        "apps.include[0]",
        "no app",
    );
    refused(
        &base(
            all,
            all,
            "  conditions: { locations: { include: [location:mars] } }\n  grant: { block: true }\n",
        ),
        "conditions.locations.include[0]",
        "no location",
    );
    refused(
        &base(all, all, "  grant: { require: [] }\n"),
        "grant",
        "either block",
    );
    refused(
        &base(
            all,
            all,
            "  conditions: { times: [{ days: [mon], from: \"25:00\", to: \"10:00\" }] }\n  grant: { block: true }\n",
        ),
        "conditions.times[0]",
        "HH:MM",
    );
    refused(
        &base(
            all,
            all,
            "  grant: { block: true }\n  session: { sign_in_frequency_hours: 0 }\n",
        ),
        "session.sign_in_frequency_hours",
        "at least 1",
    );
    // Rules for what is written (stored policies from before them still load).
    let refused_new = |yaml: &str, field: &str, reason_has: &str| {
        let p: Vec<Policy> = serde_yaml_ng::from_str(yaml).unwrap();
        compile(yaml).unwrap();
        let e = Policies::check_new_policy(&p[0]).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        assert!(e.reason.contains(reason_has), "{e}");
    };
    refused_new(
        &base(
            all,
            all,
            "  conditions: { times: [{ days: [mon], from: \"+1:30\", to: \"10:00\" }] }\n  grant: { block: true }\n",
        ),
        "conditions.times[0]",
        "two digits",
    );
    refused_new(
        &base(all, all, "  grant: { block: true, all: true }\n"),
        "grant.all",
        "a block has none",
    );
    for name in [
        "\"\u{202E}evil\"",
        "\" p \"",
        "\"block\u{200B}\"",
        "\"a\u{061C}b\"",
        "\"a\u{2028}b\"",
        "\"\u{FEFF}p\"",
    ] {
        refused_new(
            &format!("- name: {name}\n  state: on\n  users: {all}\n  apps: {all}\n  grant: {{ block: true }}\n"),
            "name",
            "",
        );
    }
    let twice = format!(
        "{}{}",
        base(all, all, "  grant: { block: true }\n"),
        base(all, all, "  grant: { block: true }\n")
    );
    refused(&twice, "name", "another policy");
    // Unknown fields are refused by the format itself.
    assert!(serde_yaml_ng::from_str::<Vec<Policy>>(&base(
        all,
        all,
        "  grant: { block: true }\n  colour: red\n"
    ))
    .is_err());
}

#[test]
fn bad_locations_are_refused_naming_the_field() {
    let check = |yaml: &str, field: &str, reason_has: &str| {
        let locations: Vec<NamedLocation> = serde_yaml_ng::from_str(yaml).unwrap();
        let e = Policies::compile(&[], &locations, &Directory).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        assert!(e.reason.contains(reason_has), "{e}");
    };
    check(
        "- { name: x, countries: [UK] }",
        "countries[0]",
        "ISO 3166-1",
    );
    check(
        "- { name: x, countries: [de] }",
        "countries[0]",
        "ISO 3166-1",
    );
    check("- { name: x }", "cidrs", "at least one");
    check(
        "- { name: x, countries: [DE] }\n- { name: x, countries: [FR] }",
        "name",
        "another location",
    );
    assert!(
        serde_yaml_ng::from_str::<Vec<NamedLocation>>("- { name: x, cidrs: [10.0.0.0/33] }")
            .is_err()
    );
}

#[test]
fn policies_round_trip_through_json() {
    let policies: Vec<Policy> = serde_yaml_ng::from_str(REQUIRE_MFA_FOR_PAYROLL).unwrap();
    let json = serde_json::to_string(&policies).unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<Policy>>(&json).unwrap(),
        policies
    );
}

#[test]
fn apps_own_rules_do_not_count_towards_the_policy_limit() {
    let policy = |name: String| Policy {
        name,
        state: PolicyState::On,
        users: Targets {
            include: vec![UserTarget::All],
            exclude: vec![],
        },
        apps: Targets {
            include: vec![AppTarget::All],
            exclude: vec![],
        },
        conditions: Conditions::default(),
        grant: Grant {
            require: vec![Control::Mfa],
            ..Grant::default()
        },
        session: SessionControls::default(),
    };
    let most: Vec<Policy> = (0..compile::MAX_POLICIES)
        .map(|i| policy(format!("p{i}")))
        .collect();
    let rules = vec![policy("wiki: require MFA".into())];
    assert!(Policies::compile_with_rules(&rules, &most, &[], &Directory).is_ok());
    let mut too_many = most.clone();
    too_many.push(policy("one more".into()));
    let err = Policies::compile_with_rules(&rules, &too_many, &[], &Directory).unwrap_err();
    assert_eq!(err.to_string(), "policies: at most 500");
    // A rule and a policy of one name are refused, naming it.
    let clash = vec![policy("p0".into())];
    assert!(Policies::compile_with_rules(&clash, &most, &[], &Directory)
        .unwrap_err()
        .to_string()
        .contains("another policy has this name"));
}

#[test]
fn a_new_location_may_not_seem_to_hold_ipv4_addresses_it_never_matches() {
    let location = |cidr: &str| NamedLocation {
        name: "l".into(),
        cidrs: vec![cidr.parse().unwrap()],
        countries: vec![],
        trusted: false,
    };
    for wide in ["::/0", "::ffff:10.50.0.0/95", "::/64"] {
        let e = Policies::check_new_location(&location(wide)).unwrap_err();
        assert_eq!(e.field, "cidrs[0]", "{wide}: {e}");
    }
    for fine in [
        "::ffff:10.50.0.0/112",
        "2001:db8::/32",
        "10.0.0.0/8",
        "::ffff:0:0/96",
    ] {
        Policies::check_new_location(&location(fine)).unwrap();
    }
}
