//! `wait`: block until the screen matches, stays unchanged, or the program waits for input.

use std::time::{Duration, Instant};

use mahavishnu_core::diff;
use mahavishnu_core::status::{StatusTracker, WaitingDetector};
use mahavishnu_core::{
    Error, Instance, InstanceId, InstanceState, ObservedStatus, Result, ScreenOptions, Timestamp,
};
use regex::Regex;
use serde::Serialize;

use crate::Orchestrator;

/// What to wait for.
#[derive(Clone, Debug)]
pub enum WaitCondition {
    /// The screen matches this regular expression: in the lines that are new since input was last
    /// typed into the session (or since its launch; for a session recovered without that record,
    /// since the wait started), or anywhere.
    Pattern {
        /// The expression.
        regex: Regex,
        /// Match the whole screen, including what was on it before.
        anywhere: bool,
    },
    /// The screen stays unchanged this long.
    Idle(Duration),
    /// The profile's rules say the program waits for input (confirmed on two polls).
    Waiting,
}

impl WaitCondition {
    /// Compiles a `--for` pattern (multi-line: `^` and `$` match at each screen line), naming the
    /// problem if it is not a regular expression.
    pub fn pattern(pattern: &str, anywhere: bool) -> Result<Self> {
        regex::RegexBuilder::new(pattern)
            .multi_line(true)
            .build()
            .map(|regex| WaitCondition::Pattern { regex, anywhere })
            .map_err(|e| {
                Error::Invalid(format!(
                    "--for `{pattern}` is not a valid regular expression: {e}"
                ))
            })
    }

    /// The condition a wait was given: a pattern, else an idle time, else (the default) waiting for
    /// input by the profile's rules.
    pub fn parse(pattern: Option<&str>, anywhere: bool, idle: Option<Duration>) -> Result<Self> {
        match (pattern, idle) {
            (Some(pattern), _) => WaitCondition::pattern(pattern, anywhere),
            (None, Some(idle)) => Ok(WaitCondition::Idle(idle)),
            (None, None) => Ok(WaitCondition::Waiting),
        }
    }

    fn describe(&self) -> String {
        match self {
            WaitCondition::Pattern {
                regex,
                anywhere: true,
            } => format!("`{}` on the screen", regex.as_str()),
            WaitCondition::Pattern { regex, .. } => {
                format!("`{}` in new text on the screen", regex.as_str())
            }
            WaitCondition::Idle(idle) => format!("{} ms without screen changes", idle.as_millis()),
            WaitCondition::Waiting => "the program to wait for input".into(),
        }
    }
}

/// How a wait ended.
#[derive(Clone, Debug, Serialize)]
pub struct WaitOutcome {
    /// The instance.
    pub id: InstanceId,
    /// The text that matched, for a pattern.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<String>,
    /// The question of the program's own that it waits on (trust this folder?), for `waiting`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    /// How long the wait took.
    pub elapsed_ms: u64,
}

/// How much of the last screen a timed-out wait shows: enough for a sign-in or trust question.
const TIMEOUT_SCREEN_LINES: usize = 12;

fn poll_interval(elapsed: Duration) -> Duration {
    match elapsed.as_millis() {
        0..200 => Duration::from_millis(3),
        200..2000 => Duration::from_millis(20),
        _ => Duration::from_millis(50),
    }
}

impl Orchestrator {
    /// Waits until `condition` holds on instance `id`, at most `timeout`.
    pub async fn wait(
        &self,
        id: &InstanceId,
        condition: &WaitCondition,
        timeout: Duration,
    ) -> Result<WaitOutcome> {
        let instance = self.live(id)?;
        let target = self.route(&instance).await?;
        let detector = WaitingDetector::new(&instance.waiting)?;
        let started = Instant::now();
        let mut tracker = StatusTracker::default();
        let mut last_inspect = Instant::now();
        let mut before: Option<String> = match condition {
            WaitCondition::Pattern {
                anywhere: false, ..
            } => self.store.input_mark(id)?,
            _ => None,
        };
        loop {
            let screen = target.screen(id.native(), ScreenOptions::default()).await?;
            let idle = tracker.observe_screen(&screen);
            let done = match condition {
                WaitCondition::Pattern {
                    regex,
                    anywhere: true,
                } => regex
                    .find(&screen)
                    .map(|found| Some(found.as_str().to_string())),
                WaitCondition::Pattern { regex, .. } => {
                    let before = before.get_or_insert_with(|| screen.clone());
                    let new = diff::added_lines(before, &screen).join("\n");
                    regex
                        .find(&new)
                        .map(|found| Some(found.as_str().to_string()))
                }
                WaitCondition::Idle(wanted) => (idle >= *wanted).then_some(None),
                WaitCondition::Waiting => {
                    let mut observation = target
                        .inspect(id.native())
                        .await?
                        .ok_or_else(|| Error::UnknownInstance { id: id.to_string() })?;
                    last_inspect = Instant::now();
                    let measured = idle.as_millis() as u64;
                    observation.idle_ms = Some(
                        observation
                            .idle_ms
                            .map_or(measured, |idle| idle.max(measured)),
                    );
                    self.check_running(id, &observation.status)?;
                    let state = detector.classify(&observation, Some(&screen));
                    (tracker.confirm(state) == Some(InstanceState::Waiting)).then_some(None)
                }
            };
            if let Some(matched) = done {
                let question = match condition {
                    WaitCondition::Waiting => detector.question(&screen),
                    _ => None,
                };
                self.remember_wait(&instance, &tracker, condition, question.clone())?;
                return Ok(WaitOutcome {
                    id: id.clone(),
                    matched,
                    question,
                    elapsed_ms: started.elapsed().as_millis() as u64,
                });
            }
            if last_inspect.elapsed() > Duration::from_millis(250) {
                last_inspect = Instant::now();
                match target.inspect(id.native()).await? {
                    Some(observation) => self.check_running(id, &observation.status)?,
                    None => {
                        return Err(Error::NotLive {
                            id: id.to_string(),
                            state: "lost".into(),
                            hint: "its session vanished".into(),
                        });
                    }
                }
            }
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                return Err(Error::Timeout {
                    id: id.to_string(),
                    what: condition.describe(),
                    seconds: elapsed.as_secs_f64(),
                    screen: crate::last_lines(&screen, TIMEOUT_SCREEN_LINES),
                });
            }
            tokio::time::sleep(poll_interval(elapsed).min(timeout - elapsed)).await;
        }
    }

    /// Leaves what the wait learnt in the store: the screen and since when it is unchanged, and the
    /// confirmed waiting state with its question, so that the next `list` agrees.
    fn remember_wait(
        &self,
        instance: &Instance,
        tracker: &StatusTracker,
        condition: &WaitCondition,
        question: Option<String>,
    ) -> Result<()> {
        if let Some((hash, unchanged)) = tracker.mark() {
            let since = Timestamp(Timestamp::now().0 - unchanged.as_millis() as i64);
            self.store.set_screen_mark(&instance.id, hash, since)?;
        }
        if let WaitCondition::Waiting = condition {
            let mut instance = instance.clone();
            self.set_question(&mut instance, question)?;
            let (exit_code, pid) = (instance.exit_code, instance.pid);
            self.set_state(&mut instance, InstanceState::Waiting, exit_code, pid)?;
        }
        Ok(())
    }

    fn check_running(&self, id: &InstanceId, status: &ObservedStatus) -> Result<()> {
        match status {
            ObservedStatus::Running => Ok(()),
            ObservedStatus::Exited(code) => Err(Error::NotLive {
                id: id.to_string(),
                state: format!("exited with code {code}"),
                hint: "it ended before the wait was over; `capture` shows its last screen".into(),
            }),
        }
    }
}
