//! The dispatcher: takes each notice from the queue, records a delivery for
//! every webhook that subscribes to it, and delivers each in its own task,
//! retried with a doubling wait, so a slow or failing receiver holds up
//! neither the others nor any job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Request, header};
use hmac::{KeyInit, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::target::{GuardedResolver, parse_url};
use super::{Attempt, Delivery, DeliveryState, KEEP_DELIVERIES, Stored, deliveries_kind, envelope};
use crate::cluster::App;
use crate::cluster::notify::Notice;
use crate::secret::Secret;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// `sha256=` and the hex HMAC-SHA256 of the body under the secret: the
/// `X-Pgcluster-Signature` header.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delivers notices until `stop` turns true, then sends those already
/// queued (the ends of the last jobs) once more and gives the deliveries
/// under way one timeout to end. Started once, by the server.
pub async fn dispatch(app: App, mut stop: watch::Receiver<bool>) {
    let Some(mut notices) = app.notices.take_receiver() else {
        tracing::error!("the webhook dispatcher was started twice: this one delivers nothing");
        return;
    };
    let client = client(&app);
    settle_interrupted(&app).await;
    let mut deliveries = JoinSet::new();
    loop {
        tokio::select! {
            notice = notices.recv() => match notice {
                Some(notice) => start(&app, &client, &mut deliveries, notice).await,
                None => break,
            },
            Some(_) = deliveries.join_next(), if !deliveries.is_empty() => {}
            changed = stop.changed() => if changed.is_err() || *stop.borrow() {
                break;
            },
        }
    }
    while let Ok(notice) = notices.try_recv() {
        start(&app, &client, &mut deliveries, notice).await;
    }
    let grace = app.config.webhook_timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, async {
        while deliveries.join_next().await.is_some() {}
    })
    .await;
    // Those still waiting to be retried are marked failed at the next start.
    deliveries.abort_all();
}

/// HTTP/1.1 with the system's root certificates, the guarded resolver, no
/// proxy and no redirects (a 3xx is a failed try).
fn client(app: &App) -> HttpClient {
    let mut http = HttpConnector::new_with_resolver(GuardedResolver);
    http.enforce_http(false);
    http.set_connect_timeout(Some(app.config.webhook_timeout));
    // ring, not aws-lc (no C/CMake build); it lacks only the post-quantum
    // key exchange, which rustls deprecates it for.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let tls = match builder.with_provider_and_native_roots(provider.clone()) {
        Ok(tls) => tls,
        Err(err) => {
            tracing::warn!(error = %err, "no system root certificates: https webhooks will fail");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let https = tls.https_or_http().enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}

/// Deliveries a stopped server left pending will not be tried again.
async fn settle_interrupted(app: &App) {
    let Ok(hooks) = super::stored_webhooks(app).await else {
        return;
    };
    // Masked in job logs like the server's own secrets.
    app.runner
        .add_secrets(hooks.iter().map(|h| Secret::new(h.secret.as_str())));
    for hook in hooks {
        let kind = deliveries_kind(&hook.id);
        let Ok(records) = app.runner.store().records(&kind).await else {
            continue;
        };
        for (key, value) in records {
            let Ok(mut delivery) = serde_json::from_value::<Delivery>(value) else {
                continue;
            };
            if delivery.state == DeliveryState::Pending {
                delivery.state = DeliveryState::Failed;
                delivery.attempts.push(Attempt {
                    at: OffsetDateTime::now_utc(),
                    status_code: None,
                    error: Some("the server stopped before the delivery succeeded".into()),
                    duration_ms: 0,
                });
                let _ = super::put(app, &kind, &key, &delivery).await;
            }
        }
    }
}

/// Records a delivery of the notice for each webhook that wants it and
/// starts delivering it.
async fn start(app: &App, client: &HttpClient, tasks: &mut JoinSet<()>, notice: Notice) {
    let hooks = match super::stored_webhooks(app).await {
        Ok(hooks) => hooks,
        Err(err) => {
            tracing::error!(error = %err, event = notice.event.as_str(), "could not read the webhooks: the event is not delivered");
            return;
        }
    };
    for hook in hooks {
        let wanted = hook.events.contains(&notice.event)
            && hook
                .workspace
                .as_ref()
                .is_none_or(|w| *w == notice.workspace);
        if !wanted {
            continue;
        }
        let now = OffsetDateTime::now_utc();
        let delivery = Delivery {
            id: uuid::Uuid::new_v4().to_string(),
            webhook_id: hook.id.clone(),
            event: notice.event,
            workspace: notice.workspace.clone(),
            created_at: now,
            state: DeliveryState::Pending,
            attempts: Vec::new(),
        };
        // Sorted by the time it was made, so the oldest are pruned.
        let key = format!("{:024}-{}", now.unix_timestamp_nanos(), delivery.id);
        let body = Bytes::from(envelope(&delivery.id, &notice).to_string());
        if let Err(err) = record(app, &hook.id, &key, &delivery, true).await {
            tracing::error!(error = %err, webhook_id = %hook.id, "could not record a delivery");
        }
        tasks.spawn(deliver(
            app.clone(),
            client.clone(),
            hook,
            key,
            delivery,
            body,
        ));
    }
}

/// Tries a delivery until a receiver answers 2xx or the tries run out; a
/// webhook deleted meanwhile is not tried again.
async fn deliver(
    app: App,
    client: HttpClient,
    hook: Stored,
    key: String,
    mut delivery: Delivery,
    body: Bytes,
) {
    let signature = sign(hook.secret.as_bytes(), &body);
    let tries = app.config.webhook_max_attempts.max(1);
    let mut wait = app.config.webhook_retry;
    for n in 1..=tries {
        if n > 1 {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        if !matches!(super::webhook(&app, &hook.id).await, Ok(Some(_))) {
            return;
        }
        let at = OffsetDateTime::now_utc();
        let clock = Instant::now();
        let (status_code, error) =
            attempt(&app, &client, &hook, &delivery, &signature, &body).await;
        delivery.attempts.push(Attempt {
            at,
            status_code,
            error: error.clone(),
            duration_ms: clock.elapsed().as_millis() as u64,
        });
        if error.is_none() {
            delivery.state = DeliveryState::Delivered;
        } else if n == tries {
            delivery.state = DeliveryState::Failed;
        }
        if let Err(err) = record(&app, &hook.id, &key, &delivery, false).await {
            tracing::error!(error = %err, delivery_id = %delivery.id, "could not record a delivery's try");
        }
        match (delivery.state, &error) {
            (DeliveryState::Pending, Some(why)) => {
                tracing::warn!(webhook_id = %hook.id, delivery_id = %delivery.id, attempt = n, error = %why, "webhook delivery failed: retrying in {}s", wait.as_secs());
            }
            (DeliveryState::Failed, Some(why)) => {
                tracing::error!(webhook_id = %hook.id, delivery_id = %delivery.id, attempts = n, error = %why, "webhook delivery failed: giving up");
                crate::metrics::webhook_delivery("failed");
                return;
            }
            _ => {
                tracing::info!(webhook_id = %hook.id, delivery_id = %delivery.id, event = delivery.event.as_str(), attempts = n, "webhook delivered");
                crate::metrics::webhook_delivery("delivered");
                return;
            }
        }
    }
}

/// One POST: the receiver's status, and why the try failed if it did.
async fn attempt(
    app: &App,
    client: &HttpClient,
    hook: &Stored,
    delivery: &Delivery,
    signature: &str,
    body: &Bytes,
) -> (Option<u16>, Option<String>) {
    // A literal address does not go through the resolver: checked here.
    let uri = match parse_url(&hook.url) {
        Ok(uri) => uri,
        Err(why) => return (None, Some(why)),
    };
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("pgcluster-api/", env!("CARGO_PKG_VERSION")),
        )
        .header("x-pgcluster-event", delivery.event.as_str())
        .header("x-pgcluster-delivery", delivery.id.as_str())
        .header("x-pgcluster-signature", signature)
        .body(Full::new(body.clone()));
    let request = match request {
        Ok(request) => request,
        Err(err) => return (None, Some(format!("the request could not be made: {err}"))),
    };
    let timeout = app.config.webhook_timeout;
    match tokio::time::timeout(timeout, client.request(request)).await {
        Err(_) => (
            None,
            Some(format!("no answer within {}s", timeout.as_secs())),
        ),
        Ok(Err(err)) => (None, Some(describe(&err))),
        Ok(Ok(response)) => {
            let status = response.status();
            // The body is not read: only the status matters.
            drop(response);
            let error = (!status.is_success()).then(|| format!("the receiver answered {status}"));
            (Some(status.as_u16()), error)
        }
    }
}

/// An error and its causes in one line ("client error (Connect): ...").
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Writes a delivery's record, unless its webhook was deleted; a new one
/// prunes the oldest beyond [`KEEP_DELIVERIES`].
async fn record(
    app: &App,
    webhook: &str,
    key: &str,
    delivery: &Delivery,
    new: bool,
) -> Result<(), super::Error> {
    if super::webhook(app, webhook).await?.is_none() {
        return Ok(());
    }
    let kind = deliveries_kind(webhook);
    super::put(app, &kind, key, delivery).await?;
    if new {
        let store = app.runner.store();
        let keys = store.records(&kind).await.map_err(super::Error::of_store)?;
        let excess = keys.len().saturating_sub(KEEP_DELIVERIES);
        for (old, _) in keys.into_iter().take(excess) {
            store
                .delete_record(&kind, &old)
                .await
                .map_err(super::Error::of_store)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(
            sign(b"Jefe", b"what do ya want for nothing!"),
            sign(b"Jefe", b"what do ya want for nothing?")
        );
    }
}
