//! The `Target` trait: the one boundary between Mahavishnu and the places where instances run.
//!
//! Modelled on Nomad's task drivers: a target launches, inspects, lists, feeds and stops instances, and
//! re-adopts them after Mahavishnu restarts. What a target cannot do returns `Error::Unsupported` from the
//! default method; it never pretends.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::model::{
    Capabilities, ExecOutput, ExecRequest, InputPart, LaunchSpec, Observation, Preflight,
    ScreenOptions, TargetKind, TargetName,
};

/// A place where instances run. Every method takes the target's own (native) id.
#[async_trait]
pub trait Target: Send + Sync {
    /// The name it is registered under, which the ids of its instances start with.
    fn name(&self) -> &TargetName;

    /// Which kind of target this is.
    fn kind(&self) -> TargetKind;

    /// What it can do; the operations it does not declare return `Error::Unsupported`.
    fn capabilities(&self) -> Capabilities;

    /// Where it points, in a few words (a tmux socket, a cluster context and namespace).
    fn location(&self) -> String;

    /// Whether it can be used here, and if not exactly why. Cheap; never launches anything.
    async fn preflight(&self) -> Preflight;

    /// Where new instances of this target go, when one target kind can reach several places (the
    /// kubeconfig context of a Kubernetes target); `None` for a target with only one place. It is
    /// recorded with each instance, and a later call on that instance through a target whose scope
    /// differs is refused instead of reaching the wrong place.
    async fn scope(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// The native id a new instance called `name` gets (a Kubernetes target puts its namespace first).
    fn native_name(&self, name: &str) -> String {
        name.to_string()
    }

    /// Checks that this target can hold an instance with this native id (a socket path it would make
    /// may be too long), before anything is recorded or started.
    fn check_native(&self, native: &str) -> Result<()> {
        let _ = native;
        Ok(())
    }

    /// What launching `spec` would create, for `--dry-run`: by default the spec itself; a cluster
    /// target returns its manifest.
    async fn plan(&self, spec: &LaunchSpec) -> Result<serde_json::Value> {
        serde_json::to_value(spec).map_err(|e| Error::Invalid(format!("cannot show the plan: {e}")))
    }

    /// Starts one instance and reports it as first observed.
    async fn launch(&self, spec: &LaunchSpec) -> Result<Observation>;

    /// Observes one instance; `Ok(None)` when the target does not know it (any more).
    async fn inspect(&self, native: &str) -> Result<Option<Observation>> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .find(|observation| observation.native == native))
    }

    /// Observes every instance this target holds.
    async fn list(&self) -> Result<Vec<Observation>>;

    /// Runs a side command to completion in the instance's environment.
    async fn exec(&self, native: &str, request: &ExecRequest) -> Result<ExecOutput> {
        let _ = (native, request);
        Err(self.unsupported("exec"))
    }

    /// Types text and keys, in order, into the interactive program.
    async fn send(&self, native: &str, input: &[InputPart]) -> Result<()> {
        let _ = (native, input);
        Err(self.unsupported("send"))
    }

    /// Changes the size of the instance's terminal (rows, columns): the program is told, as when a
    /// window is resized, and its screen is read at the new size from then on.
    async fn resize(&self, native: &str, rows: u16, cols: u16) -> Result<()> {
        let _ = (native, rows, cols);
        Err(self.unsupported("resize"))
    }

    /// The rendered screen, as a person would see it.
    async fn screen(&self, native: &str, options: ScreenOptions) -> Result<String> {
        let _ = (native, options);
        Err(self.unsupported("screen"))
    }

    /// The visible screens of several instances; targets that can batch the work override this.
    async fn screens(&self, natives: &[String]) -> Vec<Result<String>> {
        let mut screens = Vec::with_capacity(natives.len());
        for native in natives {
            screens.push(self.screen(native, ScreenOptions::default()).await);
        }
        screens
    }

    /// Notices naming the instances (native ids) whose screen changed, as it happens, for a target
    /// that learns of output without being asked; `None` for one that can only be polled.
    fn screen_changes(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }

    /// The program's output so far, as raw text.
    async fn logs(&self, native: &str) -> Result<String> {
        let _ = native;
        Err(self.unsupported("logs"))
    }

    /// The command that attaches the user's terminal to the instance (run in the foreground).
    fn attach_command(&self, native: &str) -> Result<Vec<String>> {
        let _ = native;
        Err(self.unsupported("attach"))
    }

    /// Stops the instance: asks it to end, waits up to `grace`, then kills it. Stopping an instance the
    /// target no longer knows succeeds.
    async fn stop(&self, native: &str, grace: Duration) -> Result<()>;

    /// Stops several instances, each as `stop` does, at most `limit` at a time; one result per
    /// instance, in order. Targets that can end many at once (one grace period for all) override it.
    async fn stop_many(
        &self,
        natives: &[String],
        grace: Duration,
        limit: usize,
    ) -> Vec<Result<()>> {
        use futures::StreamExt;
        // Made up front (a future does nothing until polled); `limit` of them run at a time.
        let stops: Vec<_> = natives
            .iter()
            .map(|native| self.stop(native, grace))
            .collect();
        futures::stream::iter(stops)
            .buffered(limit.max(1))
            .collect()
            .await
    }

    /// The launch specs of instances still running on this target, so that they can be re-adopted after
    /// Mahavishnu's records were lost.
    async fn recover(&self) -> Result<Vec<LaunchSpec>> {
        Err(self.unsupported("recover"))
    }

    /// The `Unsupported` error for an operation of this target.
    fn unsupported(&self, operation: &'static str) -> Error {
        Error::Unsupported {
            target: self.name().clone(),
            operation,
        }
    }
}
