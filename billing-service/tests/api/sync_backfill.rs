//! `sync` (the backfill) against the Stripe double, every request checked against Stripe's
//! request schemas: 10,000 customers and subscriptions over 100 pages each, with the other
//! kinds, written through the handlers' table owners; 429s mid-sync waited out; a second run
//! writes nothing; an interrupted sync resumes after the last page it wrote; a webhook newer
//! than the sync's read stays, an older one does not undo it; unreadable objects are skipped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use billing_service::clock::unix_now;
use billing_service::configuration::StripeApiSettings;
use billing_service::db::Db;
use billing_service::metrics::Metrics;
use billing_service::stripe_reader::StripeReader;
use billing_service::sync::backfill::{self, Kind, KindSummary, Progress, SyncError};
use billing_service::tables::sync_cursors::{self, Tally};
use billing_service::webhook::handlers::TieResolver;
use billing_stripe::SecretKey;
use billing_stripe::fixtures::{self, EventSpec};
use serde_json::{Value, json};
use sqlx::Row;
use std::sync::Arc;
use std::time::SystemTime;
use stripe_wiremock::{Kind as Stripe, StripeDouble};
use test_support::db::{TestDb, every_engine};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{connect_migrated, spawn_app_with, stripe_reader, test_settings};

/// Objects' own `created`: long before the sync reads them.
const BASE: i64 = 1_780_000_000;

fn reader(stripe: &StripeDouble) -> Arc<StripeReader> {
    Arc::new(stripe_reader(stripe))
}

/// The object an event of `event_type` would carry; `i` names it and its customer.
fn object(event_type: &str, i: usize, change: impl FnOnce(&mut EventSpec)) -> Value {
    let mut spec = EventSpec {
        customer: format!("cus_bf{i:05}"),
        subscription: format!("sub_bf{i:05}"),
        user_id: format!("u-bf-{i}"),
        email: format!("u-bf-{i}@example.com"),
        created: BASE + i as i64,
        ..EventSpec::new(event_type, &format!("evt_bf{i:05}"))
    };
    change(&mut spec);
    fixtures::event(&spec).unwrap()["data"]["object"].take()
}

/// What Stripe has: `n` customers and their subscriptions (every tenth canceled; the odd ones
/// without `metadata.user_id`, so their user comes from the customer), and some schedules,
/// charges and invoices. The first 200 subscriptions' latest invoice is paid; an older invoice
/// of theirs failed.
fn seed(stripe: &StripeDouble, n: usize) {
    stripe.insert_many(
        Stripe::Customer,
        (0..n).map(|i| object("customer.created", i, |_| {})),
    );
    stripe.insert_many(
        Stripe::Subscription,
        (0..n).map(|i| {
            let mut s = object("customer.subscription.created", i, |s| {
                if i % 10 == 0 {
                    s.status = Some("canceled".into());
                }
            });
            if i % 2 == 1 {
                s["metadata"] = json!({});
            }
            s
        }),
    );
    let few = n.min(200);
    stripe.insert_many(
        Stripe::Invoice,
        (0..few).flat_map(|i| {
            let mut failed = object("invoice.payment_failed", i, |s| s.created = BASE - 1000);
            failed["id"] = json!(format!("in_bf_old{i:05}"));
            let paid = object("invoice.paid", i, |_| {});
            let mut draft = object("invoice.paid", i, |s| s.status = Some("draft".into()));
            draft["id"] = json!(format!("in_bf_draft{i:05}"));
            draft["attempted"] = json!(false);
            [failed, paid, draft]
        }),
    );
    stripe.insert_many(
        Stripe::Charge,
        (0..few).map(|i| object("charge.succeeded", i, |_| {})),
    );
    stripe.insert_many(
        Stripe::SubscriptionSchedule,
        (0..few).map(|i| object("subscription_schedule.updated", i, |_| {})),
    );
}

/// Counts, bookkeeping times and versions of every table `sync` writes: any write changes one.
async fn fingerprint(db: &Db) -> Vec<String> {
    let mut all = Vec::new();
    for table in [
        "customers",
        "subscriptions",
        "subscription_schedules",
        "charges",
    ] {
        // MySQL's SUM is a DECIMAL, which the Any driver does not decode, and it names the
        // 64-bit integer type differently.
        let bigint = match db.engine {
            billing_service::db::Engine::Mysql => "SIGNED",
            _ => "BIGINT",
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n, COALESCE(MAX(updated_at_ms), 0) AS at,
                    CAST(COALESCE(SUM(event_created), 0) AS {bigint}) AS v FROM {table}"
        )))
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let n: i64 = row.try_get("n").unwrap();
        let at: i64 = row.try_get("at").unwrap();
        let v: i64 = row.try_get("v").unwrap();
        all.push(format!("{table}: {n} rows, last write {at}, versions {v}"));
    }
    all
}

async fn scalar(db: &Db, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

fn tally(summary: &[(Kind, KindSummary)], kind: Kind) -> Tally {
    summary
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, s)| s.tally)
        .unwrap_or_else(|| panic!("no {kind} in {summary:?}"))
}

/// Makes the next `times` list requests of a kind fail with `status` once `after_pages` pages of
/// it are written (the page after those is already read by then: the one after it fails).
struct FaultAfter<'a> {
    stripe: &'a StripeDouble,
    kind: Kind,
    after_pages: i64,
    status: u16,
    times: usize,
    fired: AtomicBool,
}

impl Progress for FaultAfter<'_> {
    fn started(&self, _: Kind, _: &Tally) {}
    fn page(&self, kind: Kind, total: &Tally) {
        if kind == self.kind
            && total.pages == self.after_pages
            && !self.fired.swap(true, Ordering::SeqCst)
        {
            let path = format!("/v1/{}", kind.name());
            self.stripe.fail_next("GET", &path, self.status, self.times);
        }
    }
    fn finished(&self, _: Kind, _: &Tally) {}
}

#[tokio::test]
async fn ten_thousand_customers_and_subscriptions_are_synced_once_and_a_second_run_writes_nothing()
{
    for db in every_engine().await {
        // 10,000 of each (100 pages) on the production engine; SQLite and MySQL run the same
        // with fewer, to keep the suite's time.
        let n: i64 = match db.engine {
            test_support::db::Engine::Postgres => 10_000,
            test_support::db::Engine::Sqlite | test_support::db::Engine::Mysql => 2_000,
        };
        let stripe = StripeDouble::start().await;
        seed(&stripe, n as usize);
        let pool = connect_migrated(&db.url).await;
        let stripe_api = reader(&stripe);
        let ties = TieResolver::new(Arc::clone(&stripe_api), Metrics::default());
        // Stripe limits the rate a third of the way through the subscriptions.
        let midway = FaultAfter {
            stripe: &stripe,
            kind: Kind::Subscriptions,
            after_pages: n / 300,
            status: 429,
            times: 2,
            fired: AtomicBool::new(false),
        };

        let first = backfill::run(
            &pool,
            &stripe_api,
            Some(ties.clone()),
            &Kind::ALL,
            None,
            &midway,
        )
        .await
        .unwrap();
        let engine = db.engine;
        let expect = |listed, written, skipped, pages| Tally {
            pages,
            listed,
            written,
            skipped,
        };
        assert_eq!(
            tally(&first, Kind::Customers),
            expect(n, n, 0, n / 100),
            "{engine}"
        );
        assert_eq!(
            tally(&first, Kind::Subscriptions),
            expect(n, n, 0, n / 100),
            "{engine}"
        );
        // Per subscription: the paid invoice is written, the older failed one is not its latest,
        // the draft carries nothing.
        assert_eq!(
            tally(&first, Kind::Invoices),
            expect(600, 200, 200, 6),
            "{engine}"
        );
        assert_eq!(
            tally(&first, Kind::Charges),
            expect(200, 200, 0, 2),
            "{engine}"
        );
        assert_eq!(
            tally(&first, Kind::SubscriptionSchedules),
            expect(200, 200, 0, 2),
            "{engine}"
        );
        assert!(midway.fired.load(Ordering::SeqCst));

        assert_eq!(
            scalar(
                &pool,
                "SELECT COUNT(*) FROM customers WHERE user_id IS NOT NULL"
            )
            .await,
            n
        );
        // Canceled ones too (Stripe lists them only when asked for status=all), each with its
        // user, from its own metadata or else its customer's.
        assert_eq!(
            scalar(
                &pool,
                "SELECT COUNT(*) FROM subscriptions WHERE user_id IS NOT NULL"
            )
            .await,
            n
        );
        assert_eq!(
            scalar(
                &pool,
                "SELECT COUNT(*) FROM subscriptions WHERE status = 'canceled'"
            )
            .await,
            n / 10
        );
        assert_eq!(
            scalar(&pool, "SELECT COUNT(*) FROM subscriptions WHERE id = 'sub_bf00007' AND user_id = 'u-bf-7' AND price_id = 'price_1TestFixtureMonthly'").await,
            1
        );
        assert_eq!(
            scalar(
                &pool,
                "SELECT COUNT(*) FROM subscriptions WHERE payment_status = 'paid'"
            )
            .await,
            200,
            "the latest invoice sets the payment status, not an older failed one"
        );
        assert_eq!(
            scalar(&pool, "SELECT COUNT(*) FROM sync_cursors").await,
            0,
            "a finished sync leaves no cursor"
        );

        let requests = stripe.requests();
        let lists = |path: &str| requests.iter().filter(|r| r.path == path).count();
        assert_eq!(lists("/v1/customers") as i64, n / 100);
        assert_eq!(
            lists("/v1/subscriptions") as i64,
            n / 100 + 2,
            "every page and two 429s"
        );
        assert!(
            requests
                .iter()
                .filter(|r| r.path == "/v1/subscriptions")
                .all(|r| r.params["status"] == "all")
        );
        stripe.assert_no_violations();

        let before = fingerprint(&pool).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let second = backfill::run(&pool, &stripe_api, Some(ties), &Kind::ALL, None, &())
            .await
            .unwrap();
        for (kind, s) in &second {
            assert_eq!(s.tally.written, 0, "{kind} on {engine}: {s:?}");
            assert!(!s.resumed);
        }
        assert_eq!(tally(&second, Kind::Customers).listed, n);
        assert_eq!(
            fingerprint(&pool).await,
            before,
            "the second run wrote on {engine}"
        );
        stripe.assert_no_violations();
    }
}

#[tokio::test]
async fn an_interrupted_sync_resumes_after_the_last_page_it_wrote() {
    for db in every_engine().await {
        let stripe = StripeDouble::start().await;
        seed(&stripe, 2_000);
        let pool = connect_migrated(&db.url).await;
        let stripe_api = reader(&stripe);
        // A refusal (not retried) ends the sync while page 8 is written.
        let interrupt = FaultAfter {
            stripe: &stripe,
            kind: Kind::Customers,
            after_pages: 7,
            status: 400,
            times: 1,
            fired: AtomicBool::new(false),
        };
        let since = Some(BASE - 10);
        let err = backfill::run(
            &pool,
            &stripe_api,
            None,
            &[Kind::Customers, Kind::Charges],
            since,
            &interrupt,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SyncError::Stripe(_)), "{err}");
        // Page 9 was being read while page 8 was written: it failed, so the cursor is after
        // page 8 and what was written is exactly those 800 customers.
        let cursor = sync_cursors::get(&mut pool.pool.acquire().await.unwrap(), "customers")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cursor.tally.listed, 800, "{cursor:?} on {}", db.engine);
        assert_eq!(
            cursor.starting_after.as_deref(),
            Some("cus_bf01200"),
            "newest first"
        );
        assert_eq!(scalar(&pool, "SELECT COUNT(*) FROM customers").await, 800);
        let asked_before = stripe.requests().len();

        let resumed = backfill::run(
            &pool,
            &stripe_api,
            None,
            &[Kind::Customers, Kind::Charges],
            since,
            &(),
        )
        .await
        .unwrap();
        let customers = resumed
            .iter()
            .find(|(k, _)| *k == Kind::Customers)
            .unwrap()
            .1;
        assert!(customers.resumed);
        assert_eq!(customers.tally.listed, 2_000, "counted across both runs");
        assert_eq!(customers.tally.written, 2_000);
        assert_eq!(scalar(&pool, "SELECT COUNT(*) FROM customers").await, 2_000);
        let again: Vec<_> = stripe.requests()[asked_before..]
            .iter()
            .filter(|r| r.path == "/v1/customers")
            .cloned()
            .collect();
        assert_eq!(again.len(), 12, "only the pages not written before");
        assert_eq!(again[0].params["starting_after"], "cus_bf01200");
        assert_eq!(again[0].params["created"]["gte"], BASE - 10);
        assert_eq!(scalar(&pool, "SELECT COUNT(*) FROM sync_cursors").await, 0);

        // A sync of another range does not take the cursor of this one.
        stripe.fail_next("GET", "/v1/customers", 400, 1);
        backfill::run(&pool, &stripe_api, None, &[Kind::Customers], None, &())
            .await
            .unwrap_err();
        let fresh = backfill::run(
            &pool,
            &stripe_api,
            None,
            &[Kind::Customers],
            Some(BASE + 1_000),
            &(),
        )
        .await
        .unwrap();
        assert!(!fresh[0].1.resumed);
        assert_eq!(fresh[0].1.tally.listed, 1_000);
        stripe.assert_no_violations();
    }
}

fn subscription_event(id: &str, i: usize, created: i64, status: &str) -> String {
    fixtures::event(&EventSpec {
        customer: format!("cus_bf{i:05}"),
        subscription: format!("sub_bf{i:05}"),
        user_id: format!("u-bf-{i}"),
        created,
        status: Some(status.into()),
        ..EventSpec::new("customer.subscription.updated", id)
    })
    .unwrap()
    .to_string()
}

async fn status_of(db: &Db, subscription: &str) -> String {
    let sql = "SELECT status FROM subscriptions WHERE id = $1";
    sqlx::query_scalar(billing_service::db::sql::text(db.engine, sql))
        .bind(subscription)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_webhook_newer_than_the_sync_s_read_stays_and_an_older_one_changes_nothing() {
    for db in every_engine().await {
        let stripe = StripeDouble::start().await;
        seed(&stripe, 1_000);
        let mut settings = test_settings(&db.url);
        settings.stripe.api_base = stripe.uri().parse().unwrap();
        let app = spawn_app_with(settings).await;
        let stripe_api = reader(&stripe);
        // Slow pages, so that the deliveries below land while the sync runs.
        stripe.set_delay(Some(Duration::from_millis(40)));
        let later = unix_now() + 60;
        let deliveries = async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            for (n, i) in [3usize, 500, 998].into_iter().enumerate() {
                let body = subscription_event(&format!("evt_newer{n}"), i, later, "past_due");
                assert_eq!(app.deliver(&body).await.status(), 200);
                app.wait_processed(&format!("evt_newer{n}")).await;
            }
        };
        let (summary, ()) = tokio::join!(
            backfill::run(
                &app.db,
                &stripe_api,
                None,
                &[Kind::Customers, Kind::Subscriptions],
                None,
                &()
            ),
            deliveries
        );
        summary.unwrap();
        for i in [3, 500, 998] {
            assert_eq!(
                status_of(&app.db, &format!("sub_bf{i:05}")).await,
                "past_due",
                "sub {i} on {}",
                db.engine
            );
        }
        // An event from before the sync's read arrives late: what Stripe listed stays.
        let body = subscription_event("evt_older", 4, unix_now() - 3_600, "unpaid");
        assert_eq!(app.deliver(&body).await.status(), 200);
        app.wait_processed("evt_older").await;
        assert_eq!(status_of(&app.db, "sub_bf00004").await, "active");
        stripe.assert_no_violations();
        app.stop().await;
    }
}

#[tokio::test]
async fn objects_that_cannot_be_read_are_skipped_and_a_refusal_ends_the_sync() {
    let stripe = StripeDouble::start().await;
    let db = TestDb::sqlite();
    let pool = connect_migrated(&db.url).await;
    let mut broken = object("customer.subscription.created", 1, |_| {});
    broken.as_object_mut().unwrap().remove("customer");
    stripe.insert_many(
        Stripe::Subscription,
        [broken, object("customer.subscription.created", 2, |_| {})],
    );
    let summary = backfill::run(
        &pool,
        &reader(&stripe),
        None,
        &[Kind::Subscriptions],
        None,
        &(),
    )
    .await
    .unwrap();
    assert_eq!(
        summary[0].1.tally,
        Tally {
            pages: 1,
            listed: 2,
            written: 1,
            skipped: 1
        }
    );

    stripe.fail_next("GET", "/v1/customers", 401, 1);
    let err = backfill::run(&pool, &reader(&stripe), None, &[Kind::Customers], None, &())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Stripe refused GET /v1/customers (401)"),
        "{err}"
    );
}

#[tokio::test]
async fn a_list_that_does_not_advance_ends_the_sync_instead_of_looping() {
    let db = TestDb::sqlite();
    let pool = connect_migrated(&db.url).await;
    let server = MockServer::start().await;
    let customer = object("customer.created", 1, |_| {});
    Mock::given(method("GET"))
        .and(path("/v1/customers"))
        .respond_with(move |_: &wiremock::Request| {
            ResponseTemplate::new(200)
                .insert_header("date", httpdate::fmt_http_date(SystemTime::now()))
                .set_body_json(json!({"object": "list", "data": [customer.clone()], "has_more": true, "url": "/v1/customers"}))
        })
        .mount(&server)
        .await;
    let stripe_api = StripeReader::new(&StripeApiSettings {
        api_secret_key: SecretKey::parse("sk_test_sync").unwrap(),
        api_base: server.uri().parse().unwrap(),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let err = backfill::run(&pool, &stripe_api, None, &[Kind::Customers], None, &())
        .await
        .unwrap_err();
    assert!(matches!(err, SyncError::Stuck { .. }), "{err}");
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "the first page and its repeat"
    );
}
