//! Runs Management API requests at the upstream's rate limit — not below
//! it, and not into it — by reading the limit from the responses.
//!
//! Auth0 and Okta send their limit on every response
//! ([`crate::upstream::rate_limit`] reads it). The two mean different
//! things:
//!
//! - [`Model::Bucket`] (Auth0's Management API, "Management API Endpoint
//!   Rate Limits"): a token bucket of `limit` tokens refilled at a steady
//!   rate; `remaining` is the whole tokens left, `reset` the epoch second
//!   at which the bucket is full again. The pacer simulates the bucket: the
//!   latest response says how many tokens were left, every request started
//!   and not yet answered has spent one, and the refill since that response
//!   is credited at the refill rate. A request starts only when the
//!   simulated bucket holds a token for it, so there are never more
//!   requests in flight than the bucket holds.
//! - [`Model::Window`] (Okta, "Rate limits overview"): `limit` requests per
//!   fixed window ending at `reset`; what remains is spread evenly over
//!   what is left of the window.
//!
//! Until the first response has described the limit, one request runs at a
//! time: several started blind could empty a small bucket at once.
//!
//! The refill rate is never guessed, it is proven from below. Both headers
//! are rounded — `remaining` down to a whole token, `reset` up to a whole
//! second — so one pair of responses cannot tell 4 tokens a second from 6.
//! Two answers `i`, `j`, `i`'s arrived before `j`'s request started, give
//! two lower bounds (with `n` the tokens spent between the two requests):
//!
//! - tokens: `remaining_j − remaining_i + n` is the refill between them,
//!   give or take one token of rounding, so
//!   `rate > (remaining_j − remaining_i + n − 1) / time`, the time taken
//!   from the start of `i`'s request to the arrival of `j`'s answer
//!   (longer than between the two takes, so the bound stays one);
//! - reset: the moment the bucket will be full moves `1/rate` later for
//!   each token spent and not at all with time, so
//!   `reset_j − reset_i > n / rate − 1`, i.e. `rate > n / (Δreset + 1)`.
//!   It needs no clock: it is right from the first answers, when the time
//!   between them is too short for the first bound.
//!
//! A full bucket in between (refill lost) only loosens both. The pacer
//! uses the greatest bound over the pairs of the last minute, which is
//! within about one token over that minute of the real rate. `n` is never
//! overcounted, so the bounds stay bounds: requests that failed (5xx, no
//! answer) count as having spent nothing, requests in flight when `i`
//! arrived as spent before it, and answers that arrived while `j` was in
//! flight as spent after it.
//!
//! Pacing a little slow costs nothing: the simulated bucket starts again
//! from each answer's `remaining` (less the tokens of answers that arrived
//! while it was in flight, which may have reached the upstream after it),
//! so tokens left by a slow estimate are seen and spent; only a full
//! bucket would waste refill, and the simulation lets it fill only when
//! nothing waits. A request started early, on the other hand, costs a 429
//! and a pause.
//!
//! Without headers (Keycloak, Cognito) only `--max-rate` paces. A 429 (or a
//! vendor's throttling error) pauses every request for `Retry-After`, or
//! until `reset`, plus jitter; as it means the bucket is spent by someone
//! else too (Auth0's limit is the tenant's), the proven rate is lowered and
//! measured again.

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

/// How a request ended, for the bucket's accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered (a 2xx, or a 4xx other than 429): it spent a token.
    Served,
    /// A 429, or the vendor's throttling error: refused before spending one.
    Throttled,
    /// A 5xx, or no answer: whether it spent a token is unknown, and it is
    /// counted as not (the side on which the proven rate stays a bound).
    Failed,
}

/// A request the pacer let start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    seq: u64,
    at: Instant,
    /// Answers received before it started.
    answered: u64,
}

/// One response's headers, and what the pacer knew when it arrived.
#[derive(Debug, Clone, Copy)]
struct Sample {
    obs: Observed,
    /// When the answer arrived, and when its request started.
    at: Instant,
    started: Instant,
    seq: u64,
    /// Requests served (counting this one), and still in flight, then.
    served: u64,
    in_flight: u64,
    /// Answers received while it was in flight: their requests may have
    /// reached the upstream after it, so their tokens may be missing from
    /// its `remaining`.
    unsure: u64,
}

/// The pacing state, separate from the clock so it can be tested.
#[derive(Debug)]
pub struct Pace {
    model: Model,
    /// Seconds between request starts, from `--max-rate`.
    min_interval: Option<Duration>,
    last_start: Option<Instant>,
    next_seq: u64,
    /// Requests started and not yet answered.
    in_flight: u64,
    /// Answers of any kind so far.
    answered: u64,
    /// Requests that spent a token, as far as is known ([`Outcome::Served`]).
    served: u64,
    /// The latest response with limit headers (the answer to the latest
    /// request among those answered: an older request's answer, arriving
    /// late, describes an older bucket).
    last: Option<Sample>,
    /// The simulated bucket: a lower bound of the tokens it held at an
    /// instant (negative: owed), not counting the requests then in flight.
    held: (f64, Instant),
    /// The answers of the last minute, for the bounds on the refill rate.
    history: VecDeque<Sample>,
    /// The greatest lower bound on the refill rate proven so far, tokens a
    /// second (zero: none yet).
    rate: f64,
    /// A throttling answer pauses everyone until then.
    paused_until: Option<Instant>,
}

impl Pace {
    pub fn new(model: Model, max_rate: Option<f64>) -> Self {
        Self {
            model,
            min_interval: max_rate
                .filter(|r| *r > 0.0)
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            last_start: None,
            next_seq: 0,
            in_flight: 0,
            answered: 0,
            served: 0,
            last: None,
            held: (0.0, Instant::now()),
            history: VecDeque::new(),
            rate: 0.0,
            paused_until: None,
        }
    }

    /// How long to wait before the next request may start (zero: now);
    /// `None`: until an answer arrives (nothing else can free a token).
    pub fn delay(&self, now: Instant, now_epoch: f64) -> Option<Duration> {
        let mut wait = Duration::ZERO;
        if let Some(until) = self.paused_until {
            wait = wait.max(until.saturating_duration_since(now));
        }
        if let (Some(interval), Some(last)) = (self.min_interval, self.last_start) {
            wait = wait.max((last + interval).saturating_duration_since(now));
        }
        let limits = match self.model {
            Model::Bucket => self.last.is_some(),
            // An upstream that sends no headers says nothing more later.
            Model::Window => self.last.is_some() || self.answered > 0,
        };
        let in_flight = self.in_flight;
        if !limits && in_flight > 0 {
            // Nothing describes the limit yet: one request at a time.
            return None;
        }
        let Some(last) = self.last else {
            return Some(wait);
        };
        let obs = last.obs;
        let until_reset = (obs.reset - now_epoch).max(0.0);
        let header_wait = match self.model {
            Model::Bucket => {
                let limit = obs.limit as f64;
                let held = self.held_at(limit, now);
                let tokens = held - in_flight as f64;
                if tokens >= 1.0 {
                    0.0
                } else if held >= limit || (self.rate <= 0.0 && in_flight > 0) {
                    // Every token the bucket can hold is in flight, or no
                    // rate is known yet and an answer will tell more.
                    return None;
                } else if self.rate > 0.0 {
                    (1.0 - tokens) / self.rate
                } else {
                    // Spent, nothing in flight, no rate proven yet (a
                    // bucket of one): it is full again at `reset`.
                    until_reset.max(1.0)
                }
            }
            Model::Window => {
                let left = obs.remaining as f64 - in_flight as f64;
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
        Some(wait.max(Duration::from_secs_f64(header_wait.min(3600.0))))
    }

    /// The simulated bucket's tokens at `now`, refilled at the proven rate
    /// (a lower bound of the real one) up to `limit`.
    fn held_at(&self, limit: f64, now: Instant) -> f64 {
        let (tokens, at) = self.held;
        let elapsed = now.saturating_duration_since(at).as_secs_f64();
        (tokens + self.rate * elapsed).min(limit)
    }

    pub fn start(&mut self, now: Instant) -> Start {
        self.last_start = Some(now);
        self.next_seq += 1;
        self.in_flight += 1;
        Start {
            seq: self.next_seq,
            at: now,
            answered: self.answered,
        }
    }

    /// The answer to `start` arrived at `now`, with the limit headers
    /// `obs` when it had them.
    pub fn observe(&mut self, start: Start, obs: Option<Observed>, outcome: Outcome, now: Instant) {
        let unsure = self.answered - start.answered;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.answered += 1;
        if outcome == Outcome::Served {
            self.served += 1;
        }
        // The simulated bucket, two ways, each a lower bound, so the
        // greater is one: what it held, less this request's token (a
        // failed one's too, to be safe) now that it no longer counts as in
        // flight; and what the answer says, less the tokens of the answers
        // that arrived while it was in flight (they may have reached the
        // upstream after it).
        if let Some(limit) = self.last.map(|l| l.obs.limit as f64) {
            let spent = if outcome == Outcome::Throttled {
                0.0
            } else {
                1.0
            };
            let kept = self.held_at(limit, now) - spent;
            let told = obs.map_or(f64::MIN, |o| o.remaining as f64 - unsure as f64);
            self.held = (kept.max(told), now);
        } else if let Some(o) = obs {
            self.held = (o.remaining as f64 - unsure as f64, now);
        }
        // The latest request's answer describes the bucket; an older
        // one's, arriving late, an older bucket.
        let Some(obs) = obs.filter(|_| self.last.is_none_or(|l| l.seq < start.seq)) else {
            return;
        };
        let sample = Sample {
            obs,
            at: now,
            started: start.at,
            seq: start.seq,
            served: self.served,
            in_flight: self.in_flight,
            unsure,
        };
        self.last = Some(sample);
        if self.model != Model::Bucket {
            return;
        }
        // Every earlier answer that arrived before this request started
        // (so reached the upstream before it) bounds the rate with it;
        // a stretch in which the bucket was full only loosens a bound.
        let best = self
            .history
            .iter()
            .filter(|i| i.at <= start.at)
            .map(|i| refill_bound(i, &sample))
            .fold(0.0, f64::max);
        self.rate = self.rate.max(best);
        self.history.push_back(sample);
        while self.history.len() > HISTORY
            || self
                .history
                .front()
                .is_some_and(|i| now.saturating_duration_since(i.at) > HISTORY_SPAN)
        {
            self.history.pop_front();
        }
    }

    /// A throttling answer: pause everyone, and prove the rate again
    /// (someone else spends the bucket too, or it was changed) from a
    /// little below what it was.
    pub fn throttled(&mut self, pause: Duration, now: Instant) {
        let until = now + pause;
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        self.rate *= 0.9;
        self.history.clear();
    }
}

/// How many answers, over how long, the refill rate is proven from.
const HISTORY: usize = 1024;
const HISTORY_SPAN: Duration = Duration::from_secs(60);

/// The greatest lower bound on the refill rate two answers prove, `i`'s
/// arrived before `j`'s request started (the module's documentation
/// derives both).
fn refill_bound(i: &Sample, j: &Sample) -> f64 {
    // Tokens spent between the two takes: requests in flight when `i`
    // arrived may have been spent before it, and those answered while `j`
    // was in flight after it.
    let n = j.served.saturating_sub(i.served + i.in_flight + j.unsure) as f64;
    let mut bound: f64 = 0.0;
    let span = j.at.saturating_duration_since(i.started).as_secs_f64();
    if span > 0.0 {
        let refilled = j.obs.remaining as f64 - i.obs.remaining as f64 + n - 1.0;
        bound = bound.max(refilled / span);
    }
    let moved = j.obs.reset - i.obs.reset;
    if n >= 1.0 && moved >= 0.0 {
        bound = bound.max(n / (moved + 1.0));
    }
    bound
}

/// The pacer shared by a client's requests: requests start one at a time,
/// in the order they asked, when [`Pace::delay`] allows; answers update
/// the state at any time and wake the request waiting for its turn.
pub struct Pacer {
    queue: tokio::sync::Mutex<()>,
    pace: std::sync::Mutex<Pace>,
    changed: tokio::sync::Notify,
}

/// A started request; its answer goes back through
/// [`Ticket::observe`]. Dropped unanswered (an error before sending, a
/// cancelled task), it counts as [`Outcome::Failed`], so its slot is given
/// back.
#[must_use = "a request's answer is reported through its ticket"]
pub struct Ticket<'a> {
    pacer: &'a Pacer,
    start: Start,
    done: bool,
}

impl Ticket<'_> {
    pub fn observe(mut self, headers: &HeaderMap, outcome: Outcome) {
        self.done = true;
        let obs = observed(headers, epoch_now());
        self.pacer.answer(self.start, obs, outcome);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.pacer.answer(self.start, None, Outcome::Failed);
        }
    }
}

impl Pacer {
    pub fn new(model: Model, max_rate: Option<f64>) -> Self {
        Self {
            queue: tokio::sync::Mutex::new(()),
            pace: std::sync::Mutex::new(Pace::new(model, max_rate)),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Pace> {
        self.pace.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the next slot: sleeps until the simulated bucket has a
    /// token, waking early when an answer arrives meanwhile.
    pub async fn acquire(&self) -> Ticket<'_> {
        let _turn = self.queue.lock().await;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read: an answer arriving in
            // between still wakes this wait.
            changed.as_mut().enable();
            let wait = {
                let mut pace = self.state();
                match pace.delay(Instant::now(), epoch_now()) {
                    Some(wait) if wait.is_zero() => {
                        let start = pace.start(Instant::now());
                        return Ticket {
                            pacer: self,
                            start,
                            done: false,
                        };
                    }
                    Some(wait) => wait,
                    None => Duration::from_secs(1),
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {}
                () = &mut changed => {}
            }
        }
    }

    fn answer(&self, start: Start, obs: Option<Observed>, outcome: Outcome) {
        self.state().observe(start, obs, outcome, Instant::now());
        self.changed.notify_waiters();
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

    fn at(t0: Instant, secs: f64) -> Instant {
        t0 + Duration::from_secs_f64(secs)
    }

    /// Auth0's Management API bucket as Auth0 describes it: `limit` tokens
    /// refilled continuously at `rate`; every answer says the whole tokens
    /// left and the epoch second (rounded up) when it is full again; an
    /// empty bucket answers 429 with `Retry-After` in whole seconds.
    struct Bucket {
        limit: f64,
        rate: f64,
        tokens: f64,
        at: f64,
    }

    impl Bucket {
        fn new(limit: u64, rate: f64) -> Self {
            Self {
                limit: limit as f64,
                rate,
                tokens: limit as f64,
                at: 0.0,
            }
        }

        /// A request reaching the bucket at `t`: its headers, whether it
        /// was served, and the `Retry-After` of a refusal.
        fn take(&mut self, t: f64, epoch0: f64) -> (Observed, bool, f64) {
            self.tokens = (self.tokens + (t - self.at) * self.rate).min(self.limit);
            self.at = t;
            let served = self.tokens >= 1.0;
            if served {
                self.tokens -= 1.0;
            }
            let headers = Observed {
                limit: self.limit as u64,
                remaining: self.tokens.floor() as u64,
                reset: (epoch0 + t + (self.limit - self.tokens) / self.rate).ceil(),
            };
            let retry = ((1.0 - self.tokens) / self.rate).ceil().max(1.0);
            (headers, served, retry)
        }
    }

    /// A deterministic spread of latencies.
    struct Lcg(u64);

    impl Lcg {
        fn between(&mut self, lo: f64, hi: f64) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            lo + (hi - lo) * ((self.0 >> 11) as f64 / (1u64 << 53) as f64)
        }
    }

    #[derive(Clone, Copy)]
    enum Worker {
        /// Wants to start a request from then on.
        Ready(f64),
        /// Its request reaches the upstream then.
        Sent(Start, f64),
        /// Its answer arrives then.
        Answer(Start, f64, Observed, bool, f64),
    }

    impl Worker {
        fn next(&self) -> f64 {
            match *self {
                Worker::Ready(t) | Worker::Sent(_, t) | Worker::Answer(_, t, ..) => t,
            }
        }
    }

    #[derive(Debug, Default)]
    struct Run {
        served: u64,
        throttled: u64,
        /// The most requests in flight at once, before the first answer
        /// and over the whole run.
        blind: u64,
        most: u64,
    }

    /// `workers` loops of request, answer, some work (`think`: seconds,
    /// from–to), on a simulated clock, through `pace`, against `bucket`,
    /// for `seconds`.
    fn simulate(
        pace: &mut Pace,
        bucket: &mut Bucket,
        workers: usize,
        think: (f64, f64),
        seconds: f64,
        epoch0: f64,
        seed: u64,
    ) -> Run {
        let t0 = Instant::now();
        let mut rng = Lcg(seed);
        let mut ws = vec![Worker::Ready(0.0); workers];
        let mut run = Run::default();
        let mut answered = false;
        let mut now = 0.0;
        while now < seconds {
            // Start what the pacer lets start, in turn.
            let mut wake = f64::INFINITY;
            while let Some(w) = ws
                .iter_mut()
                .find(|w| matches!(w, Worker::Ready(r) if *r <= now))
            {
                match pace.delay(at(t0, now), epoch0 + now) {
                    Some(d) if d.is_zero() => {
                        let start = pace.start(at(t0, now));
                        *w = Worker::Sent(start, now + rng.between(0.001, 0.005));
                    }
                    Some(d) => {
                        wake = now + d.as_secs_f64().max(1e-6);
                        break;
                    }
                    None => break,
                }
            }
            let in_flight = ws.iter().filter(|w| !matches!(w, Worker::Ready(_))).count() as u64;
            run.most = run.most.max(in_flight);
            if !answered {
                run.blind = run.blind.max(in_flight);
            }
            // The next event.
            let (i, t) = ws
                .iter()
                .enumerate()
                .map(|(i, w)| (i, w.next()))
                .filter(|(i, t)| *t > now || !matches!(ws[*i], Worker::Ready(_)))
                .fold((usize::MAX, wake), |a, b| if b.1 < a.1 { b } else { a });
            now = t;
            if i == usize::MAX {
                continue;
            }
            match ws[i] {
                Worker::Ready(_) => {}
                Worker::Sent(start, t) => {
                    let (headers, served, retry) = bucket.take(t, epoch0);
                    let back = t + rng.between(0.005, 0.020);
                    ws[i] = Worker::Answer(start, back, headers, served, retry);
                }
                Worker::Answer(start, t, headers, served, retry) => {
                    answered = true;
                    let outcome = if served {
                        run.served += 1;
                        Outcome::Served
                    } else {
                        run.throttled += 1;
                        Outcome::Throttled
                    };
                    pace.observe(start, Some(headers), outcome, at(t0, t));
                    if served {
                        ws[i] = Worker::Ready(t + rng.between(think.0, think.1));
                    } else {
                        // The client's pause: Retry-After plus jitter.
                        let pause = retry + rng.between(0.125, 0.25);
                        pace.throttled(Duration::from_secs_f64(pause), at(t0, t));
                        ws[i] = Worker::Ready(t);
                    }
                }
            }
        }
        run
    }

    #[test]
    fn small_and_large_buckets_are_paced_at_their_refill_rate_without_429s() {
        let seconds = 120.0;
        let mut failures = Vec::new();
        // A client that commits each page quickly, and (for the slow
        // buckets) one that takes 50–150 ms, as a database might.
        let fast = (0.0, 0.010);
        let slow = (0.050, 0.150);
        for (limit, rate, think) in [
            (5, 5.0, fast),
            (10, 2.0, fast),
            (50, 20.0, fast),
            (3, 0.5, fast),
            (20, 10.0, fast),
            (5, 5.0, slow),
            (10, 2.0, slow),
        ] {
            for workers in [1, 4] {
                for (k, offset) in [0.02, 0.5, 0.97].into_iter().enumerate() {
                    let what = format!(
                        "bucket {limit} refilled at {rate}/s, {workers} workers, \
                         {}–{} ms of work a page, epoch +{offset}",
                        think.0 * 1e3,
                        think.1 * 1e3
                    );
                    let mut pace = Pace::new(Model::Bucket, None);
                    let mut bucket = Bucket::new(limit, rate);
                    let seed = 7 + k as u64 + 100 * workers as u64;
                    let epoch0 = 1.7e9 + offset;
                    let run = simulate(
                        &mut pace,
                        &mut bucket,
                        workers,
                        think,
                        seconds,
                        epoch0,
                        seed,
                    );
                    let answers = (run.served + run.throttled) as f64;
                    // Beyond the initial burst, which any client gets.
                    let sustained = (run.served as f64 - limit as f64) / seconds / rate;
                    let line = format!(
                        "{what}: {} served, {} 429s, sustained {:.1} % of the rate, \
                         at most {} in flight ({} before the first answer), rate proven {:.3}/s",
                        run.served,
                        run.throttled,
                        100.0 * sustained,
                        run.most,
                        run.blind,
                        pace.rate
                    );
                    println!("{line}");
                    if run.throttled as f64 > 0.01 * answers
                        || sustained < 0.95
                        || run.blind > 1
                        || run.most > limit
                        // What was proven is a lower bound of the real rate.
                        || pace.rate > rate
                    {
                        failures.push(line);
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn the_requests_in_flight_never_outnumber_the_simulated_tokens() {
        let t0 = Instant::now();
        let mut p = Pace::new(Model::Bucket, None);
        let first = p.start(t0);
        assert_eq!(p.delay(t0, 1000.0), None, "blind: one at a time");
        p.observe(first, obs(5, 4, 1001.0), Outcome::Served, at(t0, 0.01));
        p.rate = 5.0;
        let now = at(t0, 0.01);
        let starts: Vec<_> = (0..4)
            .map(|_| {
                assert_eq!(p.delay(now, 1000.01), Some(Duration::ZERO));
                p.start(now)
            })
            .collect();
        // Four tokens, four in flight: the next waits for refill…
        let d = p.delay(now, 1000.01).unwrap().as_secs_f64();
        assert!((d - 0.2).abs() < 1e-9, "{d}");
        // …and however long it waits, the bucket holds five at most, all
        // spoken for until an answer comes.
        p.start(at(t0, 0.21));
        assert_eq!(p.delay(at(t0, 10.0), 1010.0), None);
        // An answer saying the bucket is empty tells less than the
        // simulation (the bucket was full 10 s after the first answer;
        // this answer's token and the four in flight are spent from it):
        // one token short, refilled in 0.2 s.
        p.observe(starts[0], obs(5, 0, 1002.0), Outcome::Served, at(t0, 10.0));
        let d = p.delay(at(t0, 10.0), 1010.0).unwrap().as_secs_f64();
        assert!((d - 0.2).abs() < 1e-9, "{d}");
        // Half a second later (2.5 tokens refilled, the bucket full again)
        // two more answers: each spends its token from the simulation,
        // whatever it says (the answers that arrived while it was in
        // flight may have reached the bucket after it).
        p.observe(starts[1], obs(5, 4, 1002.0), Outcome::Served, at(t0, 10.5));
        p.observe(starts[2], obs(5, 4, 1002.0), Outcome::Served, at(t0, 10.5));
        assert_eq!(p.held.0, 3.0);
        assert_eq!(p.delay(at(t0, 10.5), 1010.5), Some(Duration::ZERO));
    }

    #[test]
    fn the_refill_rate_is_proven_from_below_despite_rounded_headers() {
        let t0 = Instant::now();
        let mut p = Pace::new(Model::Bucket, None);
        // Bucket 10, refilled at 2/s, spent one request every 0.1 s from
        // full: `remaining` floored, `reset` rounded up.
        let mut bucket = Bucket::new(10, 2.0);
        for k in 0..12 {
            let t = 0.1 * f64::from(k);
            let s = p.start(at(t0, t));
            let (h, served, _) = bucket.take(t + 0.01, 1e9 + 0.3);
            assert!(served);
            p.observe(s, Some(h), Outcome::Served, at(t0, t + 0.02));
            assert!(p.rate <= 2.0, "{}", p.rate);
        }
        // The reset bound alone: 11 tokens moved `reset` by 5 or 6 s.
        assert!(p.rate >= 11.0 / 7.0, "{}", p.rate);
    }

    #[test]
    fn a_window_is_spread_and_waited_out_when_spent() {
        let t = Instant::now();
        let mut p = Pace::new(Model::Window, None);
        let s = p.start(t);
        p.observe(s, obs(100, 10, 1010.0), Outcome::Served, t);
        // 10 left for 10 s: one a second.
        let d = p.delay(t, 1000.0).unwrap();
        assert!((d.as_secs_f64() - 1.0).abs() < 0.01, "{d:?}");
        let s = p.start(t);
        p.observe(s, obs(100, 0, 1010.0), Outcome::Served, t);
        assert_eq!(p.delay(t, 1004.0), Some(Duration::from_secs(6)));
    }

    #[test]
    fn without_headers_one_answer_frees_the_window_model_but_not_the_bucket() {
        let t = Instant::now();
        for (model, after) in [(Model::Window, Some(Duration::ZERO)), (Model::Bucket, None)] {
            let mut p = Pace::new(model, None);
            let s = p.start(t);
            assert_eq!(p.delay(t, 0.0), None);
            p.observe(s, None, Outcome::Served, t);
            p.start(t);
            assert_eq!(p.delay(t, 0.0), after, "{model:?}");
        }
    }

    #[test]
    fn throttling_pauses_and_max_rate_spaces() {
        let t = Instant::now();
        let mut p = Pace::new(Model::Window, Some(4.0));
        let s = p.start(t);
        p.observe(s, None, Outcome::Served, t);
        assert_eq!(p.delay(t, 0.0), Some(Duration::from_millis(250)));
        p.throttled(Duration::from_secs(2), t);
        assert_eq!(p.delay(t, 0.0), Some(Duration::from_secs(2)));
    }
}
