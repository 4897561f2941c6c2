//! `billing-service sync events`: the events Stripe has that this service never received.
//!
//! Stripe retries a delivery for three days and keeps events for thirty: events lost to a long
//! outage, a misconfigured endpoint or a deleted one are still listed by `GET /v1/events`. Each
//! event of a type the handlers know, created since the given time, is stored through the same
//! table as a delivery (deduplicated on its id, so what was received is left as it is), and the
//! worker of any running replica processes it in `created` order like a delivered one.

use serde::Serialize;

use crate::db::Db;
use crate::stripe_reader::{ReadError, StripeReader};
use crate::tables::events::{self, NewEvent};
use crate::webhook::envelope::Envelope;

/// `GET /v1/events` takes at most this many `types[]`.
const TYPES_PER_LIST: usize = 20;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Recovered {
    /// Events Stripe listed.
    pub listed: u64,
    /// Of those, the ones this service did not have: now stored, pending.
    pub stored: u64,
    /// The ones it had already received.
    pub already_had: u64,
    /// Listed events that could not be read as an event, named in the log and skipped.
    pub unreadable: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Stripe(#[from] ReadError),
    #[error("cannot store the events: {0}")]
    Database(#[from] sqlx::Error),
}

/// Lists the events of `types` created at or after `since` (unix seconds) and stores the missing
/// ones. Safe to run again, or beside the service: a second run stores nothing.
pub async fn recover(
    db: &Db,
    stripe: &StripeReader,
    types: &[&str],
    since: i64,
) -> Result<Recovered, RecoverError> {
    let mut recovered = Recovered::default();
    for chunk in types.chunks(TYPES_PER_LIST) {
        let mut query = vec![("created[gte]".to_owned(), since.to_string())];
        query.extend(
            chunk
                .iter()
                .map(|t| ("types[]".to_owned(), (*t).to_owned())),
        );
        let mut after: Option<String> = None;
        loop {
            let page = stripe.page("/v1/events", &query, after.as_deref()).await?;
            store_page(db, &page.data, &mut recovered).await?;
            match page.next_cursor() {
                Some(cursor) => after = Some(cursor.to_owned()),
                None => break,
            }
        }
    }
    Ok(recovered)
}

async fn store_page(
    db: &Db,
    listed: &[serde_json::Value],
    recovered: &mut Recovered,
) -> Result<(), sqlx::Error> {
    recovered.listed += listed.len() as u64;
    let texts: Vec<String> = listed.iter().map(|event| event.to_string()).collect();
    let mut envelopes = Vec::with_capacity(texts.len());
    for text in &texts {
        match Envelope::parse_str(text) {
            Ok(envelope) => envelopes.push((envelope, text.as_str())),
            Err(e) => {
                recovered.unreadable += 1;
                tracing::warn!(error = %e, "Stripe listed an event that cannot be read; skipped");
            }
        }
    }
    let rows: Vec<NewEvent<'_>> = envelopes
        .iter()
        .map(|(envelope, text)| envelope.as_new_event(text))
        .collect();
    let stored = events::insert(db, &rows).await?.len() as u64;
    recovered.stored += stored;
    recovered.already_had += rows.len() as u64 - stored;
    Ok(())
}
