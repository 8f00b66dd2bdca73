//! Conditional access as a pure function.
//!
//! [`Policies::compile`] checks policies and named locations once (every reference resolved,
//! every value parsed, the field named when one is refused); [`Policies::decide`] then takes
//! the facts of a sign-in or a request, the clock among them, and says allow, block, or what
//! the user must do first, naming every policy that applied and its result. No I/O: the edge
//! (for every issuer) and the built-in provider call the same code, and the tests, fuzz target
//! and benchmark call it directly.

mod compile;
mod country;
mod device;
mod model;
pub mod risk;
mod strength;

use std::net::IpAddr;
use std::sync::Arc;

pub use compile::{Known, Policies, PolicyError};
pub use device::{device_detail, USER_AGENT_BYTES};
pub use model::{
    AppTarget, Conditions, Control, Grant, LocationTarget, NamedLocation, Platform, Policy,
    PolicyState, RiskLevel, SessionControls, Targets, TimeWindow, UserTarget, Weekday,
};
pub use strength::Strength;

/// `net` as the addresses it holds are seen: an IPv4-mapped IPv6 range (`::ffff:a.b.c.d/n`,
/// n ≥ 96) is the IPv4 range, since clients' IPv4-mapped addresses are read as IPv4.
pub fn unmapped_net(net: ipnet::IpNet) -> ipnet::IpNet {
    match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(ipnet::IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// `ip` as IPv4 when it is IPv4-mapped.
pub fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Who is signing in or asking.
#[derive(Clone, Copy, Debug)]
pub struct UserFacts<'a> {
    pub subject: &'a str,
    /// The email, only when verified.
    pub email: Option<&'a str>,
    pub groups: &'a [String],
    pub admin: bool,
    /// Assigned to the app asked for, by user or group.
    pub assigned: bool,
}

/// Everything a decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub user: UserFacts<'a>,
    pub app: &'a str,
    pub ip: IpAddr,
    /// ISO 3166-1 alpha-2, when a location database knows the address.
    pub country: Option<&'a str>,
    pub platform: Platform,
    pub sign_in_risk: RiskLevel,
    pub user_risk: RiskLevel,
    /// What the sign-in proved, and when it happened (seconds since the Unix epoch).
    pub strength: Strength,
    pub signed_in_at: i64,
    /// Seconds since the Unix epoch.
    pub now: i64,
}

/// The result of one policy that applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Satisfied,
    Blocked,
    NeedsMfa,
    NeedsPasskey,
    /// The last sign-in is older than the policy's sign-in frequency allows.
    NeedsSignIn,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyResult {
    pub policy: Arc<str>,
    pub state: PolicyState,
    pub outcome: Outcome,
}

/// What the user gets. Deny wins: a block over any requirement, a passkey over MFA, MFA over a
/// fresh sign-in. Report-only policies never change it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Block { policy: Arc<str> },
    RequireMfa { policy: Arc<str> },
    RequirePasskey { policy: Arc<str> },
    RequireSignIn { policy: Arc<str> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// Every policy that applied (on or report-only), in the order they are defined.
    pub results: Vec<PolicyResult>,
    /// The session controls of the enforced policies that applied, combined: the shortest
    /// sign-in frequency, and no persistent session if any says so.
    pub session: SessionControls,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

#[cfg(test)]
mod tests;
