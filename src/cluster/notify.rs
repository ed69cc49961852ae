//! What the server tells the outside world happened: each [`Notice`] is
//! queued here and delivered by the webhooks to their subscribers. Sending
//! never waits and never fails the operation that sends.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::mpsc;

/// The events a webhook can subscribe to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub enum Event {
    #[serde(rename = "job.finished")]
    JobFinished,
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    #[serde(rename = "approval.decided")]
    ApprovalDecided,
    #[serde(rename = "workspace.expiring")]
    WorkspaceExpiring,
    #[serde(rename = "workspace.expired")]
    WorkspaceExpired,
    #[serde(rename = "cluster.leader_changed")]
    LeaderChanged,
}

impl Event {
    pub const ALL: [Event; 6] = [
        Event::JobFinished,
        Event::ApprovalRequested,
        Event::ApprovalDecided,
        Event::WorkspaceExpiring,
        Event::WorkspaceExpired,
        Event::LeaderChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::JobFinished => "job.finished",
            Event::ApprovalRequested => "approval.requested",
            Event::ApprovalDecided => "approval.decided",
            Event::WorkspaceExpiring => "workspace.expiring",
            Event::WorkspaceExpired => "workspace.expired",
            Event::LeaderChanged => "cluster.leader_changed",
        }
    }

    pub fn parse(text: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == text)
    }
}

/// One thing that happened, to be delivered.
#[derive(Clone, Debug)]
pub struct Notice {
    pub event: Event,
    pub workspace: String,
    pub at: OffsetDateTime,
    /// The event's own fields (the job, the approval, the expiry...).
    pub data: Value,
}

impl Notice {
    pub fn new(event: Event, workspace: &str, data: Value) -> Notice {
        Notice {
            event,
            workspace: workspace.to_string(),
            at: OffsetDateTime::now_utc(),
            data,
        }
    }
}

/// The queue of notices: any part of the server sends, the webhook
/// dispatcher receives (taken once, at start-up).
pub struct Notices {
    sender: mpsc::UnboundedSender<Notice>,
    receiver: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Notice>>>,
}

impl Default for Notices {
    fn default() -> Notices {
        let (sender, receiver) = mpsc::unbounded_channel();
        Notices {
            sender,
            receiver: std::sync::Mutex::new(Some(receiver)),
        }
    }
}

impl Notices {
    pub fn send(&self, notice: Notice) {
        // Without a dispatcher (no server running) there is no one to tell.
        let _ = self.sender.send(notice);
    }

    /// The receiving end, for the one dispatcher.
    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Notice>> {
        self.receiver.lock().unwrap().take()
    }
}
