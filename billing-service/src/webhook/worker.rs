//! The background worker: stored events → handlers → `processed`, at least once, never lost.
//!
//! One batch is one transaction: claim up to `batch_size` due events (oldest `created` first;
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL so replicas share the queue, SQLite's single writer
//! elsewhere), run their handlers under one savepoint, record each outcome (the finished ones
//! with one statement for the whole batch), commit. A handler's writes and its event's new
//! status therefore commit together. A failing event is rolled back alone (see
//! [`Worker::process`]), so it never holds up the others: it is retried with exponential backoff
//! and parked as `failed` with its error after `max_attempts`.
//!
//! On PostgreSQL and SQLite, events whose handlers may run as they are stored are handled in the
//! storing transaction ([`Worker::on_receipt`], used by `webhook::batch`), with the same
//! processing and outcomes; this worker then takes only the rest, and the retries.
//!
//! [`Worker::try_execute_batch`] is the unit tests drive to drain the queue deterministically;
//! [`Worker::run_until_stopped`] loops over it, woken by the receiver when this process stored
//! an event (after `batch_window`, so that events arriving together are claimed together), and
//! polling for those stored by other replicas.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::FutureExt;
use sqlx::{AnyConnection, Connection};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::handlers::{Event, HandlerError, Handlers, Payload, TieResolver};
use crate::clock::now_ms;
use crate::configuration::WorkerSettings;
use crate::db::{self, Db, Engine};
use crate::error::{chain, truncated};
use crate::metrics::Metrics;
use crate::tables::events::{self, AfterFailure, Claimed, EventStatus, NewEvent};

#[derive(Clone)]
pub struct Worker {
    db: Db,
    handlers: Handlers,
    settings: WorkerSettings,
    metrics: Metrics,
    wake: Arc<Notify>,
    ties: Option<TieResolver>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// An event of a batch got no outcome: a bug in the worker, not an outage. Its batch is
    /// rolled back, so the event stays `pending`.
    #[error("event {id} got no outcome in its batch (a bug in the worker)")]
    NoOutcome { id: String },
}

/// What happened to one event in a batch.
enum Outcome {
    Processed,
    Ignored,
    Retry { error: String, delay: Duration },
    Failed { error: String },
}

/// Whether a part of a batch may give a handler several events at once.
#[derive(Debug, Clone, Copy)]
enum Together {
    Yes,
    No,
}

/// Why a part of a batch failed.
enum Failure {
    /// The event at this offset in the part.
    At(usize, HandlerError),
    /// A handler given several events at once; which one is not known.
    Together(HandlerError),
}

/// What one attempt at an event came to, as the webhook route answers it in Lambda mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Processed,
    /// No handler takes its type.
    Ignored,
    /// Failed; due again after a backoff.
    WillRetry,
    /// Failed for good (`failed`, with its error): invalid, or out of attempts.
    Parked,
}

impl Outcome {
    fn attempt(&self) -> Attempt {
        match self {
            Self::Processed => Attempt::Processed,
            Self::Ignored => Attempt::Ignored,
            Self::Retry { .. } => Attempt::WillRetry,
            Self::Failed { .. } => Attempt::Parked,
        }
    }

    /// The `outcome` label of `billing_webhook_events_processed_total`.
    fn label(&self) -> &'static str {
        match self {
            Self::Processed => "processed",
            Self::Ignored => "ignored",
            Self::Retry { .. } => "retry",
            Self::Failed { .. } => "failed",
        }
    }
}

/// Writes a failed attempt's outcome (due again later, or parked) and logs it, once.
async fn record_failed_attempt(
    conn: &mut AnyConnection,
    event: &Claimed,
    outcome: &Outcome,
) -> Result<(), sqlx::Error> {
    let attempts = event.attempt;
    match outcome {
        Outcome::Retry { error, delay } => {
            tracing::warn!(event_id = %event.id, attempts, ?delay, %error, "event failed, will retry");
            let at = now_ms().saturating_add(delay.as_millis().try_into().unwrap_or(i64::MAX));
            events::record_failure(conn, &event.id, error, AfterFailure::RetryAt(at)).await
        }
        Outcome::Failed { error } => {
            tracing::error!(event_id = %event.id, attempts, %error, "event parked as failed");
            events::record_failure(conn, &event.id, error, AfterFailure::Park).await
        }
        Outcome::Processed | Outcome::Ignored => Ok(()),
    }
}

/// What a panic said, when it said it with a string (as `panic!` and `expect` do).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Whether the worker task is running, for liveness: a service whose worker has stopped keeps
/// acknowledging events nobody processes, so Kubernetes should restart it.
#[derive(Clone, Debug, Default)]
pub struct WorkerHealth(Arc<AtomicBool>);

impl WorkerHealth {
    pub fn is_running(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Marks the worker running until the returned guard is dropped, which happens however the
    /// worker's task ends (returning or panicking).
    pub fn running(&self) -> RunningGuard {
        self.0.store(true, Ordering::Relaxed);
        RunningGuard(self.clone())
    }
}

pub struct RunningGuard(WorkerHealth);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.0.store(false, Ordering::Relaxed);
        if std::thread::panicking() {
            tracing::error!("the webhook worker stopped after a panic; liveness now fails");
        }
    }
}

/// The longest a handler may take when it runs as its delivery is stored: the delivery and the
/// others stored with it wait for it, and Stripe for them. Past it, the event is retried by the
/// worker, with the usual limit.
const ON_RECEIPT_LIMIT: Duration = Duration::from_secs(1);

/// Longest error text kept on a row.
const MAX_ERROR_LEN: usize = 2000;

/// `text` cut to [`MAX_ERROR_LEN`] (it can quote the event, in any script).
fn truncate(text: String) -> String {
    truncated(text, MAX_ERROR_LEN)
}

impl Worker {
    pub fn new(
        db: Db,
        handlers: Handlers,
        settings: WorkerSettings,
        metrics: Metrics,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            db,
            handlers,
            settings,
            metrics,
            wake,
            ties: None,
        }
    }

    /// Lets handlers settle same-second ties with Stripe's current objects
    /// ([`Event::ties`]).
    pub fn resolving_ties_with(mut self, ties: TieResolver) -> Self {
        self.ties = Some(ties);
        self
    }

    /// Processes one batch; returns how many events it claimed (0: nothing was due).
    ///
    /// When the batch fails other than by an outage (a handler that broke the transaction, an
    /// outcome that cannot be written), its events are run again one at a time, and one that
    /// fails alone too has the attempt counted in a transaction of its own: so every failing
    /// attempt counts, the event is parked after `max_attempts`, and the queue never loops on it.
    pub async fn try_execute_batch(&self) -> Result<usize, WorkerError> {
        let mut tx = self.begin().await?;
        let claimed = events::claim(&mut tx, self.settings.batch_size).await?;
        match self.finish(tx, &claimed).await {
            Ok(_) => Ok(claimed.len()),
            Err(WorkerError::Database(e)) if db::is_unavailable(&e) => Err(e.into()),
            Err(error) => {
                tracing::error!(error = %chain(&error), events = claimed.len(), "a webhook batch failed; running its events one by one");
                for event in &claimed {
                    self.execute_alone(&event.id, Some(&error)).await?;
                }
                Ok(claimed.len())
            }
        }
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.db.engine {
            // Losing this commit in a database crash only leaves the batch `pending`, to be
            // handled again (handlers are idempotent), so the worker need not wait for the WAL
            // flush; the receiver's inserts, which acknowledge deliveries, still do. Set with the
            // `BEGIN`, in its round trip.
            Engine::Postgres => {
                let begin = "BEGIN; SET LOCAL synchronous_commit = off";
                self.db.pool.begin_with(begin).await
            }
            Engine::Mysql | Engine::Sqlite => self.db.pool.begin().await,
        }
    }

    /// Claims one stored event by id and runs its handlers now, in a transaction of its own.
    /// For the webhook route in Lambda mode, where nothing runs after the response: the
    /// delivery is answered with what this attempt came to. `None` when the event is not
    /// pending (already processed, parked, or held by another worker right now).
    pub async fn execute_now(&self, id: &str) -> Result<Option<Attempt>, WorkerError> {
        self.execute_alone(id, None).await
    }

    /// Runs one pending event alone; if its transaction fails other than by an outage, the
    /// attempt is counted anyway, with the error (and the batch's, when it ran again after its
    /// batch failed).
    async fn execute_alone(
        &self,
        id: &str,
        batch_error: Option<&WorkerError>,
    ) -> Result<Option<Attempt>, WorkerError> {
        let mut tx = self.begin().await?;
        let Some(claimed) = events::claim_one(&mut tx, id).await? else {
            return Ok(None); // done meanwhile, or another worker has it
        };
        let error = match self.finish(tx, std::slice::from_ref(&claimed)).await {
            Ok(outcomes) => return Ok(outcomes.first().map(Outcome::attempt)),
            Err(WorkerError::Database(e)) if db::is_unavailable(&e) => return Err(e.into()),
            Err(error) => error,
        };
        let text = match batch_error {
            Some(batch_error) => format!(
                "the attempt could not be completed: {} (its batch failed with: {})",
                chain(&error),
                chain(batch_error)
            ),
            None => format!("the attempt could not be completed: {}", chain(&error)),
        };
        let outcome = self.failure_outcome(truncate(text), claimed.attempt, false);
        let mut tx = self.begin().await?;
        record_failed_attempt(&mut tx, &claimed, &outcome).await?;
        tx.commit().await?;
        self.metrics
            .processed(&claimed.event_type, outcome.label(), None);
        Ok(Some(outcome.attempt()))
    }

    /// Runs the claimed events' handlers, records each outcome and commits.
    async fn finish(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        claimed: &[Claimed],
    ) -> Result<Vec<Outcome>, WorkerError> {
        let outcomes = self.process(&mut tx, claimed).await?;
        // Finished events are marked together: a backlog drains faster with one statement per
        // batch than with one round trip per event.
        let mut processed = Vec::with_capacity(claimed.len());
        let mut ignored = Vec::new();
        for (event, outcome) in claimed.iter().zip(&outcomes) {
            match outcome {
                Outcome::Processed => processed.push(event.id.as_str()),
                Outcome::Ignored => ignored.push(event.id.as_str()),
                Outcome::Retry { .. } | Outcome::Failed { .. } => {
                    record_failed_attempt(&mut tx, event, outcome).await?;
                }
            }
        }
        events::mark_done(&mut tx, EventStatus::Processed, &processed).await?;
        events::mark_done(&mut tx, EventStatus::Ignored, &ignored).await?;
        tx.commit().await?;
        // Counted once committed: a rolled-back batch is run again and counted then.
        for (event, outcome) in claimed.iter().zip(&outcomes) {
            let done = matches!(outcome, Outcome::Processed | Outcome::Ignored);
            let latency = done.then(|| (now_ms() - event.received_at_ms).max(0) as f64 / 1000.0);
            self.metrics
                .processed(&event.event_type, outcome.label(), latency);
        }
        Ok(outcomes)
    }

    /// A copy of this worker that runs handlers as deliveries are stored (`webhook::batch`), in
    /// the storing transaction: with no Stripe ([`Event::on_receipt`]), and at most
    /// [`ON_RECEIPT_LIMIT`] per handler, since the deliveries wait for it. `None` on MySQL,
    /// where a deadlock aborts the transaction at any statement; on PostgreSQL and SQLite the
    /// storing transaction is simply rolled back and the events stored for this worker.
    pub fn on_receipt(&self) -> Option<Self> {
        if self.db.engine == Engine::Mysql {
            return None;
        }
        let mut worker = self.clone();
        worker.ties = None;
        worker.settings.handler_timeout = worker.settings.handler_timeout.min(ON_RECEIPT_LIMIT);
        Some(worker)
    }

    /// This worker on other connections to the same database: the store's own
    /// (`webhook::batch`), whose transaction the handlers run in.
    pub fn with_db(mut self, db: Db) -> Self {
        self.db = db;
        self
    }

    /// How an event of this type is stored by a worker from [`Worker::on_receipt`]: `Processed`
    /// when every handler of the type may run then ([`EventHandler::on_receipt`]), `Ignored`
    /// when it has none, else `Pending`, for the worker.
    ///
    /// [`EventHandler::on_receipt`]: super::handlers::EventHandler::on_receipt
    pub fn status_on_receipt(&self, event_type: &str) -> EventStatus {
        match self.handlers.for_type(event_type) {
            [] => EventStatus::Ignored,
            handlers if handlers.iter().all(|h| h.on_receipt()) => EventStatus::Processed,
            _ => EventStatus::Pending,
        }
    }

    /// The transaction deliveries are stored and handled in. On PostgreSQL a row another
    /// transaction holds (a worker's batch) fails the handler after half its limit instead of
    /// holding every delivery of the batch: a statement the limit abandoned mid-flight would
    /// hold them anyway, since the rollback waits for it. Set with the `BEGIN`, in its round
    /// trip.
    pub async fn begin_on_receipt(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.db.engine {
            Engine::Postgres => {
                let begin = format!(
                    "BEGIN; SET LOCAL lock_timeout = {}",
                    (ON_RECEIPT_LIMIT / 2).as_millis()
                );
                self.db.pool.begin_with(sqlx::AssertSqlSafe(begin)).await
            }
            Engine::Mysql | Engine::Sqlite => self.db.pool.begin().await,
        }
    }

    /// Runs the handlers of events just stored as `processed` or `ignored` (from
    /// [`Worker::status_on_receipt`]) in the caller's transaction, in the given order (the
    /// queue's), stopping at the first failure: the caller then rolls the transaction back and
    /// stores the events for this worker, which pins the failure on its event. Once the
    /// transaction has committed, [`Worker::count_on_receipt`] counts the events.
    pub async fn handle_on_receipt(
        &self,
        conn: &mut AnyConnection,
        stored: &[&NewEvent<'_>],
    ) -> Result<(), HandlerError> {
        // Those of types without a handler are only counted. Each body was read as JSON for
        // its envelope, just before.
        let events: Vec<(usize, Event)> = stored
            .iter()
            .filter(|row| row.status == EventStatus::Processed)
            .enumerate()
            .map(|(place, row)| {
                let payload = Payload::read_already(row.payload);
                let mut event = self.event(row.id, row.event_type, row.created, payload, 1);
                event.on_receipt = true;
                (place, event)
            })
            .collect();
        match self.run_handlers(conn, &events, Together::Yes).await {
            Ok(()) => Ok(()),
            Err(Failure::At(_, error) | Failure::Together(error)) => Err(error),
        }
    }

    /// Counts `events` of a batch left to this worker after handling them on receipt failed
    /// with `error`, and logs why, once.
    pub fn left_on_receipt(&self, error: &HandlerError, events: usize) {
        if let HandlerError::Deferred(why) = error {
            tracing::debug!(
                why,
                events,
                "events are left to the worker, with their batch"
            );
            self.metrics.left_to_worker("needs_stripe", events);
        } else {
            tracing::warn!(error = %chain(error), events, "handling events as they were stored failed; the worker will handle them");
            self.metrics.left_to_worker("failed", events);
        }
    }

    /// Counts the events [`Worker::handle_on_receipt`] handled, stored at `stored_at_ms`, once
    /// their transaction has committed.
    pub fn count_on_receipt(&self, stored: &[&NewEvent<'_>], stored_at_ms: i64) {
        let latency = (now_ms() - stored_at_ms).max(0) as f64 / 1000.0;
        for event in stored {
            // `processed` or `ignored`, as the outcome label reads.
            self.metrics
                .processed(event.event_type, event.status.as_str(), Some(latency));
        }
    }

    /// Runs the handlers of a batch and returns each event's outcome, in the batch's order.
    ///
    /// A stored body that is not JSON cannot be handled by any attempt: it is parked as
    /// `failed` at once, with the reason. The others run together under one savepoint, so a
    /// batch that succeeds costs one savepoint, not one per event. When an event fails, the
    /// savepoint is rolled back, that event's failure is its outcome (its handlers are not run
    /// again in this attempt), and the events before and after it are run again the same way,
    /// each part under its own savepoint. So a failing event never holds up the others, and the
    /// writes of the events that succeeded commit with their `processed` mark.
    async fn process(
        &self,
        conn: &mut AnyConnection,
        claimed: &[Claimed],
    ) -> Result<Vec<Outcome>, WorkerError> {
        let mut outcomes: Vec<Option<Outcome>> = claimed.iter().map(|_| None).collect();
        // The events that can run, with their place in the batch.
        let mut runnable = Vec::with_capacity(claimed.len());
        for (place, row) in claimed.iter().enumerate() {
            match Payload::parse(row.payload.as_str()) {
                Ok(payload) => runnable.push((
                    place,
                    self.event(&row.id, &row.event_type, row.created, payload, row.attempt),
                )),
                Err(e) => {
                    outcomes[place] = Some(Outcome::Failed {
                        error: format!("the stored body is not JSON ({e}); it cannot be handled"),
                    });
                }
            }
        }
        // Parts still to run, and whether their handlers may take several events at once; the
        // last pushed runs first, so the queue's order is kept.
        let mut parts = vec![(0..runnable.len(), Together::Yes)];
        while let Some((part, together)) = parts.pop() {
            if part.is_empty() {
                continue;
            }
            let mut savepoint = conn.begin().await?;
            match self
                .run_handlers(&mut savepoint, &runnable[part.clone()], together)
                .await
            {
                Ok(()) => {
                    savepoint.commit().await?;
                    for (place, event) in &runnable[part] {
                        let handled = !self.handlers.for_type(&event.event_type).is_empty();
                        outcomes[*place] = Some(if handled {
                            Outcome::Processed
                        } else {
                            Outcome::Ignored
                        });
                    }
                }
                Err(Failure::Together(error)) => {
                    // Found again, and pinned on its event, when they run one at a time; a
                    // failure that does not come back there is a fault of the batched path.
                    savepoint.rollback().await?;
                    tracing::warn!(error = %chain(&error), events = part.len(), "events handled together failed; handling them one at a time");
                    parts.push((part, Together::No));
                }
                Err(Failure::At(offset, error)) => {
                    savepoint.rollback().await?;
                    let failed = part.start + offset;
                    let (place, event) = &runnable[failed];
                    outcomes[*place] = Some(self.failure(&error, event.attempt));
                    parts.push((failed + 1..part.end, Together::Yes));
                    parts.push((part.start..failed, Together::Yes));
                }
            }
        }
        outcomes
            .into_iter()
            .zip(claimed)
            .map(|(outcome, row)| {
                outcome.ok_or_else(|| WorkerError::NoOutcome { id: row.id.clone() })
            })
            .collect()
    }

    /// The event handlers get for a stored body.
    fn event(
        &self,
        id: &str,
        event_type: &str,
        created: i64,
        payload: Payload,
        attempt: u32,
    ) -> Event {
        Event {
            id: id.to_owned(),
            event_type: event_type.to_owned(),
            created,
            payload,
            attempt,
            ties: self.ties.clone(),
            listed: false,
            on_receipt: false,
        }
    }

    /// Runs the handlers of each event in turn; stops at the first failure and says where. With
    /// [`Together::Yes`], events in a row that one handler alone takes go to it together.
    async fn run_handlers(
        &self,
        conn: &mut AnyConnection,
        events: &[(usize, Event)],
        together: Together,
    ) -> Result<(), Failure> {
        let mut offset = 0;
        while offset < events.len() {
            // The events from here that the same handler alone takes, if this one's is alone.
            let only = match (
                together,
                self.handlers.for_type(&events[offset].1.event_type),
            ) {
                (Together::Yes, [only]) => Some(only),
                _ => None,
            };
            let run = match only {
                Some(only) => events[offset..]
                    .iter()
                    .take_while(|(_, e)| {
                        matches!(self.handlers.for_type(&e.event_type), [h] if Arc::ptr_eq(h, only))
                    })
                    .count(),
                None => 1,
            };
            if let (Some(handler), true) = (only, run > 1) {
                let batch: Vec<&Event> = events[offset..offset + run]
                    .iter()
                    .map(|(_, e)| e)
                    .collect();
                let handled = self
                    .guarded(async {
                        match handler.handle_batch(&mut *conn, &batch).await {
                            Some(result) => result.map(|()| true),
                            None => Ok(false),
                        }
                    })
                    .await
                    .map_err(Failure::Together)?;
                if handled {
                    offset += run;
                    continue;
                }
            }
            for (at, (_, event)) in events.iter().enumerate().skip(offset).take(run) {
                for handler in self.handlers.for_type(&event.event_type) {
                    self.guarded(handler.handle(&mut *conn, event))
                        .await
                        .map_err(|error| Failure::At(at, error))?;
                }
            }
            offset += run;
        }
        Ok(())
    }

    /// A handler's call, with a panic or a run past the time limit turned into its error, so
    /// that it fails the attempt, not the worker.
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, HandlerError>>,
    ) -> Result<T, HandlerError> {
        let limit = self.settings.handler_timeout;
        match tokio::time::timeout(limit, AssertUnwindSafe(call).catch_unwind()).await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => Err(HandlerError::Panicked(panic_message(panic.as_ref()))),
            Err(_) => Err(HandlerError::TimedOut(limit)),
        }
    }

    /// What a failed attempt leads to: a retry with backoff, or `failed` for good.
    fn failure(&self, error: &HandlerError, attempts: u32) -> Outcome {
        let permanent = matches!(error, HandlerError::Invalid(_));
        self.failure_outcome(truncate(chain(error)), attempts, permanent)
    }

    fn failure_outcome(&self, error: String, attempts: u32, permanent: bool) -> Outcome {
        if permanent || attempts >= self.settings.max_attempts {
            return Outcome::Failed { error };
        }
        Outcome::Retry {
            error,
            delay: self.retry_delay(attempts),
        }
    }

    fn retry_delay(&self, attempts: u32) -> Duration {
        ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_base)
            .with_max_delay(self.settings.retry_max)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempts.saturating_sub(1) as usize)
            .unwrap_or(self.settings.retry_max)
    }

    /// Processes batches until nothing is due.
    pub async fn drain(&self) -> Result<usize, WorkerError> {
        self.drain_until(None).await
    }

    /// Processes batches until nothing is due, or until `deadline` (if any) has passed: no
    /// batch is started after it (Lambda's scheduled run must answer before its timeout).
    pub async fn drain_until(
        &self,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<usize, WorkerError> {
        let mut total = 0;
        while deadline.is_none_or(|d| tokio::time::Instant::now() < d) {
            match self.try_execute_batch().await? {
                0 => break,
                n => total += n,
            }
        }
        Ok(total)
    }

    /// Runs until `shutdown`; a batch under way is finished first. `running` is dropped when it
    /// ends, however it ends.
    pub async fn run_until_stopped(self, shutdown: CancellationToken, running: RunningGuard) {
        let _running = running;
        tracing::info!("webhook worker started");
        while !shutdown.is_cancelled() {
            let idle = match self.try_execute_batch().await {
                // A full batch: more is probably due.
                Ok(n) if n >= self.settings.batch_size as usize => continue,
                Ok(_) => self.settings.poll_interval,
                Err(WorkerError::Database(e)) if db::is_unavailable(&e) => {
                    tracing::warn!(error = %chain(&e), "webhook worker cannot reach the database");
                    Duration::from_secs(1)
                }
                Err(e) => {
                    tracing::error!(error = %chain(&e), "webhook batch failed; retrying it shortly");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(self.settings.batch_window) => {}
                    }
                }
                () = tokio::time::sleep(idle) => {}
            }
        }
        tracing::info!("webhook worker stopped");
    }
}
