//! Group commit for webhook deliveries: many deliveries, one multi-row `INSERT`, one commit.
//!
//! Every delivery must be durable before its 2xx, and each commit waits for the disk to flush.
//! With one commit per delivery the service could accept no more events per second than the
//! database can flush separate commits (a few thousand on PostgreSQL here). So deliveries go
//! through a [`Batcher`]: one task gathers the deliveries that arrive together (up to
//! `max_batch`, for at most `window` after the first, and for as long as every writer is busy),
//! stores them with [`insert_events`] in one statement, and answers each waiting delivery only
//! after that statement committed. If it fails, every delivery of the batch gets the error, so
//! every one is answered 503 and Stripe retries it; none is acknowledged unless stored.
//!
//! The same event id twice in one batch is stored once: the first of them is new, the others
//! are duplicates, exactly as if they had raced as separate inserts. Up to `writers` batches are
//! written at once, so the next batch gathers while one waits for its flush; SQLite has a single
//! writer, so there one batch at a time.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::envelope::Envelope;
use super::store::{MAX_ROWS, NewEvent, Stored, insert_events};
use crate::db::{Db, Engine};

#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// Most deliveries in one statement; capped at [`MAX_ROWS`].
    pub max_batch: usize,
    /// How long a batch waits for company after its first delivery. Zero still batches under
    /// load, because a batch also gathers while every writer is busy.
    pub window: Duration,
    /// Batches written at once.
    pub writers: usize,
    /// Deliveries that may wait for a batch before senders wait too.
    pub queue: usize,
}

impl BatchSettings {
    pub fn for_engine(engine: Engine) -> Self {
        Self {
            max_batch: 256,
            window: Duration::ZERO,
            writers: match engine {
                // Two: one batch commits while the next is written, which hides a remote
                // database's round trip; more only make smaller batches. Back-to-back runs at 64
                // concurrent deliveries on two cores: 3 writers ~12,400 events/s (p99 ~11.7 ms),
                // 2 ~14,300 (~9.5 ms), 1 ~14,700 (~9.5 ms); full bench runs vary more than that.
                Engine::Postgres => 2,
                Engine::Sqlite => 1,
            },
            queue: 4096,
        }
    }
}

/// What a delivery is answered: stored new, a duplicate, or the batch's error (shared by every
/// delivery of the batch).
pub type StoreResult = Result<Stored, Arc<sqlx::Error>>;

struct Delivery {
    envelope: Envelope,
    payload: String,
    reply: oneshot::Sender<StoreResult>,
}

/// The handle deliveries are stored through; cheap to clone. The task behind it stops when the
/// last handle is dropped, after answering what it already took.
#[derive(Clone, Debug)]
pub struct Batcher {
    sender: mpsc::Sender<Delivery>,
}

impl Batcher {
    /// Starts the batching task with the engine's settings. Needs a Tokio runtime.
    pub fn start(db: Db) -> Self {
        let settings = BatchSettings::for_engine(db.engine);
        Self::with_settings(db, settings)
    }

    pub fn with_settings(db: Db, settings: BatchSettings) -> Self {
        let settings = BatchSettings {
            max_batch: settings.max_batch.clamp(1, MAX_ROWS),
            writers: settings.writers.max(1),
            queue: settings.queue.max(1),
            ..settings
        };
        let (sender, receiver) = mpsc::channel(settings.queue);
        tokio::spawn(gather(db, settings, receiver));
        Self { sender }
    }

    /// Stores one delivery with others; resolves once its batch has committed.
    pub async fn store(&self, envelope: Envelope, payload: String) -> StoreResult {
        let (reply, answer) = oneshot::channel();
        let delivery = Delivery {
            envelope,
            payload,
            reply,
        };
        if self.sender.send(delivery).await.is_err() {
            return Err(Arc::new(sqlx::Error::PoolClosed));
        }
        // A dropped reply means the batch's task panicked; its insert may or may not have run,
        // so the delivery is refused and Stripe's retry will tell.
        answer
            .await
            .unwrap_or_else(|_| Err(Arc::new(sqlx::Error::WorkerCrashed)))
    }
}

async fn gather(db: Db, settings: BatchSettings, mut receiver: mpsc::Receiver<Delivery>) {
    let writers = Arc::new(Semaphore::new(settings.writers));
    while let Some(first) = receiver.recv().await {
        let mut batch = Vec::with_capacity(settings.max_batch);
        batch.push(first);
        if !settings.window.is_zero() {
            let deadline = tokio::time::Instant::now() + settings.window;
            while batch.len() < settings.max_batch {
                match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(delivery)) => batch.push(delivery),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        // While every writer waits on the database, the batch grows: the busier the database,
        // the fewer and larger the commits.
        let permit = loop {
            if batch.len() >= settings.max_batch {
                break Arc::clone(&writers).acquire_owned().await;
            }
            tokio::select! {
                biased;
                permit = Arc::clone(&writers).acquire_owned() => break permit,
                Some(delivery) = receiver.recv() => batch.push(delivery),
            }
        };
        // The semaphore is never closed, so a permit always comes.
        let Ok(permit) = permit else { return };
        let db = db.clone();
        tokio::spawn(async move {
            write(&db, batch).await;
            drop(permit);
        });
    }
}

async fn write(db: &Db, batch: Vec<Delivery>) {
    let mut seen = HashSet::with_capacity(batch.len());
    let events: Vec<NewEvent<'_>> = batch
        .iter()
        .filter(|d| seen.insert(d.envelope.id.as_str()))
        .map(|d| NewEvent {
            envelope: &d.envelope,
            payload: &d.payload,
        })
        .collect();
    let result = insert_events(db, &events).await;
    match result {
        Ok(mut new_ids) => {
            for delivery in batch {
                // The first delivery of a new id takes it; later copies in the batch find it gone.
                let stored = match new_ids.remove(delivery.envelope.id.as_str()) {
                    true => Stored::New,
                    false => Stored::Duplicate,
                };
                let _ = delivery.reply.send(Ok(stored));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, deliveries = batch.len(), "a batch of webhook events could not be stored");
            let error = Arc::new(e);
            for delivery in batch {
                let _ = delivery.reply.send(Err(Arc::clone(&error)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::DatabaseSettings;
    use crate::migrate::Migrator;
    use sqlx::{Connection, Executor};

    fn event(id: &str) -> (Envelope, String) {
        let payload = format!(
            r#"{{"id":"{id}","object":"event","type":"customer.created","created":1700000000,"livemode":false,"data":{{"object":{{"id":"cus_1"}}}}}}"#
        );
        let envelope = Envelope::parse(payload.as_bytes()).expect("a valid event");
        (envelope, payload)
    }

    /// Fresh databases, one per engine: SQLite always, PostgreSQL when `DATABASE_URL` names a
    /// server. Dropped again by [`Databases::remove`].
    struct Databases {
        dbs: Vec<Db>,
        postgres: Option<(String, String)>,
        _dir: tempfile::TempDir,
    }

    impl Databases {
        async fn remove(self) {
            for db in &self.dbs {
                db.pool.close().await;
            }
            if let Some((admin, name)) = self.postgres {
                let mut conn = sqlx::AnyConnection::connect(&admin).await.expect("admin");
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await
                .expect("drop database");
            }
        }
    }

    async fn databases(migrated: bool) -> Databases {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut urls = vec![format!("sqlite://{}/batch.db", dir.path().display())];
        let mut postgres = None;
        if let Some(admin) = std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| u.starts_with("postgres"))
        {
            sqlx::any::install_default_drivers();
            // Tests run at once in one process: the counter keeps their databases apart.
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let name = format!(
                "billing_batch_{}_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                super::super::store::now_ms()
            );
            let mut conn = sqlx::AnyConnection::connect(&admin)
                .await
                .expect("PostgreSQL reachable");
            conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .await
                .expect("create database");
            let mut url = url::Url::parse(&admin).expect("DATABASE_URL parses");
            url.set_path(&name);
            urls.push(url.to_string());
            postgres = Some((admin, name));
        }
        let mut dbs = Vec::new();
        for url in urls {
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
            dbs.push(db);
        }
        Databases {
            dbs,
            postgres,
            _dir: dir,
        }
    }

    #[tokio::test]
    async fn concurrent_deliveries_with_repeats_are_each_answered_once_stored() {
        let databases = databases(true).await;
        for db in databases.dbs.clone() {
            let settings = BatchSettings {
                max_batch: 32,
                window: Duration::from_millis(20),
                ..BatchSettings::for_engine(db.engine)
            };
            let batcher = Batcher::with_settings(db.clone(), settings);
            // 100 distinct events, each delivered three times at once: repeats share batches.
            let mut tasks = Vec::new();
            for copy in 0..3 {
                for i in 0..100 {
                    let batcher = batcher.clone();
                    tasks.push(tokio::spawn(async move {
                        let (envelope, payload) = event(&format!("evt_b{i}"));
                        (i, copy, batcher.store(envelope, payload).await)
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
                batcher.store(envelope, payload).await.ok(),
                Some(Stored::Duplicate)
            );
        }
        databases.remove().await;
    }

    #[tokio::test]
    async fn a_failed_batch_gives_every_delivery_the_error() {
        // No migrations: the table is missing, so the insert fails.
        let databases = databases(false).await;
        for db in databases.dbs.clone() {
            let settings = BatchSettings {
                window: Duration::from_millis(50),
                ..BatchSettings::for_engine(db.engine)
            };
            let batcher = Batcher::with_settings(db.clone(), settings);
            let tasks: Vec<_> = (0..20)
                .map(|i| {
                    let batcher = batcher.clone();
                    tokio::spawn(async move {
                        let (envelope, payload) = event(&format!("evt_f{i}"));
                        batcher.store(envelope, payload).await
                    })
                })
                .collect();
            for task in tasks {
                let result = task.await.expect("task");
                assert!(
                    matches!(result, Err(ref e) if matches!(**e, sqlx::Error::Database(_))),
                    "{:?}: {result:?}",
                    db.engine
                );
            }
        }
        databases.remove().await;
    }
}
