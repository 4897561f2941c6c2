//! `subscription_schedule.*` → [`tables::schedules`](crate::tables::schedules).

use serde::Deserialize;
use sqlx::AnyConnection;

use super::{Event, EventHandler, HandlerError, ObjectId, id};
use crate::tables::schedules;

#[derive(Deserialize)]
struct Schedule {
    id: String,
    customer: Option<ObjectId>,
    subscription: Option<ObjectId>,
    status: String,
    #[serde(default)]
    phases: serde_json::Value,
}

pub struct Schedules;

#[async_trait::async_trait]
impl EventHandler for Schedules {
    /// It writes our tables and nothing else.
    fn on_receipt(&self) -> bool {
        true
    }

    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        write(conn, event).await.map(drop)
    }
}

/// Returns the rows written.
pub(super) async fn write(conn: &mut AnyConnection, event: &Event) -> Result<u64, HandlerError> {
    let s: Schedule = event.object()?;
    let phases = s.phases.to_string();
    let row = schedules::Schedule {
        id: &s.id,
        customer_id: id(&s.customer),
        subscription_id: id(&s.subscription),
        status: &s.status,
        phases: &phases,
        event_created: event.created,
        listed: event.listed,
    };
    Ok(schedules::apply_event(conn, &row).await?)
}
