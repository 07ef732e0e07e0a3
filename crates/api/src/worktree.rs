//! Sessions in their own git worktrees: the operations over the lifecycle's worktree service.

use mahavishnu_core::{Instance, Result, WorktreeRecord};
use mahavishnu_lifecycle::worktree::Merged;
use mahavishnu_lifecycle::{Paused, SessionDiff, WorktreeOptions};
use mahavishnu_orchestrator::{LaunchOutcome, LaunchRequest};

use crate::Api;

/// Launches `request`: in worktrees when `worktree` options are given, else as a plain launch.
pub async fn launch_sessions(
    api: &Api,
    request: LaunchRequest,
    worktree: Option<&WorktreeOptions>,
) -> Result<LaunchOutcome> {
    match worktree {
        Some(options) => launch_in_worktrees(api, request, options).await,
        None => api.orchestrator().launch_instances(&request).await,
    }
}

/// Launches `request.count` sessions, each in a new worktree and branch of the repository around
/// `request.cwd` (see [`mahavishnu_lifecycle::Worktrees::launch_in_worktrees`]).
pub async fn launch_in_worktrees(
    api: &Api,
    request: LaunchRequest,
    options: &WorktreeOptions,
) -> Result<LaunchOutcome> {
    api.worktrees().launch_in_worktrees(request, options).await
}

/// `terminal pause`: commits the session's work on its branch, stops it, removes its worktree.
pub async fn pause_session(api: &Api, text: &str) -> Result<Paused> {
    api.worktrees().pause(text).await
}

/// `terminal resume`: recreates the worktree from the branch and launches the profile again.
pub async fn resume_session(api: &Api, text: &str) -> Result<LaunchOutcome> {
    api.worktrees().resume(text).await
}

/// `terminal repair`: makes a worktree deleted by hand again from its branch and starts the session.
pub async fn repair_session(api: &Api, text: &str) -> Result<LaunchOutcome> {
    api.worktrees().repair(text).await
}

/// `terminal merge`: merges the session's branch back.
pub async fn merge_session(
    api: &Api,
    text: &str,
    into: Option<String>,
    squash: bool,
) -> Result<Merged> {
    api.worktrees().merge(text, into, squash).await
}

/// An instance and its worktree, or why it has none.
pub async fn worktree_of(api: &Api, text: &str) -> Result<(Instance, WorktreeRecord)> {
    api.worktrees().worktree_of(text)
}

/// `terminal diff`: what the session changed against its base, committed and not.
pub async fn session_diff(api: &Api, text: &str, stat: bool) -> Result<SessionDiff> {
    api.worktrees().diff(text, stat).await
}
