//! `billing-service sync`: every customer, subscription, subscription schedule, charge and
//! invoice Stripe has, written into our tables as if an event had carried each one.
//!
//! The tables then hold what Stripe holds even for what happened before the service existed,
//! or while its endpoint was missing. Each object goes through the built-in handler of its kind
//! ([`Listed`]), hence through the same table owners and the same newer-wins rule as events: it
//! is written as of the second Stripe read its page ([`Page::read_at`]), so an event created
//! later (a webhook arriving during the sync) is never overwritten by the older copy, and it is
//! written only where it differs from the row, so a second sync writes nothing.
//!
//! Pages are read one after another per kind (Stripe's cursor allows nothing else) while the
//! previous page is written; independent kinds run side by side, so at most three requests are
//! in flight. Customers come before subscriptions (a subscription without `metadata.user_id`
//! takes its customer's user) and subscriptions before invoices (an invoice counts only as its
//! subscription's latest). Each page is written in one transaction with the cursor past it
//! ([`sync_cursors`]): an interrupted sync resumes after the last page written.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::future::try_join_all;
use serde::Serialize;

use crate::db::Db;
use crate::stripe_reader::{Page, ReadError, StripeReader};
use crate::tables::sync_cursors::{self, Tally};
use crate::webhook::handlers::{HandlerError, Listed, TieResolver};

/// The kinds of object `sync` reads, in the order it reads them when run one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Customers,
    Subscriptions,
    SubscriptionSchedules,
    Charges,
    Invoices,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Customers,
        Kind::Subscriptions,
        Kind::SubscriptionSchedules,
        Kind::Charges,
        Kind::Invoices,
    ];

    /// The name `--only` takes, the summary shows and the cursor is kept under.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Customers => "customers",
            Kind::Subscriptions => "subscriptions",
            Kind::SubscriptionSchedules => "subscription_schedules",
            Kind::Charges => "charges",
            Kind::Invoices => "invoices",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Kind::Customers => "/v1/customers",
            Kind::Subscriptions => "/v1/subscriptions",
            Kind::SubscriptionSchedules => "/v1/subscription_schedules",
            Kind::Charges => "/v1/charges",
            Kind::Invoices => "/v1/invoices",
        }
    }

    /// Filters beyond `created`: Stripe leaves canceled subscriptions out unless asked.
    fn filters(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Subscriptions => &[("status", "all")],
            _ => &[],
        }
    }

    fn listed(self) -> Listed {
        match self {
            Kind::Customers => Listed::Customer,
            Kind::Subscriptions => Listed::Subscription,
            Kind::SubscriptionSchedules => Listed::SubscriptionSchedule,
            Kind::Charges => Listed::Charge,
            Kind::Invoices => Listed::Invoice,
        }
    }

    /// Whether this kind must wait for the others of its chain (see the module's comment).
    fn chained(self) -> bool {
        matches!(self, Kind::Customers | Kind::Subscriptions | Kind::Invoices)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!("'{s}' is not one of {}", names.join(", "))
            })
    }
}

/// What the sync of one kind did, since it started (an interrupted sync included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KindSummary {
    #[serde(flatten)]
    pub tally: Tally,
    /// Went on from an interrupted sync's cursor.
    pub resumed: bool,
}

/// Told as the sync goes, for a progress display.
pub trait Progress: Sync {
    /// The sync of `kind` starts, or resumes with `so_far` done.
    fn started(&self, kind: Kind, so_far: &Tally);
    /// A page of `kind` was written; `total` is the kind's tally since it started.
    fn page(&self, kind: Kind, total: &Tally);
    fn finished(&self, kind: Kind, total: &Tally);
}

/// No display (tests, `--json`).
impl Progress for () {
    fn started(&self, _: Kind, _: &Tally) {}
    fn page(&self, _: Kind, _: &Tally) {}
    fn finished(&self, _: Kind, _: &Tally) {}
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Stripe(#[from] ReadError),
    #[error("cannot write what Stripe listed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("Stripe's list of {kind} does not advance: it has more after {after}, again")]
    Stuck { kind: Kind, after: String },
}

/// Reads `kinds` from Stripe (created at or after `since`, unix seconds, when given) and writes
/// what differs. Safe beside the running service, and to run again.
pub async fn run(
    db: &Db,
    stripe: &StripeReader,
    ties: Option<TieResolver>,
    kinds: &[Kind],
    since: Option<i64>,
    progress: &dyn Progress,
) -> Result<Vec<(Kind, KindSummary)>, SyncError> {
    let mut kinds = kinds.to_vec();
    kinds.sort_unstable();
    kinds.dedup();
    let sync = Syncing {
        db,
        stripe,
        ties,
        since: since.unwrap_or(0),
        progress,
    };
    let chain = async {
        let mut done = Vec::new();
        for kind in kinds.iter().filter(|k| k.chained()) {
            done.push((*kind, sync.kind(*kind).await?));
        }
        Ok::<_, SyncError>(done)
    };
    let others = try_join_all(
        kinds
            .iter()
            .filter(|k| !k.chained())
            .map(|kind| async { Ok::<_, SyncError>((*kind, sync.kind(*kind).await?)) }),
    );
    let (chain, others) = futures_util::try_join!(chain, others)?;
    let mut summary: Vec<(Kind, KindSummary)> = chain.into_iter().chain(others).collect();
    summary.sort_unstable_by_key(|(kind, _)| *kind);
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    sync_cursors::clear(&mut *db.pool.acquire().await?, &names).await?;
    Ok(summary)
}

struct Syncing<'a> {
    db: &'a Db,
    stripe: &'a StripeReader,
    ties: Option<TieResolver>,
    since: i64,
    progress: &'a dyn Progress,
}

impl Syncing<'_> {
    async fn kind(&self, kind: Kind) -> Result<KindSummary, SyncError> {
        let name = kind.name();
        let cursor = sync_cursors::get(&mut *self.db.pool.acquire().await?, name)
            .await?
            .filter(|c| c.since == self.since);
        let resumed = cursor.is_some();
        let (mut after, mut total) = match cursor {
            Some(c) if c.finished => {
                self.progress.finished(kind, &c.tally);
                return Ok(KindSummary {
                    tally: c.tally,
                    resumed,
                });
            }
            Some(c) => (c.starting_after, c.tally),
            None => {
                sync_cursors::start(&mut *self.db.pool.acquire().await?, name, self.since).await?;
                (None, Tally::default())
            }
        };
        self.progress.started(kind, &total);
        let mut page = match self.read(kind, after.as_deref()).await {
            // The object the cursor names is gone from Stripe: the list cannot go on from it.
            Err(ReadError::Refused {
                status: 400 | 404, ..
            }) if after.is_some() => {
                tracing::warn!(kind = name, after = ?after, "the interrupted sync's cursor names an object Stripe no longer lists; starting this kind over");
                sync_cursors::start(&mut *self.db.pool.acquire().await?, name, self.since).await?;
                total = Tally::default();
                after = None;
                self.read(kind, None).await?
            }
            page => page?,
        };
        loop {
            let next = page.next_cursor().map(str::to_owned);
            if next.is_some() && next == after {
                return Err(SyncError::Stuck {
                    kind,
                    after: next.unwrap_or_default(),
                });
            }
            let read_next = async {
                match &next {
                    Some(after) => Some(self.read(kind, Some(after)).await),
                    None => None,
                }
            };
            let (written, read) = tokio::join!(self.write(kind, &page, next.as_deref()), read_next);
            total.add(&written?);
            self.progress.page(kind, &total);
            match read {
                Some(read) => {
                    page = read?;
                    after = next;
                }
                None => break,
            }
        }
        self.progress.finished(kind, &total);
        Ok(KindSummary {
            tally: total,
            resumed,
        })
    }

    async fn read(&self, kind: Kind, after: Option<&str>) -> Result<Page, ReadError> {
        let mut query: Vec<(String, String)> = kind
            .filters()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if self.since > 0 {
            query.push(("created[gte]".to_owned(), self.since.to_string()));
        }
        self.stripe.page(kind.path(), &query, after).await
    }

    /// Writes a page and moves the cursor past it, in one transaction; retried when the
    /// database gives up on it (a deadlock with the worker writing the same rows).
    async fn write(
        &self,
        kind: Kind,
        page: &Page,
        next: Option<&str>,
    ) -> Result<Tally, sqlx::Error> {
        (|| self.write_once(kind, page, next))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_times(3)
                    .with_jitter(),
            )
            .notify(
                |e, wait| tracing::warn!(kind = kind.name(), error = %e, ?wait, "retrying a page"),
            )
            .await
    }

    async fn write_once(
        &self,
        kind: Kind,
        page: &Page,
        next: Option<&str>,
    ) -> Result<Tally, sqlx::Error> {
        let mut tally = Tally {
            pages: 1,
            listed: page.data.len() as i64,
            ..Tally::default()
        };
        let mut tx = self.db.pool.begin().await?;
        for object in &page.data {
            let listed = kind.listed();
            match listed
                .write(&mut tx, object.clone(), page.read_at, self.ties.clone())
                .await
            {
                Ok(Some(0)) => {}
                Ok(Some(_)) => tally.written += 1,
                Ok(None) => tally.skipped += 1,
                Err(HandlerError::Database(e)) => return Err(e),
                Err(e) => {
                    tally.skipped += 1;
                    tracing::warn!(kind = kind.name(), id = object["id"].as_str(), error = %e, "a listed object cannot be read; skipped");
                }
            }
        }
        sync_cursors::advance(&mut tx, kind.name(), next, &tally).await?;
        tx.commit().await?;
        Ok(tally)
    }
}
