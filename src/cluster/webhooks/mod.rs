//! Webhooks: URLs that receive a signed JSON POST for each [`Notice`] of the
//! events they subscribe to. Webhooks and their recent deliveries are JSON
//! records in the job store; the secret of each is kept there to sign with,
//! and never shown again nor logged. [`dispatch`] delivers.

mod deliver;
mod target;

pub use deliver::{dispatch, sign};
pub use target::is_link_local;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::notify::{Event, Notice, Notices};
use super::{App, Error};
use crate::domain::WorkspaceName;
use crate::runner::{JobEnded, Runner};
use crate::secret::{MASK, Secret};

/// The store's kind for webhooks, keyed by id.
const WEBHOOK: &str = "webhook";
/// Deliveries kept per webhook, the newest.
const KEEP_DELIVERIES: usize = 100;
/// Accepted lengths of a secret, in characters.
const SECRET_LENGTH: std::ops::RangeInclusive<usize> = 16..=256;

/// The store's kind for one webhook's deliveries, keyed so that the oldest
/// comes first.
fn deliveries_kind(webhook: &str) -> String {
    format!("webhook_delivery:{webhook}")
}

/// The body of `POST /webhooks`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.example.com/pgcluster",
    "events": ["job.finished", "cluster.leader_changed"],
    "secret": "a-long-random-shared-secret"}))]
pub struct NewWebhook {
    /// An `http` or `https` URL; link-local hosts (169.254.0.0/16,
    /// fe80::/10) are refused.
    pub url: String,
    /// The events to receive, at least one.
    pub events: Vec<String>,
    /// 16-256 characters; signs every delivery, never shown again.
    pub secret: String,
    /// Only this workspace's events.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// A webhook as stored, secret included.
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    url: String,
    events: Vec<Event>,
    workspace: Option<String>,
    secret: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    created_by: Option<String>,
}

/// A webhook as shown: its secret masked.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "6f1c2a9e-3d4b-4c5a-8e7f-0a1b2c3d4e5f",
    "url": "https://hooks.example.com/pgcluster", "events": ["job.finished"],
    "workspace": null, "secret": "********", "created_at": "2026-12-07T15:55:16Z",
    "created_by": "ops"}))]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<Event>,
    /// Only this workspace's events; null: every workspace's.
    pub workspace: Option<String>,
    /// Always `********`: the secret is never shown after creation.
    pub secret: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// The token that created it.
    pub created_by: Option<String>,
}

impl From<&Stored> for Webhook {
    fn from(stored: &Stored) -> Webhook {
        Webhook {
            id: stored.id.clone(),
            url: stored.url.clone(),
            events: stored.events.clone(),
            workspace: stored.workspace.clone(),
            secret: MASK,
            created_at: stored.created_at,
            created_by: stored.created_by.clone(),
        }
    }
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Being tried, or waiting to be tried again.
    Pending,
    /// A try was answered with a 2xx status.
    Delivered,
    /// Every try failed, or the server stopped before one succeeded.
    Failed,
}

/// One try of a delivery.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// Why the try failed: a status that is not 2xx, a timeout, a
    /// connection error, a refused address.
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One notice sent (or being sent) to one webhook.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// Also the envelope's `id` and the `X-Pgcluster-Delivery` header.
    pub id: String,
    pub webhook_id: String,
    pub event: Event,
    pub workspace: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    pub state: DeliveryState,
    /// Each try, oldest first.
    pub attempts: Vec<Attempt>,
}

/// Checks and records a new webhook; nothing is stored when a field is
/// refused (each refused field is named).
pub async fn create_webhook(
    app: &App,
    request: NewWebhook,
    created_by: Option<String>,
) -> Result<Webhook, Error> {
    let mut problems = Map::new();
    let url = target::parse_url(&request.url)
        .map_err(|why| problems.insert("url".into(), why.into()))
        .ok();
    let events = parse_events(&request.events)
        .map_err(|why| problems.insert("events".into(), why.into()))
        .ok();
    let length = request.secret.chars().count();
    if !SECRET_LENGTH.contains(&length) {
        problems.insert(
            "secret".into(),
            format!(
                "must be {} to {} characters long, not {length}",
                SECRET_LENGTH.start(),
                SECRET_LENGTH.end()
            )
            .into(),
        );
    }
    let workspace = match request.workspace.as_deref().map(WorkspaceName::parse) {
        Some(Err(why)) => {
            problems.insert("workspace".into(), why.to_string().into());
            None
        }
        Some(Ok(name)) => Some(name.as_str().to_string()),
        None => None,
    };
    let (Some(url), Some(events), true) = (url, events, problems.is_empty()) else {
        return Err(Error::fields(problems));
    };
    let stored = Stored {
        id: uuid::Uuid::new_v4().to_string(),
        url: url.to_string(),
        events,
        workspace,
        secret: request.secret,
        created_at: OffsetDateTime::now_utc(),
        created_by,
    };
    // A tool that ever printed it would have it masked in its job's log.
    app.runner
        .add_secrets([Secret::new(stored.secret.as_str())]);
    put(app, WEBHOOK, &stored.id, &stored).await?;
    tracing::info!(webhook_id = %stored.id, url = %stored.url, "webhook created");
    Ok(Webhook::from(&stored))
}

/// The subscribed events: known ones, at least one, each once.
fn parse_events(names: &[String]) -> Result<Vec<Event>, String> {
    let valid = || {
        Event::ALL
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if names.is_empty() {
        return Err(format!("name at least one event of: {}", valid()));
    }
    let mut events = Vec::new();
    for name in names {
        let event = Event::parse(name)
            .ok_or_else(|| format!("unknown event '{name}': the events are {}", valid()))?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    Ok(events)
}

/// Every webhook, oldest first.
pub async fn list_webhooks(app: &App) -> Result<Vec<Webhook>, Error> {
    let mut hooks: Vec<Webhook> = stored_webhooks(app)
        .await?
        .iter()
        .map(Webhook::from)
        .collect();
    hooks.sort_by_key(|h| h.created_at);
    Ok(hooks)
}

/// Deletes a webhook and its deliveries; a delivery being retried stops.
pub async fn delete_webhook(app: &App, id: &str) -> Result<(), Error> {
    let store = app.runner.store();
    if !store
        .delete_record(WEBHOOK, id)
        .await
        .map_err(Error::of_store)?
    {
        return Err(not_found(id));
    }
    let kind = deliveries_kind(id);
    for (key, _) in store.records(&kind).await.map_err(Error::of_store)? {
        store
            .delete_record(&kind, &key)
            .await
            .map_err(Error::of_store)?;
    }
    tracing::info!(webhook_id = %id, "webhook deleted");
    Ok(())
}

/// A webhook's recent deliveries, newest first.
pub async fn list_deliveries(app: &App, id: &str) -> Result<Vec<Delivery>, Error> {
    if webhook(app, id).await?.is_none() {
        return Err(not_found(id));
    }
    let mut deliveries = Vec::new();
    for (_, value) in app
        .runner
        .store()
        .records(&deliveries_kind(id))
        .await
        .map_err(Error::of_store)?
    {
        deliveries.push(serde_json::from_value::<Delivery>(value).map_err(Error::internal)?);
    }
    deliveries.reverse();
    Ok(deliveries)
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("no webhook '{id}'"))
}

async fn webhook(app: &App, id: &str) -> Result<Option<Stored>, Error> {
    let value = app
        .runner
        .store()
        .record(WEBHOOK, id)
        .await
        .map_err(Error::of_store)?;
    value
        .map(serde_json::from_value)
        .transpose()
        .map_err(Error::internal)
}

async fn stored_webhooks(app: &App) -> Result<Vec<Stored>, Error> {
    let records = app
        .runner
        .store()
        .records(WEBHOOK)
        .await
        .map_err(Error::of_store)?;
    records
        .into_iter()
        .map(|(_, value)| serde_json::from_value(value).map_err(Error::internal))
        .collect()
}

async fn put(app: &App, kind: &str, key: &str, value: &impl Serialize) -> Result<(), Error> {
    let value = serde_json::to_value(value).map_err(Error::internal)?;
    app.runner
        .store()
        .put_record(kind, key, value)
        .await
        .map_err(Error::of_store)
}

/// Sends `job.finished` for every job's end, a deploy's steps included.
pub fn announce_job_ends(runner: &Runner, notices: std::sync::Arc<Notices>) {
    runner.on_job_end(Box::new(move |ended: &JobEnded| {
        notices.send(Notice::new(
            Event::JobFinished,
            &ended.workspace,
            json!({
                "job_id": ended.id,
                "kind": ended.kind.as_str(),
                "status": ended.status.as_str(),
                "workspace": ended.workspace,
                "started_by": ended.started_by,
                "error": ended.error,
                "parent_id": ended.parent,
            }),
        ));
    }));
}

/// The envelope POSTed to receivers.
fn envelope(delivery_id: &str, notice: &Notice) -> Value {
    use time::format_description::well_known::Rfc3339;
    json!({
        "id": delivery_id,
        "event": notice.event.as_str(),
        "workspace": notice.workspace,
        "at": notice.at.format(&Rfc3339).unwrap_or_default(),
        "data": notice.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_known_ones_at_least_one_each_once() {
        assert_eq!(
            parse_events(&["job.finished".into(), "job.finished".into()]).unwrap(),
            vec![Event::JobFinished]
        );
        let empty = parse_events(&[]).unwrap_err();
        assert!(empty.contains("at least one"), "{empty}");
        let unknown = parse_events(&["job.started".into()]).unwrap_err();
        for name in ["job.started", "job.finished", "cluster.leader_changed"] {
            assert!(unknown.contains(name), "{unknown}");
        }
    }

    #[test]
    fn the_envelope_carries_the_delivery_id_the_event_and_its_data() {
        let notice = Notice::new(
            Event::LeaderChanged,
            "prod",
            json!({"from": "a", "to": "b"}),
        );
        let body = envelope("d-1", &notice);
        assert_eq!(body["id"], "d-1");
        assert_eq!(body["event"], "cluster.leader_changed");
        assert_eq!(body["workspace"], "prod");
        assert_eq!(body["data"]["to"], "b");
        let at = body["at"].as_str().unwrap();
        assert!(
            OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_ok(),
            "{at}"
        );
    }
}
