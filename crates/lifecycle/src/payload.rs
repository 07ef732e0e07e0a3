//! What Claude Code and Qwen Code send to a hook on stdin.

use std::path::PathBuf;

use mahavishnu_core::config::HOOK_EVENTS;
use mahavishnu_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The most a payload may weigh; a transcript is passed by path, so real payloads are small.
pub const MAX_PAYLOAD_BYTES: usize = 4 << 20;

/// A hook payload, as Claude Code's hooks contract defines it (Qwen Code sends the same).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HookPayload {
    /// The caller's session id.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Where the caller keeps its transcript.
    #[serde(default)]
    pub transcript_path: Option<PathBuf>,
    /// The caller's working directory: the project.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// The event.
    pub hook_event_name: String,
    /// SessionStart: `startup`, `resume`, `clear` or `compact`.
    #[serde(default)]
    pub source: Option<String>,
    /// SessionEnd: why it ended.
    #[serde(default)]
    pub reason: Option<String>,
    /// UserPromptSubmit: the prompt.
    #[serde(default)]
    pub prompt: Option<String>,
}

impl HookPayload {
    /// Parses a payload, naming what is wrong with it.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::Invalid(format!(
                "the hook payload is {} bytes, more than the {MAX_PAYLOAD_BYTES} a hook payload may be",
                bytes.len()
            )));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::Invalid(
                "no hook payload on stdin; Claude Code and Qwen Code send JSON there (see `mahavishnu hooks test`)".into(),
            ));
        }
        let payload: HookPayload = serde_json::from_slice(bytes).map_err(|e| {
            Error::Invalid(format!(
                "the hook payload is not the JSON of a hook event: {e}"
            ))
        })?;
        check_event(&payload.hook_event_name)?;
        Ok(payload)
    }
}

/// Checks an event name against the known events.
pub fn check_event(event: &str) -> Result<()> {
    if HOOK_EVENTS.contains(&event) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "unknown hook event `{event}`; known events: {}",
            HOOK_EVENTS.join(", ")
        )))
    }
}

/// Whether a failed required hook may block this event (exit code 2).
pub fn can_block(event: &str) -> bool {
    matches!(
        event,
        "UserPromptSubmit" | "Stop" | "SubagentStop" | "PreToolUse"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_event_of_the_contract() {
        for event in HOOK_EVENTS {
            let json = format!(
                r#"{{"session_id":"s","cwd":"/tmp","hook_event_name":"{event}","extra":1}}"#
            );
            assert_eq!(
                HookPayload::parse(json.as_bytes()).unwrap().hook_event_name,
                *event
            );
        }
    }

    #[test]
    fn bad_payloads_are_named() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "no hook payload"),
            (b"{not json", "not the JSON"),
            (
                br#"{"hook_event_name":"Sometime"}"#,
                "unknown hook event `Sometime`",
            ),
            (br#"{"session_id":"x"}"#, "hook_event_name"),
        ];
        for (bytes, needle) in cases {
            let error = HookPayload::parse(bytes).unwrap_err().to_string();
            assert!(error.contains(needle), "{error}");
        }
        let huge = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert!(
            HookPayload::parse(&huge)
                .unwrap_err()
                .to_string()
                .contains("more than")
        );
    }
}
