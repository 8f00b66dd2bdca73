//! What a decision costs on every request: 100 policies of every kind against one request.

use criterion::{criterion_group, criterion_main, Criterion};
use postern_policy::{
    AppTarget, Conditions, Control, Facts, Grant, Known, LocationTarget, NamedLocation, Platform,
    Policies, Policy, PolicyState, RiskLevel, SessionControls, Strength, Targets, TimeWindow,
    UserFacts, UserTarget, Weekday,
};

struct All;
impl Known for All {
    fn group(&self, _: &str) -> bool {
        true
    }
    fn app(&self, _: &str) -> bool {
        true
    }
}

fn policies() -> Policies {
    let locations: Vec<NamedLocation> = (0..20)
        .map(|i| NamedLocation {
            name: format!("loc{i}"),
            cidrs: (0..10)
                .map(|j| format!("10.{i}.{j}.0/24").parse().unwrap())
                .collect(),
            countries: vec!["DE".into(), "FR".into()],
            trusted: i % 2 == 0,
        })
        .collect();
    let policies: Vec<Policy> = (0..100)
        .map(|i| Policy {
            name: format!("policy {i}"),
            state: if i % 10 == 0 {
                PolicyState::ReportOnly
            } else {
                PolicyState::On
            },
            users: Targets {
                include: vec![UserTarget::All, UserTarget::Group(format!("g{i}"))],
                exclude: vec![UserTarget::User(format!("user{i}@example.com"))],
            },
            apps: Targets {
                include: vec![if i % 3 == 0 {
                    AppTarget::All
                } else {
                    AppTarget::App(format!("app{}", i % 7))
                }],
                exclude: vec![],
            },
            conditions: Conditions {
                locations: Some(Targets {
                    include: vec![LocationTarget::Any],
                    exclude: vec![
                        LocationTarget::Trusted,
                        LocationTarget::Named(format!("loc{}", i % 20)),
                    ],
                }),
                platforms: Some(Targets {
                    include: vec![Platform::Any],
                    exclude: vec![Platform::Ios],
                }),
                sign_in_risk: vec![RiskLevel::None, RiskLevel::Low, RiskLevel::Medium],
                user_risk: vec![],
                times: vec![TimeWindow {
                    days: vec![Weekday::Mon, Weekday::Tue, Weekday::Wed],
                    from: "08:00".into(),
                    to: "18:00".into(),
                    utc_offset_minutes: 60,
                }],
            },
            grant: Grant {
                block: false,
                require: vec![Control::Mfa, Control::Passkey],
                all: false,
            },
            session: SessionControls {
                sign_in_frequency_hours: Some(24),
                no_persistent_session: false,
            },
        })
        .collect();
    Policies::compile(&policies, &locations, &All).unwrap()
}

fn bench(c: &mut Criterion) {
    let policies = policies();
    let groups = vec!["g1".to_owned(), "g2".to_owned(), "staff".to_owned()];
    let facts = Facts {
        user: UserFacts {
            subject: "sub",
            email: Some("ada@example.com"),
            groups: &groups,
            admin: false,
            assigned: false,
        },
        app: "app1",
        ip: "198.51.100.7".parse().unwrap(),
        country: Some("US"),
        platform: Platform::Windows,
        sign_in_risk: RiskLevel::Low,
        user_risk: RiskLevel::None,
        strength: Strength::of(&["pwd", "otp"], None),
        signed_in_at: 1_796_115_600,
        now: 1_796_119_200,
    };
    assert!(policies.decide(&facts).allowed());
    c.bench_function("decide: 100 policies, 20 locations", |b| {
        b.iter(|| policies.decide(std::hint::black_box(&facts)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
