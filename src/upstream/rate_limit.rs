//! What an upstream says about its rate limit, read once for both users
//! of it: the login proxy (a 429 becomes `temporarily_unavailable` with a
//! wait) and the Management API pacer.
//!
//! - `Retry-After` is either delay-seconds or an HTTP date, and a
//!   recipient must accept the date in all three of HTTP's formats
//!   (RFC 9110 §10.2.3 and §5.6.7).
//! - Auth0 and Okta send `x-ratelimit-{limit,remaining,reset}` and
//!   `X-Rate-Limit-{Limit,Remaining,Reset}` on every response, `reset` in
//!   epoch seconds (Auth0 "Management API Endpoint Rate Limits", Okta
//!   "Rate limits overview"). Some proxies send `reset` as seconds from
//!   now instead; a value below 10⁹ cannot be a recent epoch time, so it
//!   is read as a delay.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

/// One response's rate-limit headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    pub limit: u64,
    pub remaining: u64,
    /// Epoch seconds.
    pub reset: f64,
}

/// The epoch/delay boundary for `reset` values (2001-09-09).
const EPOCH_FLOOR: f64 = 1e9;

/// The longest wait believed: a bigger value is a misconfigured proxy, and a
/// job or a login waiting on it would look hung.
const LONGEST: f64 = 3600.0;

fn number(headers: &HeaderMap, names: [&str; 2]) -> Option<f64> {
    names
        .iter()
        .find_map(|n| headers.get(*n))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

fn reset_epoch(reset: f64, now_epoch: f64) -> f64 {
    if reset < EPOCH_FLOOR {
        now_epoch + reset
    } else {
        reset
    }
}

/// Reads the limit headers of either spelling.
pub fn observed(headers: &HeaderMap, now_epoch: f64) -> Option<Observed> {
    // A limit below one request describes no limit anyone could pace to
    // (a proxy's placeholder): the answer is taken as saying nothing.
    let limit =
        number(headers, ["x-ratelimit-limit", "x-rate-limit-limit"]).filter(|l| *l >= 1.0)?;
    let remaining = number(headers, ["x-ratelimit-remaining", "x-rate-limit-remaining"])?;
    let reset = number(headers, ["x-ratelimit-reset", "x-rate-limit-reset"])?;
    Some(Observed {
        limit: limit as u64,
        remaining: remaining.clamp(0.0, limit) as u64,
        reset: reset_epoch(reset, now_epoch),
    })
}

/// How long the upstream asked to wait: `Retry-After` (seconds or an HTTP
/// date), else until the vendor's `reset`; `None` when it said neither.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let now_epoch = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let from_header = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .and_then(|v| match v.parse::<f64>() {
            Ok(secs) if secs.is_finite() => Some(secs),
            Ok(_) => None,
            Err(_) => httpdate::parse_http_date(v)
                .ok()
                .map(|at| at.duration_since(now).map_or(0.0, |d| d.as_secs_f64())),
        });
    let secs = from_header.or_else(|| {
        number(headers, ["x-ratelimit-reset", "x-rate-limit-reset"])
            .map(|reset| reset_epoch(reset, now_epoch) - now_epoch)
    })?;
    Some(Duration::from_secs_f64(secs.clamp(0.0, LONGEST)))
}

/// Now, in epoch seconds.
pub fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn limit_headers_of_both_spellings_are_read() {
        let h = headers(&[
            ("X-Rate-Limit-Limit", "600"),
            ("X-Rate-Limit-Remaining", "599"),
            ("X-Rate-Limit-Reset", "1700000060"),
        ]);
        let o = observed(&h, 1.7e9).unwrap();
        assert_eq!((o.limit, o.remaining, o.reset), (600, 599, 1_700_000_060.0));
        let h = headers(&[
            ("x-ratelimit-limit", "10"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "5"),
        ]);
        assert_eq!(observed(&h, 1.7e9).unwrap().reset, 1.7e9 + 5.0);
        assert_eq!(observed(&HeaderMap::new(), 1.7e9), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_all_three_date_formats() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_767); // Sun, 06 Nov 1994 08:49:27 GMT
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                retry_after(&headers(&[("retry-after", date)]), now),
                Some(Duration::from_secs(10)),
                "{date}"
            );
        }
        // A date in the past means now; nonsense is no answer.
        let later = now + Duration::from_secs(60);
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]),
                later
            ),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
    }

    #[test]
    fn without_retry_after_the_vendor_reset_is_waited_for() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset", "1700000005")]), now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            retry_after(&headers(&[("X-Rate-Limit-Reset", "3")]), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "999999")]), now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
