//! A deploy running: each step in turn, its record published as it goes.

use std::sync::Arc;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{DeployInput, DeployProgress, Step, StepFailure, StepRecord, StepStatus};
use crate::cluster::configure::write_configuration;
use crate::cluster::guardrails::approval;
use crate::cluster::playbook::playbook_spec;
use crate::cluster::terraform::{Tfvars, run_spec};
use crate::cluster::{Actor, App, Inventory};
use crate::runner::{JobSpec, Pipeline, PipelineEnd, RunOutput};
use crate::store::{JobId, JobStatus};
use crate::tools::terraform::{Command, Outputs};
use crate::workspace::Workspace;

/// A deploy in progress.
pub(super) struct Deploy {
    app: App,
    workspace: Workspace,
    actor: Actor,
    input: DeployInput,
    steps: Vec<StepRecord>,
    resumed_from: Option<JobId>,
    /// The plan job whose approval the deploy stopped for.
    awaiting_approval: Option<JobId>,
    /// The cluster's outputs, once the output step read them.
    outputs: Option<Outputs>,
    inventory: Option<Inventory>,
}

impl Deploy {
    pub(super) fn new(app: App, workspace: Workspace, actor: Actor, input: DeployInput) -> Deploy {
        Deploy {
            app,
            workspace,
            actor,
            input,
            steps: Vec::new(),
            resumed_from: None,
            awaiting_approval: None,
            outputs: None,
            inventory: None,
        }
    }

    pub(super) async fn run(
        mut self,
        mut pipeline: Pipeline,
        from: Step,
        resumed_from: Option<JobId>,
    ) -> PipelineEnd {
        self.resumed_from = resumed_from;
        self.steps = StepRecord::plan(from);
        if let Some(previous) = resumed_from {
            pipeline
                .log(&format!(
                    "resuming deploy {previous} at step {}",
                    from.name()
                ))
                .await;
        }
        for (index, step) in Step::ALL.into_iter().enumerate() {
            if self.steps[index].status == StepStatus::Skipped {
                continue;
            }
            if pipeline.cancelled() {
                return self
                    .end_at(&mut pipeline, index, StepFailure::cancelled())
                    .await;
            }
            self.steps[index].status = StepStatus::Running;
            self.steps[index].started_at = Some(OffsetDateTime::now_utc());
            self.publish(&pipeline).await;
            pipeline
                .log(&format!("step {}: started", step.name()))
                .await;
            let outcome = self.step(&mut pipeline, step, index).await;
            self.steps[index].finished_at = Some(OffsetDateTime::now_utc());
            match outcome {
                Ok(()) => {
                    self.steps[index].status = StepStatus::Succeeded;
                    pipeline
                        .log(&format!("step {}: succeeded", step.name()))
                        .await;
                    if let Some(plan) = self.awaiting_approval {
                        return self.stop_for_approval(&mut pipeline, index + 1, plan).await;
                    }
                }
                Err(failure) => return self.end_at(&mut pipeline, index, failure).await,
            }
        }
        self.publish(&pipeline).await;
        PipelineEnd {
            status: JobStatus::Succeeded,
            result: Some(json!(self.progress())),
            error: None,
            stdout_tail: Vec::new(),
            stderr_tail: Vec::new(),
        }
    }

    async fn step(
        &mut self,
        pipeline: &mut Pipeline,
        step: Step,
        index: usize,
    ) -> Result<(), StepFailure> {
        match step {
            Step::Generate => {
                let tfvars = Tfvars::check(&self.app, &self.workspace, &self.input.variables)
                    .map_err(StepFailure::of_error)?;
                tfvars
                    // The deploy holds the workspace throughout.
                    .write(&self.app, &self.workspace, None)
                    .await
                    .map_err(StepFailure::of_error)
            }
            Step::Init | Step::Apply => {
                let command = match step {
                    Step::Init => Command::Init,
                    _ => Command::Apply,
                };
                self.terraform(pipeline, index, command).await.map(drop)
            }
            Step::Plan => {
                let output = self.terraform(pipeline, index, Command::Plan).await?;
                let result = output.result.as_ref();
                self.steps[index].summary =
                    result.and_then(|r| serde_json::from_value(r["summary"].clone()).ok());
                if result.and_then(|r| r.get(approval::REQUIRED)) == Some(&json!(true)) {
                    approval::announce(
                        &self.app,
                        self.workspace.name(),
                        &output,
                        self.actor.name.as_deref(),
                    );
                    self.awaiting_approval = Some(output.job_id);
                }
                Ok(())
            }
            Step::Output => {
                let output = self.output(pipeline, index).await?;
                self.outputs = Some(output);
                Ok(())
            }
            Step::Configure => {
                let outputs = match self.outputs.take() {
                    Some(outputs) => outputs,
                    None => self.output(pipeline, index).await?,
                };
                let inventory = write_configuration(
                    &self.app,
                    &self.workspace,
                    &self.input.configure,
                    &outputs,
                    None,
                )
                .await
                .map_err(StepFailure::of_error)?;
                pipeline
                    .log(&format!("inventory: {}", json!(inventory)))
                    .await;
                self.inventory = Some(inventory);
                self.outputs = Some(outputs);
                Ok(())
            }
            Step::Run => {
                let version = self.input.version;
                let spec = playbook_spec(
                    &self.app,
                    &self.workspace,
                    version,
                    json!({ "postgresql_version": version.get(), "deploy": pipeline.id() }),
                )
                .await
                .map_err(StepFailure::of_error)?;
                self.run_job(pipeline, index, spec).await.map(drop)
            }
        }
    }

    /// Runs `terraform output` and reads the cluster from it.
    async fn output(
        &mut self,
        pipeline: &mut Pipeline,
        index: usize,
    ) -> Result<Outputs, StepFailure> {
        let output = self.terraform(pipeline, index, Command::Output).await?;
        Outputs::parse(&output.stdout)
            .map_err(|error| StepFailure::failed(error, Some(output.job_id)))
    }

    /// Runs a terraform step's job.
    async fn terraform(
        &mut self,
        pipeline: &mut Pipeline,
        index: usize,
        command: Command,
    ) -> Result<Arc<RunOutput>, StepFailure> {
        let request = json!({ "deploy": pipeline.id() });
        let spec = run_spec(&self.app, &self.workspace, command, request, true)
            .await
            .map_err(StepFailure::of_error)?;
        self.run_job(pipeline, index, spec).await
    }

    async fn run_job(
        &mut self,
        pipeline: &mut Pipeline,
        index: usize,
        mut spec: JobSpec,
    ) -> Result<Arc<RunOutput>, StepFailure> {
        self.actor.stamp(&mut spec);
        let handle = pipeline
            .start(spec)
            .await
            .map_err(|err| StepFailure::of_error(self.app.refusal(err)))?;
        // Followers see the step's job (and can stream its log) while it runs.
        self.steps[index].job_id = Some(handle.id);
        self.publish(pipeline).await;
        let output = pipeline.wait(handle).await;
        pipeline
            .log(&format!(
                "step {}: job {} {}",
                self.steps[index].name,
                output.job_id,
                output.status.as_str()
            ))
            .await;
        if output.status == JobStatus::Succeeded {
            Ok(output)
        } else {
            Err(StepFailure::of_job(&output))
        }
    }

    /// Ends the deploy after its plan, which awaits another token's approval:
    /// the deploy did what it could, `/deploy/resume` applies once approved.
    async fn stop_for_approval(
        mut self,
        pipeline: &mut Pipeline,
        next: usize,
        plan: JobId,
    ) -> PipelineEnd {
        self.steps[next].status = StepStatus::AwaitingApproval;
        pipeline
            .log(&format!(
                "plan job {plan} awaits approval: approve it (POST /jobs/{plan}/approve), \
                 then resume the deploy (POST /deploy/resume)"
            ))
            .await;
        let result = json!(self.progress());
        pipeline.progress(result.clone()).await;
        PipelineEnd {
            status: JobStatus::Succeeded,
            result: Some(result),
            error: None,
            stdout_tail: Vec::new(),
            stderr_tail: Vec::new(),
        }
    }

    /// Ends the deploy at a step that did not succeed.
    async fn end_at(
        mut self,
        pipeline: &mut Pipeline,
        index: usize,
        failure: StepFailure,
    ) -> PipelineEnd {
        let error = failure.record(&mut self.steps[index]);
        pipeline.log(&error).await;
        let mut progress = self.progress();
        progress.failed_step = Some(self.steps[index].name.clone());
        let result: Value = json!(progress);
        pipeline.progress(result.clone()).await;
        PipelineEnd {
            status: failure.status,
            result: Some(result),
            error: Some(error),
            stdout_tail: failure.stdout_tail,
            stderr_tail: failure.stderr_tail,
        }
    }

    async fn publish(&self, pipeline: &Pipeline) {
        pipeline.progress(json!(self.progress())).await;
    }

    fn progress(&self) -> DeployProgress {
        DeployProgress {
            steps: self.steps.clone(),
            failed_step: None,
            resumed_from: self.resumed_from,
            awaiting_approval: self.awaiting_approval,
            outputs: self.outputs.as_ref().map(Outputs::masked),
            inventory: self.inventory.clone(),
        }
    }
}
