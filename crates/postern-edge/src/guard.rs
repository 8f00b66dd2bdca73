//! The request guard's limits: request rates per client address and per app, and the size of the
//! head the edge sends down a tunnel. Checked before any other work is spent on a request.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use http::request::Parts;
use postern_proto::limits::{
    head_fits, request_head_bytes, MAX_HEADER_FIELDS, MAX_REQUEST_HEAD_BYTES,
    TUNNEL_MAX_HEADER_LIST_BYTES,
};
use postern_proto::AppId;

use crate::config::Limits;
use crate::rescue::{RateScope, Refusal};
use crate::serve::{client_key, keyed_limiter, sweep_limiter, KeyedLimiter};

type AppLimiter = governor::DefaultKeyedRateLimiter<AppId>;

/// Requests in flight through tunnels per client address (an IPv6 /64).
pub struct InFlightPerAddress {
    max: usize,
    counts: dashmap::DashMap<IpAddr, usize>,
}

/// One request in flight for an address, until dropped.
pub struct AddressPermit {
    owner: Arc<InFlightPerAddress>,
    key: IpAddr,
}

impl InFlightPerAddress {
    /// `max` 0: no limit (and no counting).
    pub fn new(max: usize) -> Arc<InFlightPerAddress> {
        Arc::new(InFlightPerAddress {
            max,
            counts: dashmap::DashMap::new(),
        })
    }

    /// Counts one more request from `ip`, or refuses it when the address has `max` in flight.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Option<AddressPermit>, Refusal> {
        if self.max == 0 {
            return Ok(None);
        }
        let key = client_key(ip);
        let mut n = self.counts.entry(key).or_insert(0);
        if *n >= self.max {
            return Err(Refusal::RateLimited {
                scope: RateScope::InFlight { max: self.max },
                retry_after: Duration::from_secs(1),
            });
        }
        *n += 1;
        Ok(Some(AddressPermit {
            owner: self.clone(),
            key,
        }))
    }

    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> usize {
        self.counts.get(&client_key(ip)).map_or(0, |n| *n)
    }
}

impl Drop for AddressPermit {
    fn drop(&mut self) {
        self.owner.counts.remove_if_mut(&self.key, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

/// The request-rate limiters of the public listener.
pub struct Rates {
    per_ip: Option<Arc<KeyedLimiter>>,
    per_app: Option<AppLimiter>,
    clock: DefaultClock,
}

/// Requests beyond the rate may burst to this multiple of it.
const REQUEST_BURST_FACTOR: u32 = 2;

impl Rates {
    pub fn new(limits: &Limits) -> Rates {
        let per_ip = keyed_limiter(limits.requests_per_ip, REQUEST_BURST_FACTOR).map(Arc::new);
        if let Some(l) = &per_ip {
            sweep_limiter(l.clone());
        }
        let per_app = NonZeroU32::new(limits.requests_per_app).map(|rate| {
            let burst =
                NonZeroU32::new(rate.get().saturating_mul(REQUEST_BURST_FACTOR)).unwrap_or(rate);
            governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
        });
        Rates {
            per_ip,
            per_app,
            clock: DefaultClock::default(),
        }
    }

    /// Admits one request from `ip`, or refuses it with how long to wait.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        let Some(limiter) = &self.per_ip else {
            return Ok(());
        };
        limiter
            .check_key(&client_key(ip))
            .map_err(|not_until| Refusal::RateLimited {
                scope: RateScope::ClientAddress,
                retry_after: round_up(not_until.wait_time_from(self.clock.now())),
            })
    }

    /// Admits one request to `app`, or refuses it with how long to wait.
    pub fn check_app(&self, app: AppId, name: &str) -> Result<(), Refusal> {
        let Some(limiter) = &self.per_app else {
            return Ok(());
        };
        limiter
            .check_key(&app)
            .map_err(|not_until| Refusal::RateLimited {
                scope: RateScope::App {
                    app: name.to_owned(),
                },
                retry_after: round_up(not_until.wait_time_from(self.clock.now())),
            })
    }
}

/// `Retry-After` is in whole seconds; a client told 0 would come straight back.
fn round_up(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(Duration::from_secs(1))
}

/// Refuses a user's request whose head is larger than the edge forwards, before any other work:
/// the servers read up to twice as much, so that this refusal is a page naming the cause.
pub fn check_request_head<B>(req: &http::Request<B>) -> Result<(), Refusal> {
    let target = req.uri().path_and_query().map_or("", |p| p.as_str());
    let headers = req.headers();
    // An HTTP/2 client may send each cookie as its own field (RFC 9113, 8.2.3): together they
    // are one header, as the edge forwards them.
    let cookie_crumbs = headers.get_all(http::header::COOKIE).iter().count();
    let fields = headers.len() - cookie_crumbs.saturating_sub(1);
    if fields > MAX_HEADER_FIELDS || request_head_bytes(target, headers) > MAX_REQUEST_HEAD_BYTES {
        return Err(Refusal::HeadTooLarge);
    }
    Ok(())
}

/// Refuses a tunnel request whose head, as it will travel (the user's headers after hygiene,
/// plus everything the edge added), is larger than the connector accepts, so it is never sent:
/// a peer that receives an oversized head may end the whole tunnel.
pub fn check_tunnel_head(parts: &Parts) -> Result<(), Refusal> {
    let uri = &parts.uri;
    let pseudo = [
        (":method".len(), parts.method.as_str().len()),
        (":scheme".len(), uri.scheme_str().map_or(0, str::len)),
        (
            ":authority".len(),
            uri.authority().map_or(0, |a| a.as_str().len()),
        ),
        (
            ":path".len(),
            uri.path_and_query().map_or(1, |p| p.as_str().len()),
        ),
    ];
    if head_fits(
        &parts.headers,
        &pseudo,
        TUNNEL_MAX_HEADER_LIST_BYTES as usize,
    ) {
        Ok(())
    } else {
        Err(Refusal::HeadTooLarge)
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Request};

    use super::*;

    fn parts(header_bytes: usize) -> Parts {
        let mut req = Request::builder()
            .method("GET")
            .uri("https://app.example/path?q=1")
            .body(())
            .unwrap();
        req.headers_mut().insert(
            "x-big",
            HeaderValue::from_str(&"a".repeat(header_bytes)).unwrap(),
        );
        req.into_parts().0
    }

    #[test]
    fn user_heads_are_limited_in_bytes_and_fields() {
        let req = |bytes: usize, fields: usize| {
            let mut req = Request::get("/").body(()).unwrap();
            req.headers_mut()
                .insert("x-big", HeaderValue::from_str(&"a".repeat(bytes)).unwrap());
            for i in 0..fields {
                req.headers_mut().insert(
                    http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                    HeaderValue::from_static("1"),
                );
            }
            req
        };
        assert!(check_request_head(&req(20 * 1024, 50)).is_ok());
        assert_eq!(
            check_request_head(&req(32 * 1024, 0)),
            Err(Refusal::HeadTooLarge)
        );
        assert_eq!(
            check_request_head(&req(10, 100)),
            Err(Refusal::HeadTooLarge)
        );
    }

    #[test]
    fn heads_that_fit_the_tunnel_pass_and_larger_ones_are_refused() {
        assert!(check_tunnel_head(&parts(1000)).is_ok());
        assert!(check_tunnel_head(&parts(60 * 1024)).is_ok());
        assert_eq!(
            check_tunnel_head(&parts(TUNNEL_MAX_HEADER_LIST_BYTES as usize)),
            Err(Refusal::HeadTooLarge)
        );
    }

    #[test]
    fn rates_refuse_past_the_burst_with_a_whole_second_to_wait() {
        let limits = Limits {
            requests_per_ip: 1,
            requests_per_app: 1,
            ..Limits::default()
        };
        let rates = Rates::new(&limits);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(rates.check_ip(ip).is_ok());
        assert!(rates.check_ip(ip).is_ok());
        match rates.check_ip(ip) {
            Err(Refusal::RateLimited { retry_after, .. }) => {
                assert!(retry_after >= Duration::from_secs(1))
            }
            other => panic!("{other:?}"),
        }
        assert!(rates.check_ip("192.0.2.8".parse().unwrap()).is_ok());
        assert!(rates.check_app(AppId(1), "a").is_ok());
        assert!(rates.check_app(AppId(1), "a").is_ok());
        assert!(rates.check_app(AppId(1), "a").is_err());
        assert!(rates.check_app(AppId(2), "b").is_ok());
    }

    #[test]
    fn requests_in_flight_are_counted_per_address_until_their_permits_drop() {
        let limit = InFlightPerAddress::new(2);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::2".parse().unwrap();
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        let first = limit.acquire(a).unwrap();
        let second = limit.acquire(same_64).unwrap();
        assert!(matches!(
            limit.acquire(a),
            Err(Refusal::RateLimited {
                scope: RateScope::InFlight { max: 2 },
                ..
            })
        ));
        assert!(limit.acquire(other).unwrap().is_some());
        drop(first);
        assert_eq!(limit.held(a), 1);
        let third = limit.acquire(a).unwrap();
        drop((second, third));
        assert_eq!(limit.held(a), 0);
        assert!(
            limit.counts.is_empty(),
            "an address with nothing in flight is forgotten"
        );
        assert!(InFlightPerAddress::new(0).acquire(a).unwrap().is_none());
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let limits = Limits {
            requests_per_ip: 0,
            requests_per_app: 0,
            ..Limits::default()
        };
        let rates = Rates::new(&limits);
        for _ in 0..10_000 {
            assert!(rates.check_ip("192.0.2.7".parse().unwrap()).is_ok());
            assert!(rates.check_app(AppId(1), "a").is_ok());
        }
    }
}
