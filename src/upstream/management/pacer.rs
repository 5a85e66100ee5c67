//! Runs Management API requests at the upstream's rate limit — not below
//! it, and not into it — by reading the limit from the responses.
//!
//! Auth0 and Okta send their limit on every response
//! ([`crate::upstream::rate_limit`] reads it). The two mean different
//! things:
//!
//! - [`Model::Bucket`] (Auth0's Management API): a token bucket of `limit`
//!   tokens refilled at a steady rate; `reset` is when it is full again.
//!   The pacer simulates the bucket: the last response says how many tokens
//!   were left, requests started since then spent some, and the refill rate
//!   is measured from successive responses (tokens left + requests served,
//!   over time). A request starts when the simulated bucket holds a token.
//! - [`Model::Window`] (Okta): `limit` requests per fixed window ending at
//!   `reset`; what remains is spread evenly over what is left of the window.
//!
//! Without headers (Keycloak, Cognito) only `--max-rate` paces. A 429 (or a
//! vendor's throttling error) pauses every request for `Retry-After`, or
//! until `reset`, plus jitter, and lowers the measured rate a little.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use http::HeaderMap;
use serde::Deserialize;

use crate::upstream::rate_limit::{Observed, epoch_now, observed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    Bucket,
    #[default]
    Window,
}

/// The pacing state, separate from the clock so it can be tested.
#[derive(Debug)]
pub struct Pace {
    model: Model,
    /// Seconds between request starts, from `--max-rate`.
    min_interval: Option<Duration>,
    last_start: Option<Instant>,
    /// The latest response's headers and when it arrived; the requests
    /// started and not yet answered.
    last: Option<(Observed, Instant)>,
    in_flight: u64,
    /// Recent (time, tokens left, requests served so far) for the bucket's
    /// refill rate.
    history: VecDeque<(Instant, u64, u64)>,
    served: u64,
    /// Measured refill rate, tokens a second.
    rate: Option<f64>,
    /// A throttling answer pauses everyone until then.
    paused_until: Option<Instant>,
}

/// Pace at this share of the measured rate: starting a request a little
/// late costs 3 %, starting it early costs a 429 and a pause.
const MARGIN: f64 = 0.97;

impl Pace {
    pub fn new(model: Model, max_rate: Option<f64>) -> Self {
        Self {
            model,
            min_interval: max_rate
                .filter(|r| *r > 0.0)
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            last_start: None,
            last: None,
            in_flight: 0,
            history: VecDeque::new(),
            served: 0,
            rate: None,
            paused_until: None,
        }
    }

    /// How long to wait before the next request may start (zero: now).
    pub fn delay(&self, now: Instant, now_epoch: f64) -> Duration {
        let mut wait = Duration::ZERO;
        if let Some(until) = self.paused_until {
            wait = wait.max(until.saturating_duration_since(now));
        }
        if let (Some(interval), Some(last)) = (self.min_interval, self.last_start) {
            wait = wait.max((last + interval).saturating_duration_since(now));
        }
        let Some((obs, at)) = self.last else {
            return wait;
        };
        let left = obs.remaining as f64 - self.in_flight as f64;
        let until_reset = (obs.reset - now_epoch).max(0.0);
        let header_wait = match self.model {
            Model::Bucket => {
                let rate = self.refill_rate(&obs, now_epoch) * MARGIN;
                let tokens =
                    (left + rate * now.duration_since(at).as_secs_f64()).min(obs.limit as f64);
                if tokens >= 1.0 {
                    0.0
                } else if rate > 0.0 {
                    (1.0 - tokens) / rate
                } else {
                    until_reset
                }
            }
            Model::Window => {
                if left < 1.0 {
                    // The window is spent; a new one starts at `reset`.
                    until_reset
                } else {
                    let spread = until_reset / left;
                    let since = self
                        .last_start
                        .map(|s| now.duration_since(s).as_secs_f64())
                        .unwrap_or(f64::MAX);
                    (spread - since).max(0.0)
                }
            }
        };
        wait.max(Duration::from_secs_f64(header_wait.min(3600.0)))
    }

    /// The measured refill rate; before there is a measurement, the rate
    /// that would fill the bucket by `reset`.
    fn refill_rate(&self, obs: &Observed, now_epoch: f64) -> f64 {
        if let Some(r) = self.rate {
            return r;
        }
        let until_reset = obs.reset - now_epoch;
        if until_reset > 0.0 && obs.remaining < obs.limit {
            (obs.limit - obs.remaining) as f64 / until_reset
        } else {
            0.0
        }
    }

    pub fn started(&mut self, now: Instant) {
        self.last_start = Some(now);
        self.in_flight += 1;
    }

    /// A response arrived (or a request failed: `obs` is then `None`);
    /// `throttled` when it was a 429, which spends no token.
    pub fn observe(&mut self, obs: Option<Observed>, throttled: bool, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if !throttled {
            self.served += 1;
        }
        let Some(obs) = obs else {
            return;
        };
        self.last = Some((obs, now));
        if self.model == Model::Bucket {
            // A full bucket stops refilling: its samples say nothing of the rate.
            if obs.remaining + 1 >= obs.limit {
                self.history.clear();
            }
            self.history.push_back((now, obs.remaining, self.served));
            while self
                .history
                .front()
                .is_some_and(|(t, ..)| now.duration_since(*t) > Duration::from_secs(20))
            {
                self.history.pop_front();
            }
            if let (Some(&(t0, r0, s0)), Some(&(t1, r1, s1))) =
                (self.history.front(), self.history.back())
            {
                let span = t1.duration_since(t0).as_secs_f64();
                if span >= 2.0 {
                    let refilled = r1 as f64 - r0 as f64 + (s1 - s0) as f64;
                    let measured = (refilled / span).max(0.1);
                    self.rate = Some(match self.rate {
                        Some(r) => 0.7 * r + 0.3 * measured,
                        None => measured,
                    });
                }
            }
        }
    }

    /// A throttling answer: pause everyone, and trust the measured rate a
    /// little less.
    pub fn throttled(&mut self, pause: Duration, now: Instant) {
        let until = now + pause;
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        if let Some(r) = &mut self.rate {
            *r *= 0.95;
        }
    }
}

/// The pacer shared by a job's requests: requests start one at a time, in
/// the order they asked, when [`Pace::delay`] allows; responses update the
/// state at any time.
pub struct Pacer {
    queue: tokio::sync::Mutex<()>,
    pace: std::sync::Mutex<Pace>,
}

impl Pacer {
    pub fn new(model: Model, max_rate: Option<f64>) -> Self {
        Self {
            queue: tokio::sync::Mutex::new(()),
            pace: std::sync::Mutex::new(Pace::new(model, max_rate)),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Pace> {
        self.pace.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the next slot, re-reading the state at least every 50 ms
    /// so a response that arrives meanwhile is taken into account.
    pub async fn acquire(&self) {
        let _turn = self.queue.lock().await;
        loop {
            let wait = {
                let mut pace = self.state();
                let wait = pace.delay(Instant::now(), epoch_now());
                if wait.is_zero() {
                    pace.started(Instant::now());
                    return;
                }
                wait
            };
            tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
        }
    }

    pub fn observe(&self, headers: &HeaderMap, throttled: bool) {
        let obs = observed(headers, epoch_now());
        self.state().observe(obs, throttled, Instant::now());
    }

    pub fn throttled(&self, pause: Duration) {
        self.state().throttled(pause, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(limit: u64, remaining: u64, reset: f64) -> Option<Observed> {
        Some(Observed {
            limit,
            remaining,
            reset,
        })
    }

    #[test]
    fn a_window_is_spread_and_waited_out_when_spent() {
        let t = Instant::now();
        let mut p = Pace::new(Model::Window, None);
        p.started(t);
        p.observe(obs(100, 10, 1010.0), false, t);
        // 10 left for 10 s: one a second.
        let d = p.delay(t, 1000.0);
        assert!((d.as_secs_f64() - 1.0).abs() < 0.01, "{d:?}");
        p.observe(obs(100, 0, 1010.0), false, t);
        assert_eq!(p.delay(t, 1004.0), Duration::from_secs(6));
    }

    #[test]
    fn a_bucket_is_paced_at_its_measured_refill_rate() {
        let t0 = Instant::now();
        let mut p = Pace::new(Model::Bucket, None);
        // 10 tokens a second; the pacer spends one per response, so the
        // bucket stays at 2 tokens for 3 s: served 30 → refill 30 in 3 s.
        for i in 0..=30u64 {
            let at = t0 + Duration::from_millis(100 * i);
            p.started(at);
            p.observe(obs(50, 2, 2000.0), false, at);
        }
        let rate = p.rate.unwrap();
        assert!((rate - 10.0).abs() < 0.5, "{rate}");
        // Empty bucket: wait for one token at 97 % of the rate.
        let at = t0 + Duration::from_secs(4);
        p.observe(obs(50, 0, 2005.0), false, at);
        let d = p.delay(at, 2000.0).as_secs_f64();
        assert!((d - 1.0 / (rate * MARGIN)).abs() < 0.01, "{d}");
    }

    #[test]
    fn throttling_pauses_and_max_rate_spaces() {
        let t = Instant::now();
        let mut p = Pace::new(Model::Window, Some(4.0));
        p.started(t);
        assert_eq!(p.delay(t, 0.0), Duration::from_millis(250));
        p.throttled(Duration::from_secs(2), t);
        assert_eq!(p.delay(t, 0.0), Duration::from_secs(2));
    }
}
