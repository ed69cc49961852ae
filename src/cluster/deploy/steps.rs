//! A deploy's steps: their order, where a deploy goes on from, how each
//! stands, and how a failure is recorded. Pure, so the pipeline's decisions
//! are tested without a server.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::cluster::{Error, Inventory};
use crate::runner::RunOutput;
use crate::store::{JobId, JobStatus};
use crate::tools::terraform::PlanSummary;

/// The steps of a deploy, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Generate,
    Init,
    Plan,
    Apply,
    Output,
    Configure,
    Run,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::Generate,
        Step::Init,
        Step::Plan,
        Step::Apply,
        Step::Output,
        Step::Configure,
        Step::Run,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Generate => "generate",
            Step::Init => "init",
            Step::Plan => "plan",
            Step::Apply => "apply",
            Step::Output => "output",
            Step::Configure => "configure",
            Step::Run => "run",
        }
    }

    pub fn parse(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Where a deploy that stopped at this step goes on: a saved plan is
    /// applied once, whatever the outcome, so a failed apply plans again.
    pub fn resume_point(self) -> Step {
        match self {
            Step::Apply => Step::Plan,
            other => other,
        }
    }

    /// The step a deploy stopped at, from its job's `result`: the first one
    /// that neither succeeded nor was skipped (generate when none is
    /// recorded, e.g. a deploy interrupted before its first step).
    pub fn stopped_at(result: Option<&Value>) -> Step {
        result
            .and_then(|r| r["steps"].as_array())
            .and_then(|steps| {
                steps
                    .iter()
                    .find(|s| s["status"] != "succeeded" && s["status"] != "skipped")
            })
            .and_then(|s| s["name"].as_str())
            .and_then(Step::parse)
            .unwrap_or(Step::Generate)
    }
}

/// Where a step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    /// Done by the deploy this one resumed.
    Skipped,
    /// Apply, when the plan awaits another token's approval: the deploy
    /// stopped there; `/deploy/resume` goes on once the plan is approved.
    AwaitingApproval,
}

impl StepStatus {
    /// How a step whose job ended this way stands.
    pub fn of_job(status: JobStatus) -> StepStatus {
        match status {
            JobStatus::Succeeded => StepStatus::Succeeded,
            JobStatus::Cancelled => StepStatus::Cancelled,
            JobStatus::TimedOut => StepStatus::TimedOut,
            _ => StepStatus::Failed,
        }
    }
}

/// One step as the deploy's result shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StepRecord {
    /// generate, init, plan, apply, output, configure or run.
    pub name: String,
    pub status: StepStatus,
    /// The step's tool job (generate and configure's file writes have none,
    /// configure's `terraform output` has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub job_id: Option<JobId>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub started_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub finished_at: Option<OffsetDateTime>,
    /// Why the step did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
    /// The plan step's summary of what the plan changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub summary: Option<PlanSummary>,
}

impl StepRecord {
    fn new(step: Step, status: StepStatus) -> StepRecord {
        StepRecord {
            name: step.name().to_string(),
            status,
            job_id: None,
            started_at: None,
            finished_at: None,
            error: None,
            summary: None,
        }
    }

    /// Every step of a deploy starting at `from`: the ones before it are
    /// skipped (done by the deploy it resumes), the others pending.
    pub fn plan(from: Step) -> Vec<StepRecord> {
        let first = Step::ALL.iter().position(|s| *s == from).unwrap_or(0);
        Step::ALL
            .into_iter()
            .enumerate()
            .map(|(index, step)| {
                let status = if index < first {
                    StepStatus::Skipped
                } else {
                    StepStatus::Pending
                };
                StepRecord::new(step, status)
            })
            .collect()
    }
}

/// A deploy's steps and what it learnt, as its job's `result` holds them
/// (updated while it runs) and as its answers show them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct DeployProgress {
    pub steps: Vec<StepRecord>,
    /// The step the deploy stopped at, when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub failed_step: Option<String>,
    /// The deploy this one resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub resumed_from: Option<JobId>,
    /// The plan job the deploy stopped for: it awaits another token's
    /// approval, then `/deploy/resume` applies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub awaiting_approval: Option<JobId>,
    /// terraform's outputs, sensitive ones masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub outputs: Option<Map<String, Value>>,
    /// The hosts configure wrote into the inventory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub inventory: Option<Inventory>,
}

/// Why a step did not succeed.
#[derive(Debug)]
pub struct StepFailure {
    pub status: JobStatus,
    pub error: String,
    pub job_id: Option<JobId>,
    pub stdout_tail: Vec<String>,
    pub stderr_tail: Vec<String>,
}

impl StepFailure {
    /// The step's job did not succeed.
    pub fn of_job(output: &RunOutput) -> StepFailure {
        StepFailure {
            status: output.status,
            error: output
                .error
                .clone()
                .unwrap_or_else(|| output.status.as_str().to_string()),
            job_id: Some(output.job_id),
            stdout_tail: output.stdout_tail.clone(),
            stderr_tail: output.stderr_tail.clone(),
        }
    }

    /// The step could not start or finish its work; a server fault is
    /// logged, and the deploy's record only says where to look.
    pub fn of_error(err: Error) -> StepFailure {
        let error = match &err {
            Error::Internal(_) => {
                tracing::error!(error = ?err, "a deploy step failed");
                "an unexpected error occurred (see the server's log)".to_string()
            }
            Error::Busy { workspace, job_id } => {
                format!("workspace '{workspace}' is busy with job {job_id}")
            }
            other => other.to_string(),
        };
        StepFailure::failed(error, None)
    }

    /// A failure found by the step itself (e.g. outputs it cannot read).
    pub fn failed(error: String, job_id: Option<JobId>) -> StepFailure {
        StepFailure {
            status: JobStatus::Failed,
            error,
            job_id,
            stdout_tail: Vec::new(),
            stderr_tail: Vec::new(),
        }
    }

    pub fn cancelled() -> StepFailure {
        StepFailure {
            status: JobStatus::Cancelled,
            ..StepFailure::failed("cancelled".into(), None)
        }
    }

    /// Records the failure on its step and says how the deploy ended.
    pub fn record(&self, step: &mut StepRecord) -> String {
        step.status = StepStatus::of_job(self.status);
        step.error = Some(self.error.clone());
        if self.job_id.is_some() {
            step.job_id = self.job_id;
        }
        step.finished_at.get_or_insert_with(OffsetDateTime::now_utc);
        match self.status {
            JobStatus::Cancelled => format!("cancelled at step '{}'", step.name),
            _ => format!("step '{}' failed: {}", step.name, self.error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_failed_apply_resumes_from_plan_and_other_steps_from_themselves() {
        assert_eq!(Step::Apply.resume_point(), Step::Plan);
        for step in Step::ALL.into_iter().filter(|s| *s != Step::Apply) {
            assert_eq!(step.resume_point(), step);
        }
    }

    #[test]
    fn every_step_is_parsed_back_from_its_name() {
        for step in Step::ALL {
            assert_eq!(Step::parse(step.name()), Some(step));
        }
        assert_eq!(Step::parse("deploy"), None);
    }

    #[test]
    fn the_steps_before_the_resume_point_are_skipped() {
        let steps = StepRecord::plan(Step::Apply);
        let statuses: Vec<StepStatus> = steps.iter().map(|s| s.status).collect();
        use StepStatus::{Pending, Skipped};
        assert_eq!(
            statuses,
            [
                Skipped, Skipped, Skipped, Pending, Pending, Pending, Pending
            ]
        );
        assert_eq!(steps[3].name, "apply");
        assert!(
            StepRecord::plan(Step::Generate)
                .iter()
                .all(|s| s.status == Pending)
        );
    }

    #[test]
    fn a_deploy_stopped_at_its_first_unfinished_step() {
        let result = json!({"steps": [
            {"name": "generate", "status": "skipped"},
            {"name": "init", "status": "succeeded"},
            {"name": "plan", "status": "succeeded"},
            {"name": "apply", "status": "failed"},
            {"name": "output", "status": "pending"},
        ]});
        assert_eq!(Step::stopped_at(Some(&result)), Step::Apply);
        assert_eq!(Step::stopped_at(Some(&result)).resume_point(), Step::Plan);
        let interrupted = json!({"steps": [
            {"name": "generate", "status": "succeeded"},
            {"name": "init", "status": "running"},
        ]});
        assert_eq!(Step::stopped_at(Some(&interrupted)), Step::Init);
        assert_eq!(Step::stopped_at(None), Step::Generate);
        assert_eq!(Step::stopped_at(Some(&json!({}))), Step::Generate);
    }

    #[test]
    fn a_step_stands_as_its_job_ended() {
        assert_eq!(
            StepStatus::of_job(JobStatus::Succeeded),
            StepStatus::Succeeded
        );
        assert_eq!(
            StepStatus::of_job(JobStatus::Cancelled),
            StepStatus::Cancelled
        );
        assert_eq!(
            StepStatus::of_job(JobStatus::TimedOut),
            StepStatus::TimedOut
        );
        for status in [JobStatus::Failed, JobStatus::Interrupted] {
            assert_eq!(StepStatus::of_job(status), StepStatus::Failed);
        }
    }

    #[test]
    fn a_busy_workspace_is_named_and_a_server_fault_is_not_shown() {
        let job_id = JobId::new();
        let busy = StepFailure::of_error(Error::Busy {
            workspace: "prod".into(),
            job_id,
        });
        assert_eq!(
            busy.error,
            format!("workspace 'prod' is busy with job {job_id}")
        );
        assert_eq!(busy.status, JobStatus::Failed);
        let fault = StepFailure::of_error(Error::internal("disk on fire at /secret/path"));
        assert!(!fault.error.contains("/secret/path"), "{}", fault.error);
        assert!(fault.error.contains("server's log"));
        let refused = StepFailure::of_error(Error::field("confirm", "is required"));
        assert_eq!(refused.error, "invalid field 'confirm': is required");
    }

    #[test]
    fn a_failure_is_recorded_on_its_step_and_names_it() {
        let mut steps = StepRecord::plan(Step::Generate);
        let job_id = JobId::new();
        let failure = StepFailure::failed("no output primary_db_addr".into(), Some(job_id));
        let ended = failure.record(&mut steps[4]);
        assert_eq!(ended, "step 'output' failed: no output primary_db_addr");
        assert_eq!(steps[4].status, StepStatus::Failed);
        assert_eq!(steps[4].job_id, Some(job_id));
        assert!(steps[4].finished_at.is_some());

        let ended = StepFailure::cancelled().record(&mut steps[5]);
        assert_eq!(ended, "cancelled at step 'configure'");
        assert_eq!(steps[5].status, StepStatus::Cancelled);
        assert_eq!(steps[5].job_id, None);
    }
}
