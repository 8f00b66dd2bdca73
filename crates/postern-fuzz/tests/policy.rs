//! Fuzz targets for conditional access: policy files as an administrator could write them (any
//! text) are refused or compiled, never a panic; and for policies spelled from random bytes,
//! decisions keep their promises: report-only and off policies never change access, deny wins,
//! and excluding the user takes a policy out of the decision.

use std::sync::Arc;

use postern_policy::{
    AppTarget, Conditions, Control, Facts, Grant, Known, LocationTarget, NamedLocation, Platform,
    Policies, Policy, PolicyState, RiskLevel, SessionControls, Strength, Targets, TimeWindow,
    UserFacts, UserTarget, Verdict, Weekday,
};

struct Directory;
impl Known for Directory {
    fn group(&self, name: &str) -> bool {
        matches!(name, "staff" | "finance")
    }
    fn app(&self, name: &str) -> bool {
        matches!(name, "wiki" | "payroll")
    }
}

fn locations() -> Vec<NamedLocation> {
    vec![
        NamedLocation {
            name: "office".into(),
            cidrs: vec!["10.0.0.0/8".parse().unwrap()],
            countries: vec![],
            trusted: true,
        },
        NamedLocation {
            name: "de".into(),
            countries: vec!["DE".into()],
            cidrs: vec![],
            trusted: false,
        },
    ]
}

/// Any text as a policy file: parsing and compiling refuse or accept, never panic.
#[test]
fn fuzz_policy_file() {
    bolero::check!().for_each(|input: &[u8]| {
        let Ok(text) = std::str::from_utf8(input) else {
            return;
        };
        if let Ok(policies) = serde_yaml_ng::from_str::<Vec<Policy>>(text) {
            let _ = Policies::compile(&policies, &locations(), &Directory);
        }
    });
}

/// Reads bytes one at a time, 0 once they run out.
struct Bytes<'a>(std::slice::Iter<'a, u8>);
impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }
    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[usize::from(self.next()) % from.len()].clone()
    }
    fn some<T: Clone>(&mut self, from: &[T]) -> Vec<T> {
        let n = self.next() % 3;
        (0..n).map(|_| self.pick(from)).collect()
    }
}

fn policy(b: &mut Bytes, i: usize) -> Policy {
    let users = [
        UserTarget::All,
        UserTarget::Admins,
        UserTarget::Assigned,
        UserTarget::User("ada@example.com".into()),
        UserTarget::Group("staff".into()),
    ];
    let apps = [
        AppTarget::All,
        AppTarget::App("wiki".into()),
        AppTarget::App("payroll".into()),
    ];
    let places = [
        LocationTarget::Any,
        LocationTarget::Trusted,
        LocationTarget::Named("de".into()),
    ];
    let platforms = [
        Platform::Any,
        Platform::Windows,
        Platform::Android,
        Platform::Linux,
    ];
    let risks = [
        RiskLevel::None,
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
    ];
    let controls = [Control::Mfa, Control::Passkey];
    let block = b.next().is_multiple_of(3);
    Policy {
        name: format!("p{i}"),
        state: b.pick(&[PolicyState::On, PolicyState::Off, PolicyState::ReportOnly]),
        users: Targets {
            include: vec![b.pick(&users)],
            exclude: b.some(&users),
        },
        apps: Targets {
            include: vec![b.pick(&apps)],
            exclude: b.some(&apps),
        },
        conditions: Conditions {
            locations: (b.next().is_multiple_of(2)).then(|| Targets {
                include: vec![b.pick(&places)],
                exclude: b.some(&places),
            }),
            platforms: (b.next().is_multiple_of(2)).then(|| Targets {
                include: vec![b.pick(&platforms)],
                exclude: b.some(&platforms),
            }),
            sign_in_risk: b.some(&risks),
            user_risk: b.some(&risks),
            times: if b.next().is_multiple_of(4) {
                vec![TimeWindow {
                    days: vec![b.pick(&[Weekday::Mon, Weekday::Sat])],
                    from: format!("{:02}:00", b.next() % 24),
                    to: format!("{:02}:30", b.next() % 24),
                    utc_offset_minutes: i16::from(b.next() % 5) * 60 - 120,
                }]
            } else {
                vec![]
            },
        },
        grant: Grant {
            block,
            require: if block {
                vec![]
            } else {
                vec![b.pick(&controls)]
            },
            all: !block && b.next().is_multiple_of(2),
        },
        session: SessionControls {
            sign_in_frequency_hours: (b.next().is_multiple_of(3))
                .then_some(1 + u32::from(b.next() % 48)),
            no_persistent_session: b.next().is_multiple_of(2),
        },
    }
}

#[test]
fn fuzz_policy_decisions() {
    bolero::check!().for_each(|input: &[u8]| {
        let mut b = Bytes(input.iter());
        let count = usize::from(b.next() % 6);
        let policies: Vec<Policy> = (0..count).map(|i| policy(&mut b, i)).collect();
        let groups = if b.next().is_multiple_of(2) {
            vec!["staff".to_owned()]
        } else {
            vec![]
        };
        let amr: &[&[&str]] = &[&["pwd"], &["pwd", "otp"], &["hwk", "mfa"]];
        let facts = Facts {
            user: UserFacts {
                subject: "sub",
                email: Some("ada@example.com"),
                groups: &groups,
                admin: b.next().is_multiple_of(2),
                assigned: b.next().is_multiple_of(2),
            },
            app: b.pick(&["wiki", "payroll"]),
            ip: b.pick(&["10.1.2.3".parse().unwrap(), "192.0.2.1".parse().unwrap()]),
            country: b.pick(&[None, Some("DE"), Some("US")]),
            platform: b.pick(&[Platform::Windows, Platform::Android, Platform::Linux]),
            sign_in_risk: b.pick(&[RiskLevel::None, RiskLevel::High]),
            user_risk: b.pick(&[RiskLevel::None, RiskLevel::Medium]),
            strength: Strength::of(b.pick(amr), None),
            signed_in_at: 1_796_119_200 - i64::from(b.next()) * 3600,
            now: 1_796_119_200 + i64::from(b.next()) * 1800,
        };
        let compiled = Policies::compile(&policies, &locations(), &Directory).unwrap();
        let decision = compiled.decide(&facts);

        // Report-only and off policies never change access: with every policy so, all is allowed.
        let mut watching = policies.clone();
        for p in &mut watching {
            if p.state == PolicyState::On {
                p.state = PolicyState::ReportOnly;
            }
        }
        let watched = Policies::compile(&watching, &locations(), &Directory)
            .unwrap()
            .decide(&facts);
        assert_eq!(watched.verdict, Verdict::Allow);
        assert_eq!(watched.results.len(), decision.results.len());

        // Deny wins: a blocking policy that applies to everyone decides, whatever else applies.
        let mut blocked = policies.clone();
        blocked.push(Policy {
            name: "block all".into(),
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
                block: true,
                require: vec![],
                all: false,
            },
            session: SessionControls::default(),
        });
        let verdict = Policies::compile(&blocked, &locations(), &Directory)
            .unwrap()
            .decide(&facts)
            .verdict;
        assert!(matches!(verdict, Verdict::Block { .. }), "{verdict:?}");

        // The verdict names an enforced policy that applied, with that outcome.
        let named = match &decision.verdict {
            Verdict::Allow => None,
            Verdict::Block { policy }
            | Verdict::RequireMfa { policy }
            | Verdict::RequirePasskey { policy }
            | Verdict::RequireSignIn { policy } => Some(policy.clone()),
        };
        if let Some(name) = named {
            let r = decision
                .results
                .iter()
                .find(|r| Arc::ptr_eq(&r.policy, &name) || r.policy == name)
                .expect("the deciding policy is among the results");
            assert_eq!(r.state, PolicyState::On);
        }
    });
}
