//! `subscription_schedule.*` → `subscription_schedules`, phases kept as JSON: their shape varies
//! across API versions and nothing here queries inside them.

use serde::Deserialize;
use sqlx::AnyConnection;

use super::{Event, EventHandler, HandlerError, ObjectId, id};
use crate::webhook::store::now_ms;

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
    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        let s: Schedule = event.object()?;
        sqlx::query(
            "INSERT INTO subscription_schedules
                (id, customer_id, subscription_id, status, phases, event_created, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET
                customer_id = excluded.customer_id,
                subscription_id = excluded.subscription_id,
                status = excluded.status,
                phases = excluded.phases,
                event_created = excluded.event_created,
                updated_at_ms = excluded.updated_at_ms
             WHERE subscription_schedules.event_created <= excluded.event_created",
        )
        .bind(&s.id)
        .bind(id(&s.customer))
        .bind(id(&s.subscription))
        .bind(&s.status)
        .bind(s.phases.to_string())
        .bind(event.created)
        .bind(now_ms())
        .execute(conn)
        .await?;
        Ok(())
    }
}
