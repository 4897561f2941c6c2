//! Group commit for webhook deliveries: many deliveries, one multi-row `INSERT`, one commit.
//!
//! Every delivery must be durable before its 2xx, and each commit waits for the disk to flush.
//! With one commit per delivery the service could accept no more events per second than the
//! database can flush separate commits (a few thousand on PostgreSQL here). So deliveries go
//! through a [`Batcher`]: one task gathers the deliveries that arrive together (up to
//! `max_batch`; for at most `window` after the first, until there are as many as last time; and
//! for as long as every writer is busy), stores them with [`insert_events`] in one statement,
//! and answers each waiting delivery only after that statement committed. If it fails, every delivery of the batch gets the error, so
//! every one is answered 503 and Stripe retries it; none is acknowledged unless stored.
//!
//! Given a worker ([`Worker::on_receipt`]), the batch's new events whose handlers may run then
//! ([`EventHandler::on_receipt`]) are handled in the same transaction, before the commit: they
//! are stored `processed` (or `ignored`), so the worker never claims them nor rewrites their
//! rows (BENCHMARKS.md). If a handler fails, the transaction is rolled back and the batch stored
//! as without a worker, every event `pending`: the worker then finds the failing event, retries
//! or parks it, and handles the others. So no delivery is refused for a handler.
//!
//! [`EventHandler::on_receipt`]: super::handlers::EventHandler::on_receipt
//!
//! The same event id twice in one batch is stored once: the first of them is new, the others
//! are duplicates, exactly as if they had raced as separate inserts. One batch is written at a
//! time while the database keeps up: what arrives meanwhile waits and makes the next batch,
//! which is as large as the load makes it (each commit costs the database and the service about
//! as much as several rows; BENCHMARKS.md). A batch that fills up while one is being written
//! goes to another of the `writers` at once, so a slow database still takes up to `writers`
//! full batches at a time. SQLite has a single writer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::envelope::Envelope;
use super::handlers::HandlerError;
use super::worker::Worker;
use crate::clock::now_ms;
use crate::db::{self, Db, Engine};
use crate::tables::events::{self, EventStatus, MAX_ROWS, NewEvent, Stored};

#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// Most deliveries in one statement; capped at [`MAX_ROWS`].
    pub max_batch: usize,
    /// How long a batch may wait after its first delivery for as many as the batch before it
    /// had: under a steady load those senders come back, and a batch that waits for them is
    /// several times larger, so the database's cost per event falls with the statements and
    /// commits per event (BENCHMARKS.md). A delivery after a lone one is written at once. Zero
    /// still batches under load, because a batch also gathers while every writer is busy.
    pub window: Duration,
    /// Batches written at once, at most: a batch goes to a second writer only when it is full
    /// (`max_batch`) while another is being written.
    pub writers: usize,
    /// Deliveries that may wait for a batch before senders wait too.
    pub queue: usize,
    /// How long a sender waits for room in the queue before it is answered "busy" (503): a
    /// database that does not keep up must not hold every request open.
    pub slot_wait: Duration,
}

impl BatchSettings {
    pub fn for_engine(engine: Engine) -> Self {
        Self {
            max_batch: 256,
            window: Duration::from_millis(1),
            writers: match engine {
                // Two: a database too slow for one writer's full batches takes two at a time.
                Engine::Postgres | Engine::Mysql => 2,
                Engine::Sqlite => 1,
            },
            queue: 4096,
            slot_wait: Duration::from_secs(5),
        }
    }
}

/// Why a delivery was not stored. Cloned to every delivery of a failed batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The batching task is gone: the application is shutting down.
    #[error("the webhook store is shutting down")]
    Closed,
    /// The batch's task ended without answering (it panicked): its insert may or may not have
    /// run, so the delivery is refused and Stripe's retry will tell.
    #[error("the batch writer stopped before answering")]
    Crashed,
    #[error("storing the batch failed")]
    Database(#[source] Arc<sqlx::Error>),
    /// The queue stayed full for the whole `slot_wait`.
    #[error("no room to store the event: the database is not keeping up")]
    Busy,
}

/// What a delivery is answered: stored new, a duplicate, or why not.
pub type StoreResult = Result<Stored, BatchError>;

struct Delivery {
    envelope: Envelope,
    payload: String,
    /// The answer, with the envelope given back (the caller answers with its id).
    reply: oneshot::Sender<(Envelope, StoreResult)>,
}

impl Delivery {
    fn as_new_event(&self) -> NewEvent<'_> {
        self.envelope.as_new_event(&self.payload)
    }
}

/// The handle deliveries are stored through; cheap to clone. The task behind it stops when the
/// last handle is dropped, after answering what it already took.
#[derive(Clone)]
pub struct Batcher(Store);

#[derive(Clone)]
enum Store {
    /// Through the batching task.
    Batched {
        sender: mpsc::Sender<Delivery>,
        slot_wait: Duration,
    },
    /// One insert per delivery, in the caller's task: for Lambda, which freezes the process
    /// after each response (no task may be left to run) and hands an instance one request at a
    /// time (there is nothing to batch).
    Direct(Db),
}

impl Batcher {
    /// Starts the store with the engine's settings, handling events as they are stored with
    /// `on_receipt` when there is one.
    pub fn start(db: Db, on_receipt: Option<Worker>) -> std::io::Result<Self> {
        let settings = BatchSettings::for_engine(db.engine);
        Self::with_settings(db, settings, on_receipt)
    }

    /// The store runs on a thread of its own, with a runtime and connections of its own (as many
    /// as `writers`, to `db`'s database). Its own connections: a pool busy with the worker or the
    /// API's reads must not hold deliveries, which Stripe times out. Its own runtime: every
    /// delivery waits for its batch's transaction, whose round trips are each a wake-up of the
    /// store's task; on the service's runtime that task queued behind the connections' tasks at
    /// every one, and the database's answers waited for a busy worker to look at the sockets
    /// (BENCHMARKS.md). It stops, after answering what it took, when the last handle is dropped.
    pub fn with_settings(
        db: Db,
        settings: BatchSettings,
        on_receipt: Option<Worker>,
    ) -> std::io::Result<Self> {
        let settings = BatchSettings {
            max_batch: settings.max_batch.clamp(1, MAX_ROWS),
            writers: settings.writers.max(1),
            queue: settings.queue.max(1),
            ..settings
        };
        let (sender, receiver) = mpsc::channel(settings.queue);
        let slot_wait = settings.slot_wait;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("webhook-store".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let connections = u32::try_from(settings.writers).unwrap_or(u32::MAX);
                    let db = db.own_pool(connections);
                    let on_receipt = on_receipt.map(|worker| worker.with_db(db.clone()));
                    gather(&db, settings, on_receipt, receiver).await;
                    db.pool.close().await;
                });
            })?;
        Ok(Self(Store::Batched { sender, slot_wait }))
    }

    /// Stores each delivery with an insert of its own, without a task.
    pub fn direct(db: Db) -> Self {
        Self(Store::Direct(db))
    }

    /// Stores one delivery with others; resolves once its batch has committed, giving the
    /// envelope back.
    pub async fn store(
        &self,
        envelope: Envelope,
        payload: String,
    ) -> Result<(Envelope, Stored), BatchError> {
        let (sender, slot_wait) = match &self.0 {
            Store::Batched { sender, slot_wait } => (sender, *slot_wait),
            Store::Direct(db) => {
                let row = envelope.as_new_event(&payload);
                let stored = match events::insert(db, &[row]).await {
                    Ok(new) if new.contains(envelope.id.as_str()) => Stored::New,
                    Ok(_) => Stored::Duplicate,
                    Err(e) => return Err(BatchError::Database(Arc::new(e))),
                };
                return Ok((envelope, stored));
            }
        };
        let (reply, answer) = oneshot::channel();
        let delivery = Delivery {
            envelope,
            payload,
            reply,
        };
        match tokio::time::timeout(slot_wait, sender.send(delivery)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(BatchError::Closed),
            Err(_) => return Err(BatchError::Busy),
        }
        let (envelope, stored) = answer.await.map_err(|_| BatchError::Crashed)?;
        Ok((envelope, stored?))
    }
}

async fn gather(
    db: &Db,
    settings: BatchSettings,
    on_receipt: Option<Worker>,
    mut receiver: mpsc::Receiver<Delivery>,
) {
    let writers = Arc::new(Semaphore::new(settings.writers));
    let all_writers = u32::try_from(settings.writers).unwrap_or(u32::MAX);
    // The deliveries of the last batch, which under a steady load are the senders that come back
    // for the next one (never more than `max_batch`). Many at first, so that a burst starting
    // cold is gathered too.
    let mut last = settings.max_batch;
    while let Some(first) = receiver.recv().await {
        let mut batch = Vec::with_capacity(settings.max_batch);
        batch.push(first);
        if last > 1 && !settings.window.is_zero() {
            // One timer for the window, and what is queued taken at once, not one by one.
            let window = tokio::time::sleep(settings.window);
            tokio::pin!(window);
            while batch.len() < last {
                let room = last - batch.len();
                tokio::select! {
                    biased;
                    taken = receiver.recv_many(&mut batch, room) => {
                        if taken == 0 {
                            break;
                        }
                    }
                    () = &mut window => break,
                }
            }
        }
        // While a batch is being written, the next one grows: the busier the database, the
        // fewer and larger the commits. Only a full batch takes a second writer.
        let idle = {
            // Kept across deliveries, so that it waits in the semaphore's queue once.
            let idle = Arc::clone(&writers).acquire_many_owned(all_writers);
            tokio::pin!(idle);
            loop {
                if batch.len() >= settings.max_batch {
                    // Dropped before a single writer is waited for: the semaphore is fair, and
                    // this waiter for every writer would stand before it.
                    break None;
                }
                let room = settings.max_batch - batch.len();
                tokio::select! {
                    biased;
                    idle = &mut idle => break Some(idle),
                    taken = receiver.recv_many(&mut batch, room) => {
                        if taken == 0 {
                            break Some((&mut idle).await);
                        }
                    }
                }
            }
        };
        let permit = match idle {
            Some(idle) => idle.map(|mut idle| idle.split(1).expect("at least one writer")),
            None => Arc::clone(&writers).acquire_owned().await,
        };
        last = batch.len();
        // The semaphore is never closed, so a permit always comes.
        let Ok(permit) = permit else { return };
        let db = db.clone();
        let on_receipt = on_receipt.clone();
        tokio::spawn(async move {
            write(&db, on_receipt.as_ref(), batch).await;
            drop(permit);
        });
    }
    // Batches still being written finish first (nobody waits for their answers any more, or
    // the last handle would not be gone): closing the pool next would refuse the connection a
    // batch whose handlers failed takes for its second insert.
    let _ = writers.acquire_many(all_writers).await;
}

/// Stores a batch and answers each delivery. A failure is not logged here: each delivery's
/// answer carries it, and the HTTP layer logs what it answers.
async fn write(db: &Db, on_receipt: Option<&Worker>, batch: Vec<Delivery>) {
    match store(db, on_receipt, &batch).await {
        Ok(answers) => {
            for (delivery, stored) in batch.into_iter().zip(answers) {
                let _ = delivery.reply.send((delivery.envelope, Ok(stored)));
            }
        }
        Err(e) => {
            let error = BatchError::Database(Arc::new(e));
            for delivery in batch {
                let _ = delivery.reply.send((delivery.envelope, Err(error.clone())));
            }
        }
    }
}

/// Stores a batch; returns what each delivery is answered, in order.
async fn store(
    db: &Db,
    on_receipt: Option<&Worker>,
    batch: &[Delivery],
) -> Result<Vec<Stored>, sqlx::Error> {
    let mut seen = HashSet::with_capacity(batch.len());
    let mut rows: Vec<NewEvent<'_>> = batch
        .iter()
        .filter(|d| seen.insert(d.envelope.id.as_str()))
        .map(Delivery::as_new_event)
        .collect();
    let mut new_ids = match on_receipt {
        Some(worker) => store_and_handle(db, worker, &mut rows).await?,
        None => events::insert(db, &rows).await?,
    };
    let handled: HashSet<&str> = rows
        .iter()
        .filter(|row| row.status != EventStatus::Pending)
        .map(|row| row.id)
        .collect();
    Ok(batch
        .iter()
        .map(|delivery| {
            let id = delivery.envelope.id.as_str();
            // The first delivery of a new id takes it; later copies in the batch find it gone.
            match (new_ids.remove(id), handled.contains(id)) {
                (true, true) => Stored::Handled,
                (true, false) => Stored::New,
                (false, _) => Stored::Duplicate,
            }
        })
        .collect())
}

/// Stores the rows and handles the new ones whose handlers may run now, in one transaction;
/// returns the new ids. On return, each row's `status` says whether it was handled.
async fn store_and_handle(
    db: &Db,
    worker: &Worker,
    rows: &mut [NewEvent<'_>],
) -> Result<HashSet<String>, sqlx::Error> {
    for row in rows.iter_mut() {
        row.status = worker.status_on_receipt(row.event_type);
    }
    if rows.iter().all(|row| row.status == EventStatus::Pending) {
        return events::insert(db, rows).await;
    }
    match handle_as_stored(worker, rows).await {
        Ok(new_ids) => Ok(new_ids),
        // The plain insert would not get through either: refused, and logged, as an outage.
        Err(HandlerError::Database(e)) if db::is_unavailable(&e) => Err(e),
        Err(error) => {
            let left = rows.iter().filter(|row| row.status != EventStatus::Pending);
            worker.left_on_receipt(&error, left.count());
            for row in rows.iter_mut() {
                row.status = EventStatus::Pending;
            }
            events::insert(db, rows).await
        }
    }
}

async fn handle_as_stored(
    worker: &Worker,
    rows: &[NewEvent<'_>],
) -> Result<HashSet<String>, HandlerError> {
    let mut tx = worker.begin_on_receipt().await?;
    let new_ids = events::insert_in(&mut tx, rows).await?;
    let stored_at_ms = now_ms();
    let mut handled: Vec<&NewEvent<'_>> = rows
        .iter()
        .filter(|row| row.status != EventStatus::Pending && new_ids.contains(row.id))
        .collect();
    // In the queue's order, as the worker would take them.
    handled.sort_by_key(|row| (row.created, row.id));
    worker.handle_on_receipt(&mut tx, &handled).await?;
    tx.commit().await?;
    worker.count_on_receipt(&handled, stored_at_ms);
    Ok(new_ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::{DatabaseSettings, WorkerSettings};
    use crate::metrics::Metrics;
    use crate::migrate::Migrator;
    use crate::webhook::handlers::{Event, EventHandler, HandlerError, Handlers};
    use test_support::db::{every_engine, server_or_skip};

    async fn stored(batcher: &Batcher, envelope: Envelope, payload: String) -> StoreResult {
        let (_, stored) = batcher.store(envelope, payload).await?;
        Ok(stored)
    }

    fn event(id: &str) -> (Envelope, String) {
        let payload = format!(
            r#"{{"id":"{id}","object":"event","type":"customer.created","created":1700000000,"livemode":false,"data":{{"object":{{"id":"cus_1"}}}}}}"#
        );
        let envelope = Envelope::parse(payload.as_bytes()).expect("a valid event");
        (envelope, payload)
    }

    async fn connect(url: &str, migrated: bool) -> Db {
        let db = Db::connect(&DatabaseSettings::new(url))
            .await
            .expect("connect");
        if migrated {
            Migrator::embedded(db.engine)
                .expect("migrations")
                .migrate(&db, false)
                .await
                .expect("migrate");
        }
        db
    }

    #[tokio::test]
    async fn concurrent_deliveries_with_repeats_are_each_answered_once_stored() {
        for test_db in every_engine().await {
            let db = connect(&test_db.url, true).await;
            let settings = BatchSettings {
                max_batch: 32,
                window: Duration::from_millis(20),
                ..BatchSettings::for_engine(db.engine)
            };
            let batcher =
                Batcher::with_settings(db.clone(), settings, None).expect("store started");
            // 100 distinct events, each delivered three times at once: repeats share batches.
            let mut tasks = Vec::new();
            for copy in 0..3 {
                for i in 0..100 {
                    let batcher = batcher.clone();
                    tasks.push(tokio::spawn(async move {
                        let (envelope, payload) = event(&format!("evt_b{i}"));
                        (i, copy, stored(&batcher, envelope, payload).await)
                    }));
                }
            }
            let mut new = vec![0; 100];
            for task in tasks {
                let (i, _, result) = task.await.expect("task");
                if result.expect("stored") == Stored::New {
                    new[i] += 1;
                }
            }
            assert!(new.iter().all(|&n| n == 1), "{:?}: {new:?}", db.engine);
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stripe_events")
                .fetch_one(&db.pool)
                .await
                .expect("count");
            assert_eq!(rows, 100);
            // Stored before: a later batch answers duplicate.
            let (envelope, payload) = event("evt_b7");
            assert_eq!(
                stored(&batcher, envelope, payload).await.ok(),
                Some(Stored::Duplicate)
            );
            db.pool.close().await;
        }
    }

    /// The window waits for as many as the last batch had: a burst is gathered, while a
    /// delivery after a lone one is written at once instead of waiting the window out.
    #[tokio::test]
    async fn the_window_waits_for_as_many_as_last_time_and_no_longer() {
        for test_db in every_engine().await {
            let db = connect(&test_db.url, true).await;
            let window = Duration::from_millis(400);
            let settings = BatchSettings {
                window,
                ..BatchSettings::for_engine(db.engine)
            };
            let batcher =
                Batcher::with_settings(db.clone(), settings, None).expect("store started");
            // The first waits the window out: nothing is known of the load yet.
            let (envelope, payload) = event("evt_w0");
            let started = tokio::time::Instant::now();
            stored(&batcher, envelope, payload).await.expect("stored");
            assert!(started.elapsed() >= window, "{:?}", db.engine);
            // Its batch was one: one at a time, none waits.
            let started = tokio::time::Instant::now();
            for i in 1..=5 {
                let (envelope, payload) = event(&format!("evt_w{i}"));
                stored(&batcher, envelope, payload).await.expect("stored");
            }
            assert!(
                started.elapsed() < window,
                "{:?}: {:?} for five deliveries one after the other",
                db.engine,
                started.elapsed()
            );
            db.pool.close().await;
        }
    }

    /// A delivery of `event_type` about `object`.
    fn delivery(id: &str, event_type: &str, object: serde_json::Value) -> (Envelope, String) {
        delivery_at(id, event_type, 1_700_000_000, object)
    }

    fn delivery_at(
        id: &str,
        event_type: &str,
        created: i64,
        object: serde_json::Value,
    ) -> (Envelope, String) {
        let payload = serde_json::json!({
            "id": id, "object": "event", "type": event_type, "created": created,
            "livemode": false, "data": { "object": object },
        })
        .to_string();
        let envelope = Envelope::parse(payload.as_bytes()).expect("a valid event");
        (envelope, payload)
    }

    fn charge(id: &str, amount: i64) -> serde_json::Value {
        serde_json::json!({
            "id": id, "object": "charge", "amount": amount, "currency": "usd",
            "status": "succeeded", "created": 1_700_000_000,
        })
    }

    fn worker(db: &Db, handlers: Handlers, metrics: &Metrics) -> Worker {
        let settings = WorkerSettings {
            retry_base: Duration::from_millis(1),
            retry_max: Duration::from_millis(1),
            ..WorkerSettings::default()
        };
        Worker::new(
            db.clone(),
            handlers,
            settings,
            metrics.clone(),
            Arc::new(tokio::sync::Notify::new()),
        )
    }

    /// `(status, attempts, last_error)` of a stored event.
    async fn row(db: &Db, id: &str) -> (String, i32, Option<String>) {
        let sql = crate::db::sql::text(
            db.engine,
            "SELECT status, attempts, last_error FROM stripe_events WHERE id = $1",
        );
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .expect("the event is stored");
        use sqlx::Row;
        (row.get(0), row.get(1), row.get(2))
    }

    /// A handler that says nothing of when it may run: the worker runs it.
    struct Later;

    #[async_trait::async_trait]
    impl EventHandler for Later {
        async fn handle(
            &self,
            _conn: &mut sqlx::AnyConnection,
            _event: &Event,
        ) -> Result<(), HandlerError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn events_whose_handlers_may_run_then_are_handled_as_they_are_stored() {
        for test_db in every_engine().await {
            let db = connect(&test_db.url, true).await;
            let handlers = Handlers::builtin().on("thing.happened", Later);
            let metrics = Metrics::default();
            let on_receipt = worker(&db, handlers, &metrics).on_receipt();
            assert_eq!(on_receipt.is_none(), db.engine == Engine::Mysql);
            let batcher = Batcher::with_settings(
                db.clone(),
                BatchSettings::for_engine(db.engine),
                on_receipt,
            )
            .expect("store started");
            let mut no_amount = charge("ch_2", 0);
            no_amount.as_object_mut().unwrap().remove("amount");
            let subscription = serde_json::json!({
                "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
            });
            let summary = serde_json::json!({
                "object": "entitlements.active_entitlement_summary", "customer": "cus_1",
                "entitlements": { "data": [{ "lookup_key": "pro" }], "has_more": false },
            });
            let deliveries = [
                delivery("evt_r1", "charge.succeeded", charge("ch_1", 500)),
                delivery("evt_r2", "charge.succeeded", no_amount),
                delivery("evt_r3", "thing.happened", serde_json::json!({})),
                delivery("evt_r4", "payout.paid", serde_json::json!({"id": "po_1"})),
                delivery("evt_r1", "charge.succeeded", charge("ch_1", 500)),
                delivery(
                    "evt_r5",
                    "customer.subscription.created",
                    subscription.clone(),
                ),
                // The same second as the one stored: which is newer, only Stripe can say.
                delivery("evt_r6", "customer.subscription.updated", subscription),
                delivery(
                    "evt_r7",
                    "entitlements.active_entitlement_summary.updated",
                    summary.clone(),
                ),
                // The same second again: Stripe's list settles it.
                delivery(
                    "evt_r8",
                    "entitlements.active_entitlement_summary.updated",
                    summary,
                ),
            ];
            let mut answers = Vec::new();
            for (envelope, payload) in deliveries {
                answers.push(stored(&batcher, envelope, payload).await.expect("stored"));
            }
            let mut rows = Vec::new();
            for i in 1..=8 {
                let id = format!("evt_r{i}");
                rows.push(row(&db, &id).await);
            }
            let amount: Option<i64> = sqlx::query_scalar("SELECT amount FROM charges")
                .fetch_optional(&db.pool)
                .await
                .expect("charges");
            let pending = ("pending".to_owned(), 0, None);
            let processed = ("processed".to_owned(), 1, None);
            use Stored::*;
            if db.engine == Engine::Mysql {
                assert_eq!(answers, [New, New, New, New, Duplicate, New, New, New, New]);
                assert!(rows.iter().all(|r| *r == pending));
                assert_eq!(amount, None);
                continue;
            }
            let engine = db.engine;
            assert_eq!(
                answers,
                [
                    Handled, New, New, Handled, Duplicate, Handled, New, Handled, New
                ],
                "{engine:?}"
            );
            assert_eq!(rows[0], processed, "{engine:?}");
            assert_eq!(amount, Some(500), "{engine:?}");
            // The invalid charge failed its handler: stored all the same, for the worker.
            assert_eq!(rows[1], pending);
            assert_eq!(rows[2], pending);
            assert_eq!(rows[3], ("ignored".into(), 1, None));
            assert_eq!(rows[4], processed);
            assert_eq!(rows[5], pending);
            assert_eq!(rows[6], processed);
            assert_eq!(rows[7], pending);
            let text = metrics.encode(None, true);
            for counted in [
                r#"billing_webhook_events_left_to_worker_total{reason="needs_stripe"} 2"#,
                r#"billing_webhook_events_left_to_worker_total{reason="failed"} 1"#,
            ] {
                assert!(text.contains(counted), "{counted} in {text}");
            }
            db.pool.close().await;
        }
    }

    /// Fails its first call, after stalling for `stall`, and succeeds after that.
    struct FailsFirst {
        calls: std::sync::atomic::AtomicU32,
        stall: Duration,
    }

    #[async_trait::async_trait]
    impl EventHandler for FailsFirst {
        async fn handle(
            &self,
            _conn: &mut sqlx::AnyConnection,
            _event: &Event,
        ) -> Result<(), HandlerError> {
            use std::sync::atomic::Ordering;
            if self.calls.fetch_add(1, Ordering::SeqCst) > 0 {
                return Ok(());
            }
            tokio::time::sleep(self.stall).await;
            Err(HandlerError::Other(anyhow::anyhow!("not this time")))
        }

        fn on_receipt(&self) -> bool {
            true
        }
    }

    /// A handler that fails or runs past its limit on receipt leaves the whole batch to the
    /// worker, stored all the same: the deliveries are answered within the limit, and the
    /// worker's first attempt handles them.
    #[tokio::test]
    async fn a_failure_on_receipt_leaves_the_batch_to_the_worker() {
        for test_db in every_engine().await {
            let db = connect(&test_db.url, true).await;
            if db.engine == Engine::Mysql {
                continue; // handled by the worker only (the test above)
            }
            for (batch, stall) in [
                ("evt_x1", Duration::ZERO),
                ("evt_x2", Duration::from_secs(30)),
            ] {
                // The charge comes first in the queue's order, so it is undone with the failure.
                let (charged, failing) = (format!("{batch}a"), format!("{batch}b"));
                let handler = FailsFirst {
                    calls: Default::default(),
                    stall,
                };
                let handlers = Handlers::builtin().on("thing.happened", handler);
                let worker = worker(&db, handlers, &Metrics::default());
                let settings = BatchSettings {
                    window: Duration::from_millis(100),
                    ..BatchSettings::for_engine(db.engine)
                };
                let batcher = Batcher::with_settings(db.clone(), settings, worker.on_receipt())
                    .expect("store started");
                let started = tokio::time::Instant::now();
                let charge_id = format!("ch_{batch}");
                // Gathered into one batch by the window.
                let deliveries = [
                    delivery(&charged, "charge.succeeded", charge(&charge_id, 1)),
                    delivery(&failing, "thing.happened", serde_json::json!({})),
                ];
                let answers = futures_util::future::join_all(
                    deliveries
                        .into_iter()
                        .map(|(envelope, payload)| stored(&batcher, envelope, payload)),
                )
                .await;
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{:?}",
                    db.engine
                );
                for answer in answers {
                    assert_eq!(answer.expect("stored"), Stored::New, "{:?}", db.engine);
                }
                assert_eq!(row(&db, &failing).await, ("pending".into(), 0, None));
                assert_eq!(row(&db, &charged).await, ("pending".into(), 0, None));
                let amount = || async {
                    let sql = "SELECT amount FROM charges WHERE id = $1";
                    sqlx::query_scalar::<_, i64>(crate::db::sql::text(db.engine, sql))
                        .bind(&charge_id)
                        .fetch_optional(&db.pool)
                        .await
                        .expect("charges")
                };
                assert_eq!(
                    amount().await,
                    None,
                    "the charge's write is undone with the failure"
                );
                worker.drain().await.expect("drained");
                assert_eq!(row(&db, &failing).await, ("processed".into(), 1, None));
                assert_eq!(row(&db, &charged).await, ("processed".into(), 1, None));
                assert_eq!(amount().await, Some(1));
            }
            db.pool.close().await;
        }
    }

    /// A row another transaction holds fails the handler at once on PostgreSQL, instead of
    /// holding the delivery until that transaction ends.
    #[tokio::test]
    async fn a_locked_row_does_not_hold_a_delivery_on_receipt() {
        let Some(test_db) = every_engine()
            .await
            .into_iter()
            .find(|t| t.engine == test_support::db::Engine::Postgres)
        else {
            return;
        };
        let db = connect(&test_db.url, true).await;
        let batcher = Batcher::with_settings(
            db.clone(),
            BatchSettings::for_engine(db.engine),
            worker(&db, Handlers::builtin(), &Metrics::default()).on_receipt(),
        )
        .expect("store started");
        let (envelope, payload) = delivery("evt_l1", "charge.succeeded", charge("ch_l", 100));
        stored(&batcher, envelope, payload).await.expect("stored");
        let mut holder = db.pool.begin().await.expect("begin");
        sqlx::query("SELECT id FROM charges WHERE id = 'ch_l' FOR UPDATE")
            .execute(&mut *holder)
            .await
            .expect("locked");
        let (envelope, payload) = delivery_at(
            "evt_l2",
            "charge.updated",
            1_700_000_001,
            charge("ch_l", 200),
        );
        let started = tokio::time::Instant::now();
        let stored =
            tokio::time::timeout(Duration::from_secs(10), stored(&batcher, envelope, payload))
                .await
                .expect("answered while the row is held")
                .expect("stored");
        assert_eq!(stored, Stored::New);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        holder.rollback().await.expect("rollback");
        assert_eq!(row(&db, "evt_l2").await, ("pending".into(), 0, None));
        db.pool.close().await;
    }

    /// Insert statements of this database waiting for a lock.
    async fn inserts_waiting(db: &Db) -> i64 {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO stripe_events%'",
        )
        .fetch_one(&db.pool)
        .await
        .expect("pg_stat_activity")
    }

    async fn until_inserts_waiting(db: &Db, n: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while inserts_waiting(db).await != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never {n} inserts waiting"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// One batch is written at a time: what arrives meanwhile waits for it and makes the next
    /// batch, unless that one fills up, when a second writer takes it at once.
    #[tokio::test]
    async fn a_second_writer_takes_only_a_full_batch() {
        let test = "a_second_writer_takes_only_a_full_batch";
        let Some(test_db) = server_or_skip(test_support::db::Engine::Postgres, test).await else {
            return;
        };
        let db = connect(&test_db.url, true).await;
        let settings = BatchSettings {
            max_batch: 4,
            window: Duration::ZERO,
            writers: 2,
            ..BatchSettings::for_engine(db.engine)
        };
        let batcher = Batcher::with_settings(db.clone(), settings, None).expect("store started");
        // Every insert waits behind this lock until it is released.
        let mut holder = db.pool.begin().await.expect("begin");
        sqlx::query("LOCK TABLE stripe_events IN EXCLUSIVE MODE")
            .execute(&mut *holder)
            .await
            .expect("locked");
        let store = |i: usize| {
            let batcher = batcher.clone();
            tokio::spawn(async move {
                let (envelope, payload) = event(&format!("evt_s{i}"));
                stored(&batcher, envelope, payload).await
            })
        };
        let mut deliveries = vec![store(0)];
        until_inserts_waiting(&db, 1).await;
        deliveries.extend((1..4).map(store));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            inserts_waiting(&db).await,
            1,
            "three deliveries, not a full batch, wait for the busy writer"
        );
        assert!(deliveries.iter().all(|d| !d.is_finished()));
        deliveries.push(store(4));
        until_inserts_waiting(&db, 2).await;
        holder.rollback().await.expect("rollback");
        for delivery in deliveries {
            assert_eq!(delivery.await.expect("task").ok(), Some(Stored::New));
        }
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stripe_events")
            .fetch_one(&db.pool)
            .await
            .expect("count");
        assert_eq!(rows, 5);
        db.pool.close().await;
    }

    /// The store takes no connection from the pool it is given: it stores while every one of
    /// them is held. And started from one runtime, it still stores once that runtime is gone:
    /// neither its task nor its connections' sockets are on the runtime that started it (in the
    /// service, the HTTP connections' runtime).
    #[test]
    fn the_store_has_a_runtime_and_connections_of_its_own() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
        };
        for test_db in runtime().block_on(every_engine()) {
            let starter = runtime();
            let (batcher, engine) = starter.block_on(async {
                connect(&test_db.url, true).await.pool.close().await;
                let one = DatabaseSettings {
                    max_connections: Some(1),
                    ..DatabaseSettings::new(&test_db.url)
                };
                let db = Db::connect(&one).await.expect("connect");
                let batcher = Batcher::start(db.clone(), None).expect("store started");
                let held = db.pool.acquire().await.expect("the pool's one connection");
                let (envelope, payload) = event("evt_r1");
                let answer = stored(&batcher, envelope, payload).await;
                assert!(matches!(answer, Ok(Stored::New)), "{answer:?}");
                drop(held);
                (batcher, db.engine)
            });
            drop(starter);
            runtime().block_on(async {
                let (envelope, payload) = event("evt_r2");
                let answer = tokio::time::timeout(
                    Duration::from_secs(10),
                    stored(&batcher, envelope, payload),
                )
                .await;
                assert!(
                    matches!(answer, Ok(Ok(Stored::New))),
                    "{engine:?}: {answer:?}"
                );
                let db = connect(&test_db.url, false).await;
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stripe_events")
                    .fetch_one(&db.pool)
                    .await
                    .expect("count");
                assert_eq!(count, 2, "{engine:?}");
                db.pool.close().await;
            });
        }
    }

    #[tokio::test]
    async fn a_failed_batch_gives_every_delivery_the_error() {
        for test_db in every_engine().await {
            // No migrations: the table is missing, so the insert fails.
            let db = connect(&test_db.url, false).await;
            let settings = BatchSettings {
                window: Duration::from_millis(50),
                ..BatchSettings::for_engine(db.engine)
            };
            let batcher =
                Batcher::with_settings(db.clone(), settings, None).expect("store started");
            let tasks: Vec<_> = (0..20)
                .map(|i| {
                    let batcher = batcher.clone();
                    tokio::spawn(async move {
                        let (envelope, payload) = event(&format!("evt_f{i}"));
                        stored(&batcher, envelope, payload).await
                    })
                })
                .collect();
            for task in tasks {
                let result = task.await.expect("task");
                assert!(
                    matches!(result, Err(BatchError::Database(ref e)) if matches!(**e, sqlx::Error::Database(_))),
                    "{:?}: {result:?}",
                    db.engine
                );
            }
            db.pool.close().await;
        }
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_after_the_slot_wait_and_loses_nothing_queued() {
        let test_db = test_support::db::TestDb::sqlite();
        let db = connect(&test_db.url, true).await;
        // Another writer holds SQLite's write lock: the batch writer waits on it.
        let mut blocker = db.pool.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *blocker)
            .await
            .unwrap();
        let settings = BatchSettings {
            max_batch: 1,
            writers: 1,
            queue: 1,
            slot_wait: Duration::from_millis(100),
            ..BatchSettings::for_engine(db.engine)
        };
        let batcher = Batcher::with_settings(db.clone(), settings, None).expect("store started");
        let started = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move {
                    let (envelope, payload) = event(&format!("evt_q{i}"));
                    stored(&batcher, envelope, payload).await
                })
            })
            .collect();
        // One batch writing, one gathered, one queued: the rest find no room.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let busy: Vec<_> = tasks.iter().filter(|t| t.is_finished()).collect();
        assert!(
            busy.len() >= 6,
            "{} answered while the queue was full",
            busy.len()
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        sqlx::query("COMMIT").execute(&mut *blocker).await.unwrap();
        drop(blocker);
        let (mut stored, mut refused) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                Ok(Stored::New) => stored += 1,
                Err(BatchError::Busy) => refused += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(stored + refused, 10);
        assert!(
            refused >= 6 && stored >= 1,
            "{stored} stored, {refused} busy"
        );
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stripe_events")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(rows, stored, "every delivery answered stored is stored");
    }
}
