//! `entitlements.active_entitlement_summary.updated` → [`tables::entitlements`]: the features
//! a customer may use, replaced as a whole by each newer summary.
//!
//! A summary carries only the first page of the customer's entitlements (`has_more` says when
//! there are more); the whole list is then read from Stripe's `/v1/entitlements/active_entitlements`,
//! as it is when two summaries share a second (Stripe's `created` has no finer grain, so which is
//! newer is unknown, and Stripe's current list is the truth). A list that cannot be read fails
//! the attempt of a partial summary, which is retried: a partial list is never written. A tie
//! Stripe cannot settle goes to the later-processed summary, as with the other objects.

use serde::Deserialize;
use sqlx::AnyConnection;

use super::{Event, EventHandler, HandlerError, TieResolver};
use crate::tables::entitlements;

/// Stripe's longest lookup key; a longer one is not Stripe's and would not fit MySQL's column.
const MAX_LOOKUP_KEY: usize = 80;

#[derive(Deserialize)]
struct Summary {
    customer: String,
    entitlements: Page,
}

#[derive(Deserialize)]
struct Page {
    data: Vec<Entitlement>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Deserialize)]
struct Entitlement {
    lookup_key: String,
}

pub struct Entitlements;

#[async_trait::async_trait]
impl EventHandler for Entitlements {
    /// It writes our tables, and leaves a summary that needs Stripe's list to the worker.
    fn on_receipt(&self) -> bool {
        true
    }

    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        let summary: Summary = event.object()?;
        let stored = entitlements::summary_created_of(&mut *conn, &summary.customer).await?;
        if stored.is_some_and(|stored| stored > event.created) {
            return Ok(());
        }
        let tie = stored == Some(event.created);
        let partial = summary.entitlements.has_more;
        if event.on_receipt && (partial || tie) {
            return Err(HandlerError::Deferred(
                "a partial or same-second summary, read whole from Stripe",
            ));
        }
        let carried = || -> Vec<String> {
            summary
                .entitlements
                .data
                .iter()
                .map(|e| e.lookup_key.clone())
                .collect()
        };
        let mut features = match &event.ties {
            Some(stripe) if partial || tie => match listed(stripe, &summary.customer).await {
                Ok(features) => features,
                Err(e) if partial => return Err(e),
                // A tie is settled by Stripe when it can be: otherwise the later-processed
                // summary wins, as with the other objects.
                Err(e) => {
                    tracing::warn!(event_id = %event.id, error = %e, "a same-second entitlement summary could not be settled with Stripe; the later-processed one wins");
                    carried()
                }
            },
            None if partial => {
                return Err(HandlerError::Other(anyhow::anyhow!(
                    "the summary lists only some of {}'s entitlements, and Stripe cannot be read here",
                    summary.customer
                )));
            }
            _ => carried(),
        };
        if let Some(bad) = features
            .iter()
            .find(|f| f.is_empty() || f.len() > MAX_LOOKUP_KEY)
        {
            return Err(HandlerError::Invalid(format!(
                "data.object: a lookup key of {} characters (Stripe's are 1 to {MAX_LOOKUP_KEY})",
                bad.len()
            )));
        }
        features.sort_unstable();
        features.dedup();
        let features: Vec<&str> = features.iter().map(String::as_str).collect();
        entitlements::replace(&mut *conn, &summary.customer, &features, event.created).await?;
        Ok(())
    }
}

/// The lookup keys of every active entitlement Stripe lists for the customer now.
async fn listed(stripe: &TieResolver, customer: &str) -> Result<Vec<String>, HandlerError> {
    let query = [("customer".to_owned(), customer.to_owned())];
    let objects = stripe
        .reader()
        .list_once("/v1/entitlements/active_entitlements", &query)
        .await
        .map_err(|e| HandlerError::Other(e.into()))?;
    objects
        .into_iter()
        .map(|o| serde_json::from_value::<Entitlement>(o).map(|e| e.lookup_key))
        .collect::<Result<_, _>>()
        .map_err(|e| {
            HandlerError::Other(anyhow::anyhow!(
                "Stripe's active entitlements of {customer}: {e}"
            ))
        })
}
