//! Four eyes: a plan made while its workspace requires approval waits for
//! a decision by another token before it can be applied. The plan's job
//! records that it needs one (`result.approval_required`); the decision is
//! a record of the store keyed by the plan's job id, shown on the job.
//!
//! Who is who comes from the tokens: without authentication every caller is
//! `anonymous`, two pairs of eyes cannot be told apart, and no plan can be
//! approved (apply stays refused) until authentication is on.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::cluster::notify::Event;
use crate::cluster::{Actor, App, Error};
use crate::runner::{JobHandle, RunOutput};
use crate::store::{Job, JobId, JobKind, JobStatus};
use crate::workspace::{SavedPlan, Workspace};

/// The store's kind for decisions, keyed by the plan's job id.
const APPROVAL: &str = "approval";

/// The key of a plan job's result saying it was made under approval.
pub(crate) const REQUIRED: &str = "approval_required";

/// The longest comment kept with a decision.
const MAX_COMMENT: usize = 2000;

/// Where a plan's approval is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Rejected,
}

/// A plan's approval, as its job shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"state": "approved", "by": "reviewer",
    "at": "2025-01-01T12:00:00Z", "comment": "looks right"}))]
pub struct Approval {
    pub state: ApprovalState,
    /// The token that decided.
    pub by: Option<String>,
    /// When it decided.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub at: Option<OffsetDateTime>,
    pub comment: Option<String>,
}

impl Approval {
    fn pending() -> Approval {
        Approval {
            state: ApprovalState::Pending,
            by: None,
            at: None,
            comment: None,
        }
    }
}

/// What a reviewer decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

/// Whether the job is a plan made while its workspace required approval.
fn required_by(job: &Job) -> bool {
    job.kind == JobKind::TerraformPlan && approval_at_plan(job.result.as_ref()).is_some()
}

/// The job's approval: `None` unless it is a plan made under approval.
pub async fn approval_of(app: &App, job: &Job) -> Result<Option<Approval>, Error> {
    if !required_by(job) {
        return Ok(None);
    }
    let stored = app
        .runner
        .store()
        .record(APPROVAL, &job.id.to_string())
        .await
        .map_err(Error::of_store)?;
    match stored {
        Some(value) => serde_json::from_value(value)
            .map(Some)
            .map_err(Error::internal),
        None => Ok(Some(Approval::pending())),
    }
}

/// The approval a plan job's `result` starts with: pending when it was made
/// under approval, none otherwise.
pub fn approval_at_plan(result: Option<&Value>) -> Option<Approval> {
    (result.and_then(|r| r.get(REQUIRED)) == Some(&json!(true))).then(Approval::pending)
}

/// Attaches each plan's approval to its job, for the job routes.
pub async fn attach_approvals(app: &App, jobs: &mut [Job]) -> Result<(), Error> {
    for job in jobs {
        if let Some(approval) = approval_of(app, job).await? {
            job.approval = Some(serde_json::to_value(approval).map_err(Error::internal)?);
        }
    }
    Ok(())
}

/// Approves or rejects a plan, as another token than the one that made it.
/// A rejected plan is discarded.
pub async fn decide(
    app: &App,
    id: JobId,
    decision: Decision,
    comment: Option<String>,
    actor: &Actor,
) -> Result<Approval, Error> {
    let comment = check_comment(decision, comment)?;
    let job = app
        .runner
        .job(id)
        .await
        .map_err(Error::of_store)?
        .ok_or_else(|| Error::NotFound(format!("no job {id}")))?;
    if job.kind != JobKind::TerraformPlan {
        return Err(Error::Conflict(format!(
            "job {id} is a {} job: only a plan (terraform.plan) is approved or rejected",
            job.kind.as_str()
        )));
    }
    if job.status != JobStatus::Succeeded {
        return Err(Error::Conflict(format!(
            "plan job {id} is {}: only a plan that succeeded is approved or rejected",
            job.status.as_str()
        )));
    }
    if !required_by(&job) {
        return Err(Error::Conflict(format!(
            "plan job {id} was made while workspace '{}' required no approval: \
             there is nothing to decide",
            job.workspace
        )));
    }
    check_four_eyes(app, &job, actor)?;

    // Read-then-write: of two decisions on one plan, one wins.
    let _guard = app.guardrails.lock().await;
    if let Some(decided) = approval_of(app, &job).await?
        && decided.state != ApprovalState::Pending
    {
        return Err(Error::Conflict(format!(
            "plan job {id} was already {} by '{}'",
            state_name(decided.state),
            decided.by.as_deref().unwrap_or("unknown")
        )));
    }
    let workspace = app.workspace(&job.workspace);
    check_current(&workspace, id)?;
    let approval = Approval {
        state: match decision {
            Decision::Approve => ApprovalState::Approved,
            Decision::Reject => ApprovalState::Rejected,
        },
        by: actor.name.clone(),
        at: Some(OffsetDateTime::now_utc()),
        comment,
    };
    let value = serde_json::to_value(&approval).map_err(Error::internal)?;
    app.runner
        .store()
        .put_record(APPROVAL, &id.to_string(), value)
        .await
        .map_err(Error::of_store)?;
    if decision == Decision::Reject {
        discard(app, &workspace, id);
    }
    app.notify(
        Event::ApprovalDecided,
        &job.workspace,
        json!({
            "job_id": id,
            "state": approval.state,
            "by": approval.by,
            "comment": approval.comment,
        }),
    );
    Ok(approval)
}

/// A rejection says why; a comment is kept short.
fn check_comment(decision: Decision, comment: Option<String>) -> Result<Option<String>, Error> {
    let comment = comment
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    match &comment {
        None if decision == Decision::Reject => Err(Error::field(
            "comment",
            "is required to reject a plan: say why",
        )),
        Some(c) if c.chars().count() > MAX_COMMENT => Err(Error::field(
            "comment",
            format!("must be at most {MAX_COMMENT} characters"),
        )),
        _ => Ok(comment),
    }
}

/// The decision is another authenticated token's than the plan's maker.
fn check_four_eyes(app: &App, job: &Job, actor: &Actor) -> Result<(), Error> {
    if app.config.api_tokens.is_empty() {
        return Err(denied(
            "approvals need authentication: without API_TOKENS every caller is 'anonymous', \
             and the token that made a plan cannot be told from the one approving it",
        ));
    }
    match (&job.started_by, &actor.name) {
        (Some(maker), Some(caller)) if maker != caller => Ok(()),
        (Some(maker), _) => Err(denied(format!(
            "plan job {} was made by '{maker}': another token must approve or reject it",
            job.id
        ))),
        (None, _) => Err(denied(format!(
            "plan job {} does not say which token made it, so another cannot be told \
             from it: plan again",
            job.id
        ))),
    }
}

fn denied(message: impl Into<String>) -> Error {
    Error::Denied {
        message: message.into(),
        rule: "four_eyes",
        quota: None,
    }
}

/// The plan is still the one apply would apply, made from the current
/// `terraform.tfvars`.
fn check_current(workspace: &Workspace, id: JobId) -> Result<(), Error> {
    let stale = |why: String| Err(Error::Conflict(format!("plan job {id} is stale: {why}")));
    let Some(saved) = workspace.latest_plan() else {
        return stale("the workspace has no saved plan any more (applied or discarded)".into());
    };
    match plan_job_of(&saved) {
        Some(current) if current == id => {}
        Some(current) => return stale(format!("plan job {current} replaced it")),
        None => return stale("another plan replaced it".into()),
    }
    if saved.tfvars_sha256 != workspace.tfvars_sha256() {
        return stale("terraform.tfvars changed since it was made".into());
    }
    Ok(())
}

/// Forgets a rejected plan, unless a job holds the workspace (apply refuses
/// it anyway, and a running plan replaces it).
fn discard(app: &App, workspace: &Workspace, id: JobId) {
    let Ok(_hold) = app.hold_for_files(workspace) else {
        return;
    };
    if workspace
        .latest_plan()
        .is_some_and(|saved| plan_job_of(&saved) == Some(id))
    {
        workspace.clear_latest_plan();
    }
}

fn state_name(state: ApprovalState) -> &'static str {
    match state {
        ApprovalState::Pending => "pending",
        ApprovalState::Approved => "approved",
        ApprovalState::Rejected => "rejected",
    }
}

/// The job that made a saved plan: its file is named after it.
pub(crate) fn plan_job_of(saved: &SavedPlan) -> Option<JobId> {
    saved
        .path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(JobId::parse)
}

/// Refuses to apply a saved plan that awaits, or was refused, approval.
/// A plan made while approval was not required applies as before; one that
/// cannot be tied to its job only when approval is not required now.
pub(crate) async fn check_apply(
    app: &App,
    workspace: &Workspace,
    saved: &SavedPlan,
) -> Result<(), Error> {
    let job = match plan_job_of(saved) {
        Some(id) => app.runner.job(id).await.map_err(Error::of_store)?,
        None => None,
    };
    let Some(job) = job else {
        if super::policy(app, workspace).await?.approval_required {
            return Err(Error::Conflict(
                "the saved plan cannot be tied to the job that made it, and workspace plans \
                 need approval: call /terraform/plan again"
                    .into(),
            ));
        }
        return Ok(());
    };
    match approval_of(app, &job).await? {
        None => Ok(()),
        Some(approval) => match approval.state {
            ApprovalState::Approved => Ok(()),
            ApprovalState::Pending => Err(awaiting(&job)),
            ApprovalState::Rejected => Err(Error::Conflict(format!(
                "the saved plan (job {}) was rejected by '{}': call /terraform/plan again",
                job.id,
                approval.by.as_deref().unwrap_or("unknown")
            ))),
        },
    }
}

/// The refusal of a plan that awaits approval.
pub(crate) fn awaiting(job: &Job) -> Error {
    Error::AwaitingApproval {
        message: format!(
            "the saved plan (job {id}) awaits approval by a token other than '{maker}': \
             POST /jobs/{id}/approve",
            id = job.id,
            maker = job.started_by.as_deref().unwrap_or("unknown"),
        ),
        job_id: job.id,
    }
}

/// Where a deploy that stopped for approval stands: `Ok` once the plan is
/// approved, the refusal otherwise.
pub(crate) async fn check_approved(app: &App, plan_job: JobId) -> Result<(), Error> {
    let job = app
        .runner
        .job(plan_job)
        .await
        .map_err(Error::of_store)?
        .ok_or_else(|| Error::internal(format!("plan job {plan_job} vanished")))?;
    match approval_of(app, &job).await?.map(|a| a.state) {
        None | Some(ApprovalState::Approved) => Ok(()),
        Some(ApprovalState::Pending) => Err(awaiting(&job)),
        Some(ApprovalState::Rejected) => Err(Error::Conflict(format!(
            "plan job {plan_job} was rejected: start a new deploy (POST /deploy)"
        ))),
    }
}

/// Tells the webhooks a plan made under approval awaits a decision.
pub(crate) fn announce(app: &App, workspace: &str, output: &RunOutput, started_by: Option<&str>) {
    let Some(result) = &output.result else {
        return;
    };
    if output.status != JobStatus::Succeeded || result.get(REQUIRED) != Some(&json!(true)) {
        return;
    }
    app.notify(
        Event::ApprovalRequested,
        workspace,
        json!({
            "job_id": output.job_id,
            "started_by": started_by,
            "summary": result.get("summary").cloned().unwrap_or(Value::Null),
        }),
    );
}

/// [`announce`] once the plan job has ended (and its end is recorded, so an
/// approval sent on the notice finds it).
pub(crate) fn announce_when_done(
    app: &App,
    handle: JobHandle,
    workspace: &str,
    started_by: Option<String>,
) {
    let app = app.clone();
    let workspace = workspace.to_string();
    tokio::spawn(async move {
        let output = handle.wait().await;
        announce(&app, &workspace, &output, started_by.as_deref());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::notify::Notice;

    fn plan(result: Value) -> Job {
        let mut job = Job::queued(JobId::new(), JobKind::TerraformPlan, "default", json!({}));
        job.result = Some(result);
        job
    }

    #[test]
    fn only_a_plan_made_under_approval_needs_one() {
        assert!(required_by(&plan(json!({"changes": true, REQUIRED: true}))));
        assert!(!required_by(&plan(json!({"changes": true}))));
        let mut apply = plan(json!({REQUIRED: true}));
        apply.kind = JobKind::TerraformApply;
        assert!(!required_by(&apply));
    }

    #[test]
    fn a_rejection_needs_a_comment_and_comments_are_trimmed_and_bounded() {
        let field = |r: Result<Option<String>, Error>| match r {
            Err(Error::Invalid { fields, .. }) => fields.keys().next().cloned(),
            _ => None,
        };
        assert_eq!(
            field(check_comment(Decision::Reject, None)).as_deref(),
            Some("comment")
        );
        assert_eq!(
            field(check_comment(Decision::Reject, Some("  ".into()))).as_deref(),
            Some("comment")
        );
        assert_eq!(check_comment(Decision::Approve, None).unwrap(), None);
        assert_eq!(
            check_comment(Decision::Approve, Some(" ok ".into())).unwrap(),
            Some("ok".into())
        );
        let long = "x".repeat(MAX_COMMENT + 1);
        assert!(field(check_comment(Decision::Approve, Some(long))).is_some());
    }

    #[test]
    fn a_saved_plan_names_its_job() {
        let id = JobId::new();
        let saved = SavedPlan {
            path: format!("/data/plans/{id}.tfplan").into(),
            tfvars_sha256: "x".into(),
        };
        assert_eq!(plan_job_of(&saved), Some(id));
        let older = SavedPlan {
            path: "/data/plans/latest-plan.tfplan".into(),
            tfvars_sha256: "x".into(),
        };
        assert_eq!(plan_job_of(&older), None);
    }

    /// An app with two tokens, its data under `data`, and the notice queue.
    fn app(data: &std::path::Path) -> (App, tokio::sync::mpsc::UnboundedReceiver<Notice>) {
        use crate::tokens::{Scope, TokenEntry};
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let tokens = [
            ("maker", "pgc_maker-unit"),
            ("reviewer", "pgc_reviewer-unit"),
        ]
        .map(|(name, token)| TokenEntry::for_token(name, Scope::Apply, token).config_entry())
        .join(",");
        let vars = [
            ("API_TOKENS", tokens),
            ("DATABASE_URL", "memory:".into()),
            ("DATA_DIR", data.join("data").display().to_string()),
            ("LOG_DIR", data.join("logs").display().to_string()),
            (
                "TERRAFORM_DIR",
                repo.join("tests/fixtures/stack").display().to_string(),
            ),
            ("TEMPLATE_DIR", repo.join("templates").display().to_string()),
        ];
        let config = crate::config::Config::from_vars(
            vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        )
        .unwrap();
        let app = App::new(config).unwrap();
        let notices = app.notices.take_receiver().unwrap();
        (app, notices)
    }

    /// A succeeded plan job by `maker`, made under approval, saved as the
    /// workspace's plan.
    async fn saved_plan(app: &App) -> JobId {
        let id = JobId::new();
        let mut job = Job::queued(id, JobKind::TerraformPlan, "default", json!({}));
        job.started_by = Some("maker".into());
        app.runner.store().insert(job).await.unwrap();
        let result = json!({"changes": true, "summary": {"add": 1}, REQUIRED: true});
        let completion = crate::store::Completion {
            status: JobStatus::Succeeded,
            exit_code: Some(2),
            result: Some(result),
            error: None,
        };
        let now = OffsetDateTime::now_utc();
        app.runner
            .store()
            .complete(id, completion, now)
            .await
            .unwrap();
        let workspace = app.workspace("default");
        workspace.ensure().unwrap();
        let file = workspace.plan_file(&id.to_string());
        std::fs::write(&file, "plan").unwrap();
        workspace
            .set_latest_plan(&file, &workspace.tfvars_sha256())
            .unwrap();
        id
    }

    fn actor(name: &str) -> Actor {
        Actor {
            name: Some(name.into()),
            ..Actor::default()
        }
    }

    #[tokio::test]
    async fn a_plan_awaiting_approval_is_announced_and_each_decision_too() {
        let dir = tempfile::tempdir().unwrap();
        let (app, mut notices) = app(dir.path());
        let id = saved_plan(&app).await;
        let output = RunOutput {
            job_id: id,
            status: JobStatus::Succeeded,
            exit_code: Some(2),
            stdout: String::new(),
            stdout_tail: Vec::new(),
            stderr_tail: Vec::new(),
            result: app.runner.job(id).await.unwrap().unwrap().result,
            error: None,
        };
        announce(&app, "default", &output, Some("maker"));
        let requested = notices.try_recv().unwrap();
        assert_eq!(requested.event, Event::ApprovalRequested);
        assert_eq!(requested.workspace, "default");
        assert_eq!(
            requested.data,
            json!({"job_id": id, "started_by": "maker", "summary": {"add": 1}})
        );

        // Its maker cannot decide; a refusal tells no one.
        let own = decide(&app, id, Decision::Approve, None, &actor("maker")).await;
        assert!(matches!(
            own,
            Err(Error::Denied {
                rule: "four_eyes",
                ..
            })
        ));
        assert!(notices.try_recv().is_err());

        let approval = decide(
            &app,
            id,
            Decision::Approve,
            Some("ok".into()),
            &actor("reviewer"),
        )
        .await
        .unwrap();
        assert_eq!(approval.state, ApprovalState::Approved);
        let decided = notices.try_recv().unwrap();
        assert_eq!(decided.event, Event::ApprovalDecided);
        assert_eq!(
            decided.data,
            json!({"job_id": id, "state": "approved", "by": "reviewer", "comment": "ok"})
        );
        let again = decide(
            &app,
            id,
            Decision::Reject,
            Some("no".into()),
            &actor("other"),
        )
        .await;
        assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
    }

    #[tokio::test]
    async fn a_plan_made_without_approval_is_not_announced() {
        let dir = tempfile::tempdir().unwrap();
        let (app, mut notices) = app(dir.path());
        let output = RunOutput {
            job_id: JobId::new(),
            status: JobStatus::Succeeded,
            exit_code: Some(2),
            stdout: String::new(),
            stdout_tail: Vec::new(),
            stderr_tail: Vec::new(),
            result: Some(json!({"changes": true, "summary": {}})),
            error: None,
        };
        announce(&app, "default", &output, Some("maker"));
        assert!(notices.try_recv().is_err());
    }

    #[test]
    fn the_approval_reads_as_the_job_shows_it() {
        let shown = serde_json::to_value(Approval::pending()).unwrap();
        assert_eq!(
            shown,
            json!({"state": "pending", "by": null, "at": null, "comment": null})
        );
    }
}
