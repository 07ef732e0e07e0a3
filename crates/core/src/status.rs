//! Telling "busy" from "waiting for input", from what a target observes and what the screen shows.
//!
//! A program waits for input when its screen has stayed unchanged for the profile's idle time and
//! either shows one of the profile's waiting patterns or, for a shell, the shell holds the terminal's
//! foreground again (prompt back, no foreground job). A blank screen is never waiting: a program that
//! has drawn nothing yet (a shell still reading its startup files) would lose what is typed into it.
//! The idle time is itself the first confirmation:
//! two observations `idle_ms` apart saw the same screen. `StatusTracker` adds a second for callers that
//! poll, so a state never flickers on one lucky sample.

use std::time::{Duration, Instant};

use regex::Regex;

use crate::error::{Error, Result};
use crate::model::{InstanceState, Observation, ObservedStatus, WaitingRules};

/// Compiled waiting rules of one profile.
#[derive(Clone, Debug)]
pub struct WaitingDetector {
    patterns: Vec<Regex>,
    questions: Vec<Regex>,
    busy: Vec<Regex>,
    idle: Duration,
    shell: bool,
}

impl WaitingDetector {
    /// Compiles the rules; a bad pattern is reported with the fix.
    pub fn new(rules: &WaitingRules) -> Result<Self> {
        Ok(WaitingDetector {
            patterns: compile("waiting pattern", &rules.patterns)?,
            questions: compile("question pattern", &rules.questions)?,
            busy: compile("busy pattern", &rules.busy)?,
            idle: Duration::from_millis(rules.idle_ms),
            shell: rules.shell,
        })
    }

    /// Whether the screen is needed to classify this observation: it is idle long enough, and the
    /// verdict depends on what the screen shows (the waiting or question patterns, or, until the
    /// program is `drawn` (known to have been waiting before), whether it has drawn anything at all).
    /// A shell already known to wait needs no screen, which keeps `list` of many shells cheap.
    pub fn needs_screen(&self, observation: &Observation, drawn: bool) -> bool {
        let screen_decides = (!self.shell && !self.patterns.is_empty())
            || !self.questions.is_empty()
            || !self.busy.is_empty()
            || !drawn;
        screen_decides
            && observation.status == ObservedStatus::Running
            && self.idle_enough(observation.idle_ms)
    }

    fn idle_enough(&self, idle_ms: Option<u64>) -> bool {
        idle_ms.is_some_and(|idle| Duration::from_millis(idle) >= self.idle)
    }

    /// The state this observation shows. `screen` is consulted only where `needs_screen` said so.
    pub fn classify(&self, observation: &Observation, screen: Option<&str>) -> InstanceState {
        if let ObservedStatus::Exited(_) = observation.status {
            return InstanceState::Exited;
        }
        if !self.idle_enough(observation.idle_ms) || screen.is_some_and(is_blank) {
            return InstanceState::Running;
        }
        if screen.is_some_and(|screen| self.question(screen).is_some()) {
            return InstanceState::Waiting;
        }
        if screen.is_some_and(|screen| self.busy.iter().any(|busy| busy.is_match(screen))) {
            return InstanceState::Running;
        }
        let waiting = if self.shell {
            observation.foreground_job == Some(false)
        } else if self.patterns.is_empty() {
            true
        } else {
            screen
                .is_some_and(|screen| self.patterns.iter().any(|pattern| pattern.is_match(screen)))
        };
        if waiting {
            InstanceState::Waiting
        } else {
            InstanceState::Running
        }
    }
}

impl WaitingDetector {
    /// The question of the program's own that the screen shows (the text its pattern matched), if any.
    pub fn question(&self, screen: &str) -> Option<String> {
        self.questions
            .iter()
            .find_map(|pattern| pattern.find(screen))
            .map(|found| found.as_str().trim().to_string())
    }
}

fn compile(what: &str, patterns: &[String]) -> Result<Vec<Regex>> {
    patterns
        .iter()
        .map(|pattern| {
            Regex::new(pattern).map_err(|e| {
                Error::Invalid(format!(
                    "{what} `{pattern}` is not a valid regular expression: {e}"
                ))
            })
        })
        .collect()
}

/// Whether a screen shows nothing at all (only spaces and empty lines).
pub fn is_blank(screen: &str) -> bool {
    screen.trim().is_empty()
}

/// A hash of a screen's text, the same in every process and every build (it is stored).
pub fn screen_hash(screen: &str) -> u64 {
    stable_hash(screen.as_bytes())
}

/// 64-bit FNV-1a: small, and fixed for good, so hashes kept in the store stay comparable.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Follows one instance across polls: measures idle time from screen changes where the target cannot
/// report it, and confirms a new state only when two consecutive polls agree.
#[derive(Debug)]
pub struct StatusTracker {
    last_screen_hash: Option<u64>,
    changed_at: Instant,
    candidate: Option<InstanceState>,
    confirmed: Option<InstanceState>,
}

impl Default for StatusTracker {
    fn default() -> Self {
        StatusTracker {
            last_screen_hash: None,
            changed_at: Instant::now(),
            candidate: None,
            confirmed: None,
        }
    }
}

impl StatusTracker {
    /// Records the screen seen now and returns how long it has been unchanged.
    pub fn observe_screen(&mut self, screen: &str) -> Duration {
        let hash = screen_hash(screen);
        if self.last_screen_hash != Some(hash) {
            self.last_screen_hash = Some(hash);
            self.changed_at = Instant::now();
        }
        self.changed_at.elapsed()
    }

    /// The hash of the last screen seen and how long it has been unchanged.
    pub fn mark(&self) -> Option<(u64, Duration)> {
        self.last_screen_hash
            .map(|hash| (hash, self.changed_at.elapsed()))
    }

    /// Feeds one classification; returns the state once two consecutive ones agree.
    pub fn confirm(&mut self, state: InstanceState) -> Option<InstanceState> {
        if self.candidate == Some(state) {
            self.confirmed = Some(state);
        }
        self.candidate = Some(state);
        self.confirmed.filter(|confirmed| *confirmed == state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(idle_ms: u64, foreground_job: Option<bool>) -> Observation {
        Observation {
            native: "x".into(),
            status: ObservedStatus::Running,
            idle_ms: Some(idle_ms),
            foreground_job,
            pid: None,
        }
    }

    #[test]
    fn patterns_count_only_once_the_screen_is_idle() {
        let rules = WaitingRules {
            patterns: vec!["Type your message".into()],
            idle_ms: 500,
            shell: false,
            questions: vec![],
            busy: Vec::new(),
        };
        let detector = WaitingDetector::new(&rules).unwrap();
        let screen = Some("> Type your message or @path");
        assert_eq!(
            detector.classify(&observation(100, None), screen),
            InstanceState::Running
        );
        assert!(detector.needs_screen(&observation(600, None), true));
        assert_eq!(
            detector.classify(&observation(600, None), screen),
            InstanceState::Waiting
        );
        assert_eq!(
            detector.classify(&observation(600, None), Some("thinking...")),
            InstanceState::Running
        );
    }

    #[test]
    fn a_shell_waits_when_no_job_holds_the_foreground() {
        let rules = WaitingRules {
            patterns: vec![],
            idle_ms: 200,
            shell: true,
            questions: vec![],
            busy: Vec::new(),
        };
        let detector = WaitingDetector::new(&rules).unwrap();
        assert_eq!(
            detector.classify(&observation(300, Some(false)), None),
            InstanceState::Waiting
        );
        assert_eq!(
            detector.classify(&observation(300, Some(true)), None),
            InstanceState::Running
        );
        assert_eq!(
            detector.classify(&observation(100, Some(false)), None),
            InstanceState::Running
        );
        assert!(detector.needs_screen(&observation(300, Some(false)), false));
        assert!(
            !detector.needs_screen(&observation(300, Some(false)), true),
            "a shell known to have drawn its prompt needs no screen"
        );
        assert_eq!(
            detector.classify(&observation(300, Some(false)), Some("\n   \n\n")),
            InstanceState::Running,
            "a shell that has not drawn its prompt yet is not waiting"
        );
        assert_eq!(
            detector.classify(&observation(300, Some(false)), Some("$ \n\n")),
            InstanceState::Waiting
        );
    }

    #[test]
    fn a_busy_sign_on_the_screen_is_never_waiting_however_still_the_screen() {
        let rules = WaitingRules {
            patterns: vec!["Type your message".into()],
            idle_ms: 500,
            busy: vec!["esc to cancel".into()],
            ..Default::default()
        };
        let detector = WaitingDetector::new(&rules).unwrap();
        let working =
            "> do it\n  Shell echo x\n  Untangling... (0s · esc to cancel)\n* Type your message\n";
        assert_eq!(
            detector.classify(&observation(5000, None), Some(working)),
            InstanceState::Running
        );
        let done = "> do it\n  Done.\n* Type your message\n";
        assert_eq!(
            detector.classify(&observation(600, None), Some(done)),
            InstanceState::Waiting
        );
    }

    #[test]
    fn a_question_of_the_program_is_waiting_on_it() {
        let rules = WaitingRules {
            patterns: vec!["for shortcuts".into()],
            idle_ms: 500,
            questions: vec![r"Do you trust [^?]*\?".into()],
            ..Default::default()
        };
        let detector = WaitingDetector::new(&rules).unwrap();
        let screen = "  Do you trust the files in this folder?\n 1. Yes\n";
        assert_eq!(
            detector.classify(&observation(600, None), Some(screen)),
            InstanceState::Waiting
        );
        assert_eq!(
            detector.question(screen).as_deref(),
            Some("Do you trust the files in this folder?")
        );
        assert_eq!(
            detector.classify(&observation(100, None), Some(screen)),
            InstanceState::Running,
            "only once the screen is idle"
        );
        assert_eq!(detector.question("? for shortcuts"), None);
    }

    #[test]
    fn exited_programs_are_exited_whatever_the_screen() {
        let detector = WaitingDetector::new(&WaitingRules::default()).unwrap();
        let mut exited = observation(0, None);
        exited.status = ObservedStatus::Exited(3);
        assert_eq!(detector.classify(&exited, None), InstanceState::Exited);
    }

    #[test]
    fn the_tracker_needs_two_agreeing_polls() {
        let mut tracker = StatusTracker::default();
        assert_eq!(tracker.confirm(InstanceState::Waiting), None);
        assert_eq!(tracker.confirm(InstanceState::Running), None);
        assert_eq!(
            tracker.confirm(InstanceState::Running),
            Some(InstanceState::Running)
        );
        assert_eq!(tracker.confirm(InstanceState::Waiting), None);
        assert_eq!(
            tracker.confirm(InstanceState::Waiting),
            Some(InstanceState::Waiting)
        );
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let rules = WaitingRules {
            patterns: vec!["(".into()],
            idle_ms: 1,
            shell: false,
            questions: vec![],
            busy: Vec::new(),
        };
        let error = WaitingDetector::new(&rules).unwrap_err().to_string();
        assert!(error.contains("`(`"), "{error}");
    }
}
