//! The audit log and the sign-in log: writing each record into its hash chain (see [`crate::chain`]),
//! reading them in pages, pruning sign-ins past their retention, and verifying a chain.
//!
//! **Invariant:** an admin change is audited in the transaction that makes it. A handler takes a
//! [`Store::audited`] handle; the first transaction that handle commits through
//! [`Store::commit`] inserts the audit record before committing, so the change and its record
//! commit together or not at all.

use std::sync::{Arc, Mutex};

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use crate::chain::{self, Broken, Head, Linked, Log, Walker};
use crate::model::Outcome;
use crate::{Store, StoreError};

/// Longest text a sign-in record keeps in one field (names, reasons, user agents' parts): what an
/// issuer or a client sends is cut here, at a character boundary.
pub const SIGNIN_TEXT_BYTES: usize = 512;
/// The most sign-ins one page returns.
pub const MAX_SIGNIN_PAGE: u32 = 1000;
/// Records read per query while verifying a chain: bounded memory whatever the log's length.
const VERIFY_PAGE: i64 = 1000;

/// The audit record of one change, written in the change's transaction.
#[derive(Clone, Debug)]
pub struct Audit {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub detail: String,
    pub request_id: String,
}

impl Store {
    /// A handle on the same database whose next committed transaction also writes `audit`.
    pub fn audited(&self, audit: Audit) -> Store {
        Store {
            pool: self.pool.clone(),
            pending_audit: Some(Arc::new(Mutex::new(vec![audit]))),
        }
    }

    /// [`Store::audited`] with several records for one change (an update that is also a
    /// maintenance switch), written together.
    pub fn audited_all(&self, audits: Vec<Audit>) -> Store {
        Store {
            pool: self.pool.clone(),
            pending_audit: Some(Arc::new(Mutex::new(audits))),
        }
    }

    /// Whether this handle's audit record was written (always true for an unaudited handle).
    pub fn audit_written(&self) -> bool {
        self.pending_audit.as_ref().is_none_or(|slot| {
            slot.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_empty()
        })
    }

    fn take_audit(&self) -> Vec<Audit> {
        let Some(slot) = self.pending_audit.as_ref() else {
            return Vec::new();
        };
        std::mem::take(
            &mut *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Commits `tx`, with this handle's audit record (if not written yet) inserted first.
    pub(crate) async fn commit(&self, tx: Transaction<'static, Sqlite>) -> Result<(), sqlx::Error> {
        self.commit_naming(tx, None, None).await
    }

    /// [`Store::commit`], naming the audit record's target and detail when only the change
    /// knows them (a new connector's ID, the certificate it was issued).
    pub(crate) async fn commit_naming(
        &self,
        mut tx: Transaction<'static, Sqlite>,
        target: Option<&str>,
        detail: Option<String>,
    ) -> Result<(), sqlx::Error> {
        for mut audit in self.take_audit() {
            if let Some(t) = target {
                audit.target = t.to_owned();
            }
            if let Some(d) = &detail {
                audit.detail = d.clone();
            }
            insert_audit(&mut tx, &audit, now_ms()).await?;
        }
        tx.commit().await
    }

    /// Records an audit event on its own (a refused change, which made nothing to join).
    pub async fn record_audit(&self, audit: &Audit) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        insert_audit(&mut tx, audit, now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A random version-4 UUID: the record's ID for a SIEM, stable wherever it is exported.
pub(crate) fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn audit_fields(id: i64, uid: &str, at_ms: i64, a: [&str; 6]) -> String {
    // The chain hashes every column a reader sees, in the table's order.
    let (id, at) = (id.to_string(), at_ms.to_string());
    chain::record_hash("", &[&id, uid, &at, a[0], a[1], a[2], a[3], a[4], a[5]])
}

fn audit_hash(prev: &str, id: i64, uid: &str, at_ms: i64, a: [&str; 6]) -> String {
    // Two-step so that the record's own encoding is one value: hash(prev, encoding).
    chain::record_hash(prev, &[&audit_fields(id, uid, at_ms, a)])
}

async fn insert_audit(
    tx: &mut Transaction<'static, Sqlite>,
    a: &Audit,
    at_ms: i64,
) -> Result<i64, sqlx::Error> {
    let (id, prev) = chain::next(tx, Log::Audit).await?;
    let uid = new_uid();
    let result = a.outcome.as_str();
    let fields = [
        a.actor.as_str(),
        &a.action,
        &a.target,
        result,
        &a.detail,
        &a.request_id,
    ];
    let hash = audit_hash(&prev, id, &uid, at_ms, fields);
    sqlx::query(
        "INSERT INTO audit_events
             (id, uid, at_ms, actor, action, target, result, detail, request_id, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(&uid)
    .bind(at_ms)
    .bind(&a.actor)
    .bind(&a.action)
    .bind(&a.target)
    .bind(result)
    .bind(&a.detail)
    .bind(&a.request_id)
    .bind(&prev)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    chain::advance(tx, Log::Audit, &hash).await?;
    Ok(id)
}

/// Chains audit events written before the logs were chained (schema 9), oldest first, and moves
/// the head past them. Runs at open; does nothing once every event is chained.
pub(crate) async fn chain_unchained(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "SELECT id, at_ms, actor, action, target, result, detail, request_id
         FROM audit_events WHERE hash IS NULL ORDER BY id",
    )
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let head = sqlx::query("SELECT seq, hash FROM log_heads WHERE log = 'audit'")
        .fetch_one(&mut *tx)
        .await?;
    let (mut seq, mut prev): (i64, String) = (head.get(0), head.get(1));
    if seq == 0 {
        // The first chained event is the oldest kept one.
        let first: i64 = rows[0].get(0);
        sqlx::query("UPDATE log_heads SET anchor_seq = ? WHERE log = 'audit'")
            .bind(first)
            .execute(&mut *tx)
            .await?;
    }
    for r in &rows {
        let id: i64 = r.get(0);
        let uid = new_uid();
        let texts: Vec<String> = (2..8).map(|i| r.get::<String, _>(i)).collect();
        let fields = [
            texts[0].as_str(),
            &texts[1],
            &texts[2],
            &texts[3],
            &texts[4],
            &texts[5],
        ];
        let hash = audit_hash(&prev, id, &uid, r.get(1), fields);
        sqlx::query("UPDATE audit_events SET uid = ?, prev_hash = ?, hash = ? WHERE id = ?")
            .bind(&uid)
            .bind(&prev)
            .bind(&hash)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        (seq, prev) = (id, hash);
    }
    sqlx::query("UPDATE log_heads SET seq = ?, hash = ? WHERE log = 'audit'")
        .bind(seq)
        .bind(&prev)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

// Sign-ins ------------------------------------------------------------------------------------

/// How a sign-in ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigninResult {
    Success,
    Failure,
}

impl SigninResult {
    pub fn as_str(self) -> &'static str {
        match self {
            SigninResult::Success => "success",
            SigninResult::Failure => "failure",
        }
    }
}

/// A sign-in to record: the fields of Entra's `signIn` resource that apply. Text is cut to
/// [`SIGNIN_TEXT_BYTES`] when stored.
#[derive(Clone, Debug)]
pub struct NewSignin {
    pub at_ms: i64,
    pub user_id: Option<String>,
    pub user_principal_name: String,
    pub app_id: Option<String>,
    pub app_display_name: Option<String>,
    pub ip_address: String,
    /// `Browser`, `Mobile Apps and Desktop clients` (a bearer token), as Entra names them.
    pub client_app_used: String,
    /// The request ID of the request that completed (or failed) the sign-in.
    pub correlation_id: String,
    pub is_interactive: bool,
    pub result: SigninResult,
    /// A stable code: `ok`, `bad_password`, `token_invalid`, `not_assigned`, …
    pub error_code: String,
    pub failure_reason: String,
    pub operating_system: Option<String>,
    pub browser: Option<String>,
    /// `singleFactorAuthentication` or `multiFactorAuthentication`.
    pub authentication_requirement: String,
    pub authentication_methods: Vec<String>,
    /// Who checked the credentials: the issuer's URL, or `postern-idp`.
    pub issuer: String,
    /// Where the address is, when a location database is configured and knows it.
    pub location: Option<Location>,
    /// What conditional access and identity protection made of it, when they judged it.
    pub decided: Option<Decided>,
}

/// What conditional access and identity protection made of a sign-in: Entra's
/// `conditionalAccessStatus`, `appliedConditionalAccessPolicies`, `riskLevelDuringSignIn` and
/// `riskEventTypes_v2`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decided {
    /// `success`, `failure` or `notApplied`.
    pub conditional_access_status: String,
    /// `name:result` of each policy that applied (`result`: `success`, `failure`,
    /// `reportOnlySuccess`, `reportOnlyFailure`), at most [`MAX_DECIDED_ITEMS`].
    pub applied_policies: Vec<String>,
    /// `none`, `low`, `medium` or `high`.
    pub risk_level: String,
    /// The detections found in it, at most [`MAX_DECIDED_ITEMS`].
    pub risk_event_types: Vec<String>,
}

/// The most applied policies and detections a sign-in record keeps.
pub const MAX_DECIDED_ITEMS: usize = 32;

/// Where a client address is, as a location database (`--geoip-db`) tells: Entra's
/// `signIn.location`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Location {
    pub city: Option<String>,
    pub state: Option<String>,
    /// ISO 3166-1 alpha-2 code.
    pub country_or_region: Option<String>,
    /// Latitude and longitude in degrees.
    pub coordinates: Option<(f64, f64)>,
}

/// A stored sign-in.
#[derive(Clone, Debug)]
pub struct Signin {
    pub id: i64,
    /// Stable across exports: a SIEM de-duplicates by it.
    pub uid: String,
    pub record: NewSignin,
}

/// Filters for reading sign-ins, newest first.
#[derive(Clone, Debug, Default)]
pub struct SigninQuery {
    /// Unix milliseconds, inclusive.
    pub since_ms: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until_ms: Option<i64>,
    /// The user's principal name (email), compared case-insensitively.
    pub user: Option<String>,
    /// The app's name.
    pub app: Option<String>,
    pub result: Option<SigninResult>,
    /// Only sign-ins older than this ID (the previous page's cursor).
    pub before_id: Option<i64>,
    /// Only sign-ins newer than this ID, oldest first (an exporter's cursor).
    pub after_id: Option<i64>,
    pub limit: u32,
}

pub(crate) fn cut(s: &str) -> &str {
    if s.len() <= SIGNIN_TEXT_BYTES {
        return s;
    }
    let mut end = SIGNIN_TEXT_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn bool_text(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// The sign-in's canonical fields, in the table's column order (NULL as the empty string with a
/// marker, so `None` and `Some("")` differ).
fn signin_hash(prev: &str, id: i64, uid: &str, s: &NewSignin) -> String {
    let opt = |o: &Option<String>| match o {
        Some(v) => format!("s{v}"),
        None => "n".to_owned(),
    };
    let methods = s.authentication_methods.join(",");
    let encoding = chain::record_hash(
        "",
        &[
            &id.to_string(),
            uid,
            &s.at_ms.to_string(),
            &opt(&s.user_id),
            &s.user_principal_name,
            &opt(&s.app_id),
            &opt(&s.app_display_name),
            &s.ip_address,
            &s.client_app_used,
            &s.correlation_id,
            bool_text(s.is_interactive),
            s.result.as_str(),
            &s.error_code,
            &s.failure_reason,
            &opt(&s.operating_system),
            &opt(&s.browser),
            &s.authentication_requirement,
            &methods,
            &s.issuer,
        ],
    );
    let located = match &s.location {
        None => None,
        // A located record hashes its location too; one without hashes as before it existed.
        Some(l) => {
            let (lat, lon) = match l.coordinates {
                Some((lat, lon)) => (format!("s{lat}"), format!("s{lon}")),
                None => ("n".to_owned(), "n".to_owned()),
            };
            let place = chain::record_hash(
                "",
                &[
                    &opt(&l.city),
                    &opt(&l.state),
                    &opt(&l.country_or_region),
                    &lat,
                    &lon,
                ],
            );
            Some(place)
        }
    };
    // So does a decided one, after its place (empty when it has none).
    let decided = s.decided.as_ref().map(|d| {
        chain::record_hash(
            "",
            &[
                &d.conditional_access_status,
                &d.applied_policies.join("\n"),
                &d.risk_level,
                &d.risk_event_types.join(","),
            ],
        )
    });
    match (located, decided) {
        (None, None) => chain::record_hash(prev, &[&encoding]),
        (Some(place), None) => chain::record_hash(prev, &[&encoding, &place]),
        (place, Some(decided)) => {
            chain::record_hash(prev, &[&encoding, place.as_deref().unwrap_or(""), &decided])
        }
    }
}

/// The built-in provider's record of a sign-in step as a sign-in: `app` is the app its client
/// belongs to (ID and name), or the client itself when it belongs to none.
pub(crate) fn from_idp_event(e: &crate::SigninEvent, app: Option<(String, String)>) -> NewSignin {
    let success = e.outcome == "success";
    // The methods as the provider's tokens name them (RFC 8176 `amr`), like the edge's records
    // of any issuer's sign-ins.
    let (methods, requirement): (&[&str], &str) = match e.reason.as_str() {
        _ if !success => (&[], SINGLE_FACTOR),
        "ok_password" => (&["pwd"], SINGLE_FACTOR),
        r if r.starts_with("ok_passkey") => (&["hwk", "mfa"], MULTI_FACTOR),
        r if r.contains("recovery") || r.contains("otp") => (&["pwd", "otp", "mfa"], MULTI_FACTOR),
        _ => (&[], SINGLE_FACTOR),
    };
    let (app_id, app_name) = app.unzip();
    NewSignin {
        at_ms: e.at_ms,
        user_id: e.user_id.clone(),
        user_principal_name: e.email.clone(),
        app_id,
        app_display_name: app_name,
        ip_address: e.ip.clone(),
        client_app_used: BROWSER.to_owned(),
        correlation_id: e.request_id.clone(),
        is_interactive: true,
        result: if success {
            SigninResult::Success
        } else {
            SigninResult::Failure
        },
        error_code: e.reason.clone(),
        failure_reason: if success {
            String::new()
        } else {
            e.reason.replace('_', " ")
        },
        operating_system: e.operating_system.clone(),
        browser: e.browser.clone(),
        authentication_requirement: requirement.to_owned(),
        authentication_methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        issuer: BUILT_IN_ISSUER.to_owned(),
        location: e.location.clone(),
        decided: None,
    }
}

/// Entra's `authenticationRequirement` values.
pub const SINGLE_FACTOR: &str = "singleFactorAuthentication";
pub const MULTI_FACTOR: &str = "multiFactorAuthentication";
/// Entra's `clientAppUsed` for a browser, and for a client presenting a token.
pub const BROWSER: &str = "Browser";
pub const TOKEN_CLIENT: &str = "Mobile Apps and Desktop clients";
/// The issuer named by sign-ins the built-in provider checked.
pub const BUILT_IN_ISSUER: &str = "postern-idp";

/// `s` with every text cut to [`SIGNIN_TEXT_BYTES`], as it is stored.
fn bounded(s: &NewSignin) -> NewSignin {
    let c = |v: &str| cut(v).to_owned();
    let co = |v: &Option<String>| v.as_deref().map(c);
    NewSignin {
        at_ms: s.at_ms,
        user_id: co(&s.user_id),
        user_principal_name: c(&s.user_principal_name),
        app_id: co(&s.app_id),
        app_display_name: co(&s.app_display_name),
        ip_address: c(&s.ip_address),
        client_app_used: c(&s.client_app_used),
        correlation_id: c(&s.correlation_id),
        is_interactive: s.is_interactive,
        result: s.result,
        error_code: c(&s.error_code),
        failure_reason: c(&s.failure_reason),
        operating_system: co(&s.operating_system),
        browser: co(&s.browser),
        authentication_requirement: c(&s.authentication_requirement),
        authentication_methods: cut(&s.authentication_methods.join(","))
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect(),
        issuer: c(&s.issuer),
        location: s.location.as_ref().map(|l| Location {
            city: co(&l.city),
            state: co(&l.state),
            country_or_region: co(&l.country_or_region),
            coordinates: l
                .coordinates
                .filter(|(lat, lon)| lat.is_finite() && lon.is_finite()),
        }),
        decided: s.decided.as_ref().map(|d| {
            let items = |v: &[String]| -> Vec<String> {
                v.iter()
                    .take(MAX_DECIDED_ITEMS)
                    .map(|i| c(&i.replace(['\n', ','], " ")))
                    .collect()
            };
            Decided {
                conditional_access_status: c(&d.conditional_access_status),
                applied_policies: items(&d.applied_policies),
                risk_level: c(&d.risk_level),
                risk_event_types: items(&d.risk_event_types),
            }
        }),
    }
}

pub(crate) const SIGNIN_COLUMNS: &str = "id, uid, at_ms, user_id, user_principal_name, app_id, \
    app_display_name, ip_address, client_app_used, correlation_id, is_interactive, result, \
    error_code, failure_reason, operating_system, browser, authentication_requirement, \
    authentication_methods, issuer, prev_hash, hash, location_city, location_state, \
    location_country, location_latitude, location_longitude, located, ca_status, ca_policies, \
    risk_level, risk_events, decided";

pub(crate) fn signin_from_row(r: &SqliteRow) -> Signin {
    let methods: String = r.get(17);
    Signin {
        id: r.get(0),
        uid: r.get(1),
        record: NewSignin {
            at_ms: r.get(2),
            user_id: r.get(3),
            user_principal_name: r.get(4),
            app_id: r.get(5),
            app_display_name: r.get(6),
            ip_address: r.get(7),
            client_app_used: r.get(8),
            correlation_id: r.get(9),
            is_interactive: r.get::<i64, _>(10) != 0,
            result: if r.get::<String, _>(11) == "success" {
                SigninResult::Success
            } else {
                SigninResult::Failure
            },
            error_code: r.get(12),
            failure_reason: r.get(13),
            operating_system: r.get(14),
            browser: r.get(15),
            authentication_requirement: r.get(16),
            authentication_methods: methods
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
            issuer: r.get(18),
            location: (r.get::<i64, _>(26) != 0).then(|| Location {
                city: r.get(21),
                state: r.get(22),
                country_or_region: r.get(23),
                coordinates: r.get::<Option<f64>, _>(24).zip(r.get::<Option<f64>, _>(25)),
            }),
            decided: (r.get::<i64, _>(31) != 0).then(|| {
                let list = |i: usize, sep: char| -> Vec<String> {
                    r.get::<String, _>(i)
                        .split(sep)
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect()
                };
                Decided {
                    conditional_access_status: r.get(27),
                    applied_policies: list(28, '\n'),
                    risk_level: r.get(29),
                    risk_event_types: list(30, ','),
                }
            }),
        },
    }
}

impl Store {
    /// Records a sign-in in the sign-in log; returns its ID.
    pub async fn record_sign_in(&self, s: &NewSignin) -> Result<i64, StoreError> {
        let s = bounded(s);
        let mut tx = self.write().await?;
        let (id, prev) = chain::next(&mut tx, Log::Signins).await?;
        let uid = new_uid();
        let hash = signin_hash(&prev, id, &uid, &s);
        sqlx::query(&format!(
            "INSERT INTO signins ({SIGNIN_COLUMNS})
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                     ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(id)
        .bind(&uid)
        .bind(s.at_ms)
        .bind(&s.user_id)
        .bind(&s.user_principal_name)
        .bind(&s.app_id)
        .bind(&s.app_display_name)
        .bind(&s.ip_address)
        .bind(&s.client_app_used)
        .bind(&s.correlation_id)
        .bind(s.is_interactive)
        .bind(s.result.as_str())
        .bind(&s.error_code)
        .bind(&s.failure_reason)
        .bind(&s.operating_system)
        .bind(&s.browser)
        .bind(&s.authentication_requirement)
        .bind(s.authentication_methods.join(","))
        .bind(&s.issuer)
        .bind(&prev)
        .bind(&hash)
        .bind(s.location.as_ref().and_then(|l| l.city.as_deref()))
        .bind(s.location.as_ref().and_then(|l| l.state.as_deref()))
        .bind(
            s.location
                .as_ref()
                .and_then(|l| l.country_or_region.as_deref()),
        )
        .bind(s.location.as_ref().and_then(|l| l.coordinates).map(|c| c.0))
        .bind(s.location.as_ref().and_then(|l| l.coordinates).map(|c| c.1))
        .bind(s.location.is_some())
        .bind(
            s.decided
                .as_ref()
                .map_or("notApplied", |d| &d.conditional_access_status),
        )
        .bind(
            s.decided
                .as_ref()
                .map(|d| d.applied_policies.join("\n"))
                .unwrap_or_default(),
        )
        .bind(s.decided.as_ref().map_or("none", |d| &d.risk_level))
        .bind(
            s.decided
                .as_ref()
                .map(|d| d.risk_event_types.join(","))
                .unwrap_or_default(),
        )
        .bind(s.decided.is_some())
        .execute(&mut *tx)
        .await?;
        chain::advance(&mut tx, Log::Signins, &hash).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Sign-ins matching `q`: newest first, or oldest first after `q.after_id`; at most
    /// `q.limit` (capped at [`MAX_SIGNIN_PAGE`]).
    pub async fn signins(&self, q: &SigninQuery) -> Result<Vec<Signin>, StoreError> {
        let mut sql = format!("SELECT {SIGNIN_COLUMNS} FROM signins WHERE 1 = 1");
        let mut binds: Vec<BindValue> = Vec::new();
        if let Some(v) = q.since_ms {
            sql.push_str(" AND at_ms >= ?");
            binds.push(BindValue::Int(v));
        }
        if let Some(v) = q.until_ms {
            sql.push_str(" AND at_ms < ?");
            binds.push(BindValue::Int(v));
        }
        if let Some(v) = &q.user {
            sql.push_str(" AND lower(user_principal_name) = lower(?)");
            binds.push(BindValue::Text(v.clone()));
        }
        if let Some(v) = &q.app {
            sql.push_str(" AND app_display_name = ?");
            binds.push(BindValue::Text(v.clone()));
        }
        if let Some(v) = q.result {
            sql.push_str(" AND result = ?");
            binds.push(BindValue::Text(v.as_str().to_owned()));
        }
        if let Some(v) = q.before_id {
            sql.push_str(" AND id < ?");
            binds.push(BindValue::Int(v));
        }
        if let Some(v) = q.after_id {
            sql.push_str(" AND id > ? ORDER BY id LIMIT ?");
            binds.push(BindValue::Int(v));
        } else {
            sql.push_str(" ORDER BY id DESC LIMIT ?");
        }
        binds.push(BindValue::Int(q.limit.clamp(1, MAX_SIGNIN_PAGE) as i64));
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = match b {
                BindValue::Int(v) => query.bind(v),
                BindValue::Text(v) => query.bind(v),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(signin_from_row).collect())
    }

    /// Deletes sign-ins recorded before `before_ms`, and all but the newest `keep`, from the
    /// oldest end; moves the chain's anchor past them in the same transaction. Returns how many
    /// went.
    ///
    /// What goes is always a prefix of the chain up to the newest record retention removes
    /// (records' times can be out of order by milliseconds: they are read before the write
    /// lock), and the anchor moves only past what this call deleted: records deleted by hand
    /// stay missing to `logs verify`.
    pub async fn prune_signins(&self, before_ms: i64, keep: i64) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let by_age: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM signins WHERE at_ms < ?")
            .bind(before_ms)
            .fetch_one(&mut *tx)
            .await?;
        let by_count: Option<i64> =
            sqlx::query_scalar("SELECT id FROM signins ORDER BY id DESC LIMIT 1 OFFSET ?")
                .bind(keep)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(cut) = by_age.max(by_count) else {
            return Ok(0);
        };
        let cut_hash: String = sqlx::query_scalar("SELECT hash FROM signins WHERE id = ?")
            .bind(cut)
            .fetch_one(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM signins WHERE id <= ?")
            .bind(cut)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        chain::anchor_after(&mut tx, Log::Signins, cut, &cut_hash).await?;
        tx.commit().await?;
        Ok(gone)
    }

    /// Walks `log`'s chain from its anchor to its head and returns the first break, if any.
    pub async fn verify_log(&self, log: Log) -> Result<Verified, StoreError> {
        // One read transaction: the walk sees one state of the log, whatever is written meanwhile.
        let mut tx = self.write().await?;
        let h =
            sqlx::query("SELECT seq, hash, anchor_seq, anchor_hash FROM log_heads WHERE log = ?")
                .bind(log.as_str())
                .fetch_one(&mut *tx)
                .await?;
        let head = Head {
            seq: h.get(0),
            hash: h.get(1),
            anchor_seq: h.get(2),
            anchor_hash: h.get(3),
        };
        let mut walker = Walker::new(head);
        let mut records = 0u64;
        let mut after = i64::MIN;
        let broken = 'walk: loop {
            let page = read_linked(&mut tx, log, after).await?;
            let Some(last) = page.last() else {
                break walker.finish().err();
            };
            after = last.id;
            for r in page {
                if let Err(b) = walker.step(r) {
                    break 'walk Some(b);
                }
                records += 1;
            }
        };
        tx.commit().await?;
        Ok(Verified {
            log,
            records,
            broken,
        })
    }

    // Export cursors -----------------------------------------------------------------------------

    /// The last record of `log` that `sink` acknowledged (0: none).
    pub async fn export_cursor(&self, sink: &str, log: Log) -> Result<i64, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT last_id FROM export_cursors WHERE sink = ? AND log = ?")
                .bind(sink)
                .bind(log.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(v.unwrap_or(0))
    }

    /// Records that `sink` acknowledged every record of `log` up to `last_id`.
    pub async fn set_export_cursor(
        &self,
        sink: &str,
        log: Log,
        last_id: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO export_cursors (sink, log, last_id) VALUES (?, ?, ?)
             ON CONFLICT (sink, log) DO UPDATE SET last_id = MAX(last_id, excluded.last_id)",
        )
        .bind(sink)
        .bind(log.as_str())
        .bind(last_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The result of walking one log.
#[derive(Clone, Debug)]
pub struct Verified {
    pub log: Log,
    /// Records checked.
    pub records: u64,
    /// The first break, or `None` when the log is intact.
    pub broken: Option<Broken>,
}

enum BindValue {
    Int(i64),
    Text(String),
}

async fn read_linked(
    tx: &mut Transaction<'static, Sqlite>,
    log: Log,
    after: i64,
) -> Result<Vec<Linked>, sqlx::Error> {
    let rows = match log {
        Log::Audit => {
            sqlx::query(
                "SELECT id, uid, at_ms, actor, action, target, result, detail, request_id,
                        prev_hash, hash
                 FROM audit_events WHERE id > ? ORDER BY id LIMIT ?",
            )
            .bind(after)
            .bind(VERIFY_PAGE)
            .fetch_all(&mut **tx)
            .await?
        }
        Log::Signins => {
            sqlx::query(&format!(
                "SELECT {SIGNIN_COLUMNS} FROM signins WHERE id > ? ORDER BY id LIMIT ?"
            ))
            .bind(after)
            .bind(VERIFY_PAGE)
            .fetch_all(&mut **tx)
            .await?
        }
    };
    Ok(rows
        .iter()
        .map(|r| {
            let (prev, hash, computed) = match log {
                Log::Audit => {
                    let prev: String = r.get::<Option<String>, _>(9).unwrap_or_default();
                    let texts: Vec<String> = (3..9).map(|i| r.get::<String, _>(i)).collect();
                    let fields = [
                        texts[0].as_str(),
                        &texts[1],
                        &texts[2],
                        &texts[3],
                        &texts[4],
                        &texts[5],
                    ];
                    let uid: String = r.get::<Option<String>, _>(1).unwrap_or_default();
                    let computed = audit_hash(&prev, r.get(0), &uid, r.get(2), fields);
                    (
                        prev,
                        r.get::<Option<String>, _>(10).unwrap_or_default(),
                        computed,
                    )
                }
                Log::Signins => {
                    let s = signin_from_row(r);
                    let prev: String = r.get(19);
                    let computed = signin_hash(&prev, s.id, &s.uid, &s.record);
                    (prev, r.get(20), computed)
                }
            };
            Linked {
                id: r.get(0),
                prev_hash: prev,
                hash,
                computed,
            }
        })
        .collect())
}
