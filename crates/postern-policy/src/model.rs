//! Policies and named locations as data: what the admin API, the CLI and `apply` files carry.
//! Every field is checked by [`crate::Policies::compile`], which names the field it refuses.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Whether a policy is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyState {
    On,
    Off,
    /// Evaluated and reported with every decision, never enforced.
    ReportOnly,
}

/// A conditional-access policy: who and what it is about, when it applies, what it demands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    pub state: PolicyState,
    pub users: Targets<UserTarget>,
    pub apps: Targets<AppTarget>,
    #[serde(default)]
    pub conditions: Conditions,
    pub grant: Grant,
    #[serde(default)]
    pub session: SessionControls,
}

/// Include and exclude lists; exclude wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "T: Deserialize<'de>"))]
pub struct Targets<T> {
    pub include: Vec<T>,
    #[serde(default)]
    pub exclude: Vec<T>,
}

/// A user, group or role: `all`, `admins`, `assigned`, `user:EMAIL-OR-SUBJECT`, `group:NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum UserTarget {
    All,
    /// Users with the admin role.
    Admins,
    /// Users assigned to the app asked for (themselves or through a group), as `app assign`
    /// names them.
    Assigned,
    /// A user by verified email (any case) or subject.
    User(String),
    /// Members of a group (the directory's groups, or an issuer's `groups` claim).
    Group(String),
}

/// An app: `all` or `app:NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AppTarget {
    All,
    App(String),
}

/// When a policy applies. An absent condition always holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<Targets<LocationTarget>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platforms: Option<Targets<Platform>>,
    /// The sign-in risk levels it applies to; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sign_in_risk: Vec<RiskLevel>,
    /// The user risk levels it applies to; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_risk: Vec<RiskLevel>,
    /// The times it applies in; empty: always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub times: Vec<TimeWindow>,
}

/// A place: `any`, `trusted` (any trusted named location) or `location:NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LocationTarget {
    Any,
    Trusted,
    Named(String),
}

/// The client's operating system, from its user agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Platform {
    Any,
    Android,
    Ios,
    Windows,
    Macos,
    Linux,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RiskLevel {
    None,
    Low,
    Medium,
    High,
}

/// Days and minutes of the day, at a fixed offset from UTC. `from` after `to` spans midnight
/// (the days are those the window starts on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    pub days: Vec<Weekday>,
    /// `HH:MM`.
    pub from: String,
    /// `HH:MM`, exclusive.
    pub to: String,
    /// Minutes east of UTC.
    #[serde(default)]
    pub utc_offset_minutes: i16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// What a policy demands once it applies: `{ block: true }`, or controls to `require`, any one
/// of them (or `all: true`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub block: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require: Vec<Control>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Control {
    Mfa,
    Passkey,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionControls {
    /// Sign in again once the last sign-in is older than this many hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_in_frequency_hours: Option<u32>,
    /// The session cookie ends with the browser session.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_persistent_session: bool,
}

/// A named location: address ranges and countries, trusted or not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedLocation {
    pub name: String,
    #[serde(default)]
    pub cidrs: Vec<IpNet>,
    /// ISO 3166-1 alpha-2 codes.
    #[serde(default)]
    pub countries: Vec<String>,
    #[serde(default)]
    pub trusted: bool,
}

macro_rules! text_form {
    ($ty:ident, $what:literal, [$($word:literal => $unit:ident),*], [$($prefix:literal => $named:ident),*]) => {
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $(if s == $word {
                    return Ok($ty::$unit);
                })*
                $(if let Some(name) = s.strip_prefix(concat!($prefix, ":")) {
                    if name.is_empty() {
                        return Err(format!("{s:?} names no {}", $prefix));
                    }
                    return Ok($ty::$named(name.to_owned()));
                })*
                Err(format!(
                    "{s:?} is not {}: write {}",
                    $what,
                    [$($word,)* $(concat!($prefix, ":NAME"),)*].join(", ")
                ))
            }
        }

        impl From<$ty> for String {
            fn from(t: $ty) -> String {
                match t {
                    $($ty::$unit => $word.to_owned(),)*
                    $($ty::$named(name) => format!(concat!($prefix, ":{}"), name),)*
                }
            }
        }
    };
}

text_form!(UserTarget, "a user target", ["all" => All, "admins" => Admins, "assigned" => Assigned], ["user" => User, "group" => Group]);
text_form!(AppTarget, "an app target", ["all" => All], ["app" => App]);
text_form!(LocationTarget, "a location target", ["any" => Any, "trusted" => Trusted], ["location" => Named]);
