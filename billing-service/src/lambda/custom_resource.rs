//! Migrations on deploy, as a CloudFormation custom resource.
//!
//! The SAM template declares a `Custom::DatabaseMigrations` resource served by this binary, with
//! a property that changes with every new version of the code; so each `sam deploy` of new code
//! sends a `Create` or `Update` request here, and the migrations are applied before the API's
//! function is updated (the template orders it so). CloudFormation waits for the answer, which
//! is not the invocation's result but a `PUT` of a JSON document to the request's presigned
//! `ResponseURL`: `SUCCESS`, or `FAILED` with the reason, which fails and rolls back the stack
//! update. `Delete` (the stack removed, or the resource replaced) leaves the database alone.

use serde::{Deserialize, Serialize};

/// What CloudFormation sends (the fields this resource reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Request {
    pub request_type: RequestType,
    #[serde(rename = "ResponseURL")]
    pub response_url: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    pub physical_resource_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RequestType {
    Create,
    Update,
    Delete,
}

/// The document PUT to the response URL.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Response<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    physical_resource_id: &'a str,
    stack_id: &'a str,
    request_id: &'a str,
    logical_resource_id: &'a str,
    data: serde_json::Value,
}

/// One resource per stack: the database's schema. Kept the same on every update, so that
/// CloudFormation never asks to delete a "previous" one.
const PHYSICAL_ID: &str = "billing-database-migrations";

/// CloudFormation refuses a response over 4,096 bytes: the reason is kept well under.
const MAX_REASON: usize = 2000;

#[derive(Debug, thiserror::Error)]
#[error("cannot send the custom resource's response to CloudFormation: {0}")]
pub struct SendError(#[source] reqwest::Error);

/// Sends the outcome: `Ok(applied)` (a description of what was done) or `Err(reason)`.
pub async fn respond(request: &Request, outcome: Result<String, String>) -> Result<(), SendError> {
    let (status, reason, data) = match &outcome {
        Ok(applied) => ("SUCCESS", None, serde_json::json!({ "Applied": applied })),
        Err(reason) => ("FAILED", Some(reason.as_str()), serde_json::json!({})),
    };
    let reason = reason.map(|r| crate::error::truncated(r.to_owned(), MAX_REASON));
    let response = Response {
        status,
        reason: reason.as_deref(),
        physical_resource_id: request
            .physical_resource_id
            .as_deref()
            .unwrap_or(PHYSICAL_ID),
        stack_id: &request.stack_id,
        request_id: &request.request_id,
        logical_resource_id: &request.logical_resource_id,
        data,
    };
    let body = serde_json::to_vec(&response).expect("the response serialises");
    // The URL is presigned for a PUT without a Content-Type: reqwest adds none to a byte body.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(SendError)?;
    client
        .put(&request.response_url)
        .body(body)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(SendError)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cloudformations_request() {
        let request: Request = serde_json::from_str(
            r#"{"RequestType":"Update","ServiceToken":"arn:aws:lambda:eu-west-1:1:function:jobs",
                "ResponseURL":"https://cloudformation-custom-resource-response-euwest1.s3.amazonaws.com/x?sig=1",
                "StackId":"arn:aws:cloudformation:eu-west-1:1:stack/billing/1","RequestId":"r-1",
                "LogicalResourceId":"DatabaseMigrations","PhysicalResourceId":"billing-database-migrations",
                "ResourceType":"Custom::DatabaseMigrations","ResourceProperties":{"CodeVersion":"3"},
                "OldResourceProperties":{"CodeVersion":"2"}}"#,
        )
        .unwrap();
        assert_eq!(request.request_type, RequestType::Update);
        assert_eq!(request.logical_resource_id, "DatabaseMigrations");
    }
}
