//! The connection watchdog: what a connection's requests are doing (in progress, their responses waiting on
//! the client), and the one timer per connection that closes it when it has been idle for `idle_timeout` or
//! a response of it has waited on a client that takes nothing for `send_timeout` (RFC 9113 §10.5).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The watchdog looks for a response stalled on its client once per `send_timeout / PERIODS`.
const PERIODS: u32 = 4;

/// A wait that began in a period this many periods before the watchdog's current one has lasted at least
/// `send_timeout`: `PERIODS` whole periods, plus one because the wait may have begun late in its period, plus
/// one because the watchdog may be late marking a new period (less than a period late is assumed). So a
/// stall is seen between `send_timeout` and 1.5 times it.
const STALE_AFTER: u64 = PERIODS as u64 + 2;

/// Waiting responses are counted by the period their wait began in, in a ring of this many counters: the
/// periods that may not have lasted long enough yet (`STALE_AFTER` of them) and two that have.
const SLOTS: usize = 8;

/// What a connection is doing, as its watchdog needs it. Requests update it with a few relaxed atomic
/// operations and never wake the watchdog: it wakes once per period (`send_timeout / PERIODS`) and at the
/// earliest moment the connection could be idle long enough, and looks then.
struct State {
    /// Requests whose response has not finished (or been dropped).
    in_flight: AtomicUsize,
    /// When the connection last became idle (accepted, or a response finished), in nanoseconds since `opened`.
    idle_since: AtomicU64,
    /// When the connection was accepted.
    opened: Instant,
    /// The watchdog's count of whole periods since `opened`, as of its last look: the clock responses stamp
    /// their waits with (one relaxed load, no system clock read per body frame).
    period: AtomicU64,
    /// Responses waiting on the client, by the period their wait began in, modulo `SLOTS`.
    waiting: [AtomicUsize; SLOTS],
}

/// Why a connection's watchdog closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// No request in progress for `idle_timeout`.
    Idle,
    /// A response waited on the client, which took nothing of it, for `send_timeout`.
    ClientStalled,
}

/// Request bookkeeping of one connection, shared by its service and its watchdog.
#[derive(Clone)]
pub struct Activity {
    state: Arc<State>,
}

impl Activity {
    /// A connection accepted now, idle until its first request.
    pub fn new() -> Self {
        Self {
            state: Arc::new(State {
                in_flight: AtomicUsize::new(0),
                idle_since: AtomicU64::new(0),
                opened: Instant::now(),
                period: AtomicU64::new(0),
                waiting: Default::default(),
            }),
        }
    }

    /// Marks a request as started; it is in progress until the returned guard is dropped (the guard travels
    /// with the response body, so a streaming response counts until its last byte).
    pub fn begin(&self) -> RequestGuard {
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard {
            state: Arc::clone(&self.state),
            waiting: None,
        }
    }

    /// Whether no request is in progress.
    pub fn is_idle(&self) -> bool {
        self.state.in_flight.load(Ordering::Acquire) == 0
    }

    /// A request began and ended just now (answered at once, beside hyper): the idle clock restarts.
    pub fn touch(&self) {
        self.state.mark_idle_now();
    }

    /// Completes when the connection has had no request in progress for `idle_timeout` (never while one is),
    /// or when one of its responses has waited on the client for `send_timeout`. Dropping the connection
    /// then loses nothing: no request is on it, or the one that is goes to a client that takes nothing
    /// (its response bodies are dropped, and with them their upstream connections).
    pub async fn watch(&self, idle_timeout: Duration, send_timeout: Duration) -> Closing {
        let state = &self.state;
        let period = (send_timeout / PERIODS).max(Duration::from_millis(1));
        let sleep = tokio::time::sleep_until(state.opened + period.min(idle_timeout));
        tokio::pin!(sleep);
        loop {
            sleep.as_mut().await;
            let now = Instant::now();
            let current = state.mark_period(now, period);
            if state.client_stalled(current) {
                return Closing::ClientStalled;
            }
            let Some(idle_due) = state.idle_due(now, idle_timeout) else {
                return Closing::Idle;
            };
            // Every period, idle or not: a request may begin at any moment, and its waits are stamped with
            // the period this marks.
            let next_period = state.opened + period_start(period, current + 1);
            sleep.as_mut().reset(idle_due.min(next_period));
        }
    }
}

/// When period `n` of length `period` starts, counted from the connection's accept.
fn period_start(period: Duration, n: u64) -> Duration {
    let nanos = period.as_nanos().saturating_mul(u128::from(n));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// One request in progress on a connection.
pub struct RequestGuard {
    state: Arc<State>,
    /// The period its response began waiting on the client in, while it does.
    waiting: Option<u64>,
}

impl RequestGuard {
    /// The response waits on the client from now: it has a piece the client has not taken (or, just made,
    /// may never be asked for: HTTP/2 polls no body whose stream window is 0). Called again for every piece,
    /// since the client took the one before. Costs a relaxed load, and two relaxed additions when the
    /// period changed since the last call.
    pub fn client_turn(&mut self) {
        let now = self.state.period.load(Ordering::Relaxed);
        if self.waiting == Some(now) {
            return;
        }
        self.clear_turn();
        self.state.waiting[slot(now)].fetch_add(1, Ordering::Relaxed);
        self.waiting = Some(now);
    }

    /// The response no longer waits on the client: it waits on its source (the upstream's turn, which
    /// `server.response_idle_timeout` times), or it has ended.
    pub fn clear_turn(&mut self) {
        if let Some(began) = self.waiting.take() {
            self.state.waiting[slot(began)].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The counter of `SLOTS` for waits that began in `period`.
fn slot(period: u64) -> usize {
    (period % SLOTS as u64) as usize
}

impl State {
    /// Marks the period `now` is in as the current one and returns it.
    fn mark_period(&self, now: Instant, period: Duration) -> u64 {
        let elapsed = now.saturating_duration_since(self.opened).as_nanos();
        let current = u64::try_from(elapsed / period.as_nanos()).unwrap_or(u64::MAX);
        self.period.store(current, Ordering::Relaxed);
        current
    }

    /// Whether a response of the connection has waited on the client for `send_timeout`: one counted in a
    /// period `STALE_AFTER` or more before `current`.
    fn client_stalled(&self, current: u64) -> bool {
        (STALE_AFTER..SLOTS as u64)
            .filter_map(|age| current.checked_sub(age))
            .any(|began| self.waiting[slot(began)].load(Ordering::Relaxed) > 0)
    }

    /// When the connection will have been idle for `idle_timeout`; `None` when it has been by `now`.
    fn idle_due(&self, now: Instant, idle_timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // Busy: not idle before one timeout from now. A request that ends before then restarts the
            // clock at its end, which is later than this look, so no idle time is lost.
            return Some(now + idle_timeout);
        }
        let idle_since =
            self.opened + Duration::from_nanos(self.idle_since.load(Ordering::Acquire));
        let due = idle_since + idle_timeout;
        (due > now).then_some(due)
    }

    /// Records now as the moment the connection last became idle.
    fn mark_idle_now(&self) {
        // Saturates after 584 years of one connection.
        let since = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // The latest end wins when requests of one HTTP/2 connection end on different threads at once.
        self.idle_since.fetch_max(since, Ordering::Release);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.clear_turn();
        // Published before the count drops, so a watchdog that sees no request in flight sees when it ended.
        self.state.mark_idle_now();
        self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(30);
    const SEND: Duration = Duration::from_secs(60);

    /// The watchdog of `activity` with the default timeouts, run as a task.
    fn watchdog(activity: &Activity) -> tokio::task::JoinHandle<Closing> {
        let activity = activity.clone();
        tokio::spawn(async move { activity.watch(IDLE, SEND).await })
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_times_out() {
        let activity = Activity::new();
        let started = Instant::now();
        assert_eq!(activity.watch(IDLE, SEND).await, Closing::Idle);
        assert_eq!(started.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn request_in_progress_is_never_idle_and_restarts_the_clock() {
        let activity = Activity::new();
        let guard = activity.begin();
        let watchdog = activity.clone();
        let started = Instant::now();
        let idle = tokio::spawn(async move { watchdog.watch(IDLE, SEND).await });
        // A request lasting ten idle timeouts.
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!idle.is_finished(), "cut while a request was in progress");
        drop(guard);
        assert_eq!(idle.await.unwrap(), Closing::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(330));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_answered_at_once_restarts_the_clock() {
        let activity = Activity::new();
        let watchdog = activity.clone();
        let started = Instant::now();
        let idle = tokio::spawn(async move { watchdog.watch(IDLE, SEND).await });
        // The express lane answers a request at 20 s without hyper: no guard, only a touch.
        tokio::time::sleep(Duration::from_secs(20)).await;
        activity.touch();
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(
            !idle.is_finished(),
            "closed 30 s after the accept, not after the request"
        );
        idle.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(50));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_of_overlapping_requests_restarts_the_clock() {
        let activity = Activity::new();
        let watchdog = activity.clone();
        let started = Instant::now();
        let idle = tokio::spawn(async move { watchdog.watch(IDLE, SEND).await });
        // Idle 20 s, then two requests (HTTP/2 streams) that end at 25 s and 40 s.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let short = activity.begin();
        let long = activity.begin();
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(short);
        tokio::time::sleep(Duration::from_secs(15)).await;
        drop(long);
        // Still open one moment before 40 + 30 s.
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(
            !idle.is_finished(),
            "closed before the idle timeout after the last request"
        );
        idle.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(70));
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_the_client_takes_nothing_of_closes_the_connection_after_send_timeout() {
        let activity = Activity::new();
        let watch = watchdog(&activity);
        // The body was made at 10 s (its client's turn from then) and the client never asks for it.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let mut guard = activity.begin();
        guard.client_turn();
        let started = Instant::now();
        assert_eq!(watch.await.unwrap(), Closing::ClientStalled);
        let waited = started.elapsed();
        assert!(waited >= SEND && waited <= SEND * 3 / 2, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_keeps_taking_pieces_is_never_cut() {
        let activity = Activity::new();
        let watch = watchdog(&activity);
        let mut guard = activity.begin();
        guard.client_turn();
        // A piece taken every 55 s, each just inside send_timeout, for twenty times as long.
        for _ in 0..20 {
            tokio::time::sleep(SEND - Duration::from_secs(5)).await;
            guard.client_turn();
        }
        assert!(!watch.is_finished(), "cut while the client kept reading");
        drop(guard);
        assert_eq!(watch.await.unwrap(), Closing::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_waiting_on_its_source_is_not_the_clients_stall() {
        let activity = Activity::new();
        let watch = watchdog(&activity);
        let mut guard = activity.begin();
        guard.client_turn();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The client asked for the next piece and the upstream has none: response_idle_timeout's to time.
        guard.clear_turn();
        tokio::time::sleep(SEND * 10).await;
        assert!(!watch.is_finished(), "cut for the upstream's pause");
        drop(guard);
        assert_eq!(watch.await.unwrap(), Closing::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn one_stalled_response_among_busy_ones_is_found() {
        let activity = Activity::new();
        let watch = watchdog(&activity);
        let mut stalled = activity.begin();
        stalled.client_turn();
        let started = Instant::now();
        // Other streams of the connection take pieces all the while.
        let mut busy: Vec<_> = (0..3).map(|_| activity.begin()).collect();
        let reading = async {
            for _ in 0..SEND.as_secs() * 2 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                busy.iter_mut().for_each(RequestGuard::client_turn);
            }
        };
        tokio::select! {
            closing = watch => assert_eq!(closing.unwrap(), Closing::ClientStalled),
            () = reading => panic!("not found within twice send_timeout"),
        }
        let waited = started.elapsed();
        assert!(waited >= SEND && waited <= SEND * 3 / 2, "{waited:?}");
    }
}
