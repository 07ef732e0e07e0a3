//! Liveness for one MCP client session: the screens it subscribed to, watched while there are any,
//! and the log level it asked for.
//!
//! Nothing is watched until the client subscribes to a resource. Then one task per session reads a
//! subscribed screen when its target says that it printed (tmux under `serve`, pty, Kubernetes: see
//! `Target::screen_changes`), or every [`SCREEN_PERIOD`] for a target that cannot say, and sends
//! `notifications/resources/updated` for each screen that changed; every [`LIST_PERIOD`] it compares
//! the live instance ids and sends `notifications/resources/list_changed` when sessions came or went.
//! The task ends with the last subscription, or when the client has gone.

// MCP logging is deprecated in rmcp (SEP-2577) but still part of the protocol versions clients speak.
#![allow(deprecated)]

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mahavishnu_api::{Api, CaptureParams, capture_screen};
use mahavishnu_core::InstanceId;
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
use rmcp::{Peer, RoleServer};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::server::{id_of_screen_uri, live_instances, screen_uri};

/// How often subscribed screens of targets that send no notice of output are read.
pub const SCREEN_PERIOD: Duration = Duration::from_millis(250);
/// How often the set of live instances is compared.
pub const LIST_PERIOD: Duration = Duration::from_secs(1);

/// The live state of one client session.
#[derive(Clone, Default)]
pub struct Live {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    peer: Option<Peer<RoleServer>>,
    subscribed: BTreeSet<String>,
    level: Option<LoggingLevel>,
    watcher: Option<CancellationToken>,
}

impl Live {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind, still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Subscribes the client to `uri`; starts watching if this is the first subscription.
    pub fn subscribe(&self, api: &Api, peer: Peer<RoleServer>, uri: String) {
        let mut state = self.state();
        state.peer = Some(peer.clone());
        state.subscribed.insert(uri);
        if state.watcher.is_none() {
            let stop = CancellationToken::new();
            state.watcher = Some(stop.clone());
            tokio::spawn(watch(self.clone(), api.clone(), peer, stop));
        }
    }

    /// Ends the client's subscription to `uri`; stops watching after the last one.
    pub fn unsubscribe(&self, uri: &str) {
        let mut state = self.state();
        state.subscribed.remove(uri);
        if state.subscribed.is_empty()
            && let Some(watcher) = state.watcher.take()
        {
            watcher.cancel();
        }
    }

    /// The URIs the client is subscribed to.
    pub fn subscribed(&self) -> BTreeSet<String> {
        self.state().subscribed.clone()
    }

    fn is_subscribed(&self, uri: &str) -> bool {
        self.state().subscribed.contains(uri)
    }

    /// Forgets the watcher and the subscriptions of a client that went away.
    fn forget_watcher(&self) {
        let mut state = self.state();
        state.watcher = None;
        state.subscribed.clear();
    }

    /// Sends log messages at `level` and above from now on.
    pub fn set_level(&self, peer: Peer<RoleServer>, level: LoggingLevel) {
        let mut state = self.state();
        state.peer = Some(peer);
        state.level = Some(level);
    }

    /// Logs `data` at level debug.
    pub fn debug(&self, data: Value) {
        self.log(LoggingLevel::Debug, data);
    }

    /// Logs `data` at level warning.
    pub fn warning(&self, data: Value) {
        self.log(LoggingLevel::Warning, data);
    }

    /// Logs `data` at level error.
    pub fn error(&self, data: Value) {
        self.log(LoggingLevel::Error, data);
    }

    /// Sends `notifications/message` with `data` when the client asked for messages of `level`.
    fn log(&self, level: LoggingLevel, data: Value) {
        let peer = {
            let state = self.state();
            match (&state.peer, state.level) {
                (Some(peer), Some(wanted)) if level as u8 >= wanted as u8 => peer.clone(),
                _ => return,
            }
        };
        let mut message = LoggingMessageNotificationParam::new(level, data);
        message.logger = Some("mahavishnu".into());
        tokio::spawn(async move {
            let _ = peer.notify_logging_message(message).await;
        });
    }
}

/// A hash of a screen: enough to tell that it changed.
fn fingerprint(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// The ids of the live instances, or `None` when the store could not be read.
async fn live_ids(api: &Api) -> Option<BTreeSet<String>> {
    let instances = live_instances(api).await.ok()?;
    Some(
        instances
            .iter()
            .map(|instance| instance.id.to_string())
            .collect(),
    )
}

/// Reads the screens behind `uris` at once; a screen that cannot be read (its session ended) reads
/// as `None`.
async fn read_screens(api: &Api, uris: &BTreeSet<String>) -> BTreeMap<String, Option<u64>> {
    let reads = uris.iter().filter_map(|uri| {
        let id = id_of_screen_uri(uri)?;
        Some(async move {
            let params = CaptureParams::screen(id);
            let screen = capture_screen(api, params).await.ok();
            (
                uri.clone(),
                screen.map(|captured| fingerprint(&captured.text)),
            )
        })
    });
    futures::future::join_all(reads).await.into_iter().collect()
}

/// Which subscribed screens a wake-up reads.
enum Reading {
    /// The period came: the screens of targets that send no notices, and new subscriptions.
    Polled,
    /// Notices named these screens.
    Noticed(BTreeSet<String>),
    /// Notices were lost: every screen.
    All,
}

/// Watches the subscribed screens and the instance list until `stop`, or until the client is gone.
async fn watch(live: Live, api: Api, peer: Peer<RoleServer>, stop: CancellationToken) {
    let mut seen: BTreeMap<String, Option<u64>> = BTreeMap::new();
    let mut ids = live_ids(&api).await;
    let (mut changes, mut noticing) = api.orchestrator().screen_changes();
    let mut ticks = tokio::time::interval(SCREEN_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_list = tokio::time::Instant::now() + LIST_PERIOD;
    loop {
        let reading = tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => Reading::Polled,
            notice = changes.recv(), if !noticing.is_empty() => match notice {
                Some(first) => {
                    // A burst of output is one change to read.
                    let mut named = BTreeSet::new();
                    let mut lost = false;
                    for notice in std::iter::once(first).chain(std::iter::from_fn(|| changes.try_recv().ok())) {
                        match notice {
                            Some(id) => {
                                named.insert(screen_uri(&id));
                            }
                            None => lost = true,
                        }
                    }
                    if lost { Reading::All } else { Reading::Noticed(named) }
                }
                None => {
                    noticing.clear(); // the notices ended: poll instead
                    Reading::All
                }
            },
        };
        if peer.is_transport_closed() {
            live.forget_watcher();
            return;
        }
        let subscribed = live.subscribed();
        seen.retain(|uri, _| subscribed.contains(uri));
        let noticed = |uri: &String| {
            id_of_screen_uri(uri)
                .and_then(|id| id.parse::<InstanceId>().ok())
                .is_some_and(|id| noticing.contains(id.target()))
        };
        let reads: BTreeSet<String> = subscribed
            .iter()
            .filter(|uri| match &reading {
                Reading::Polled => !seen.contains_key(*uri) || !noticed(uri),
                Reading::Noticed(named) => named.contains(*uri),
                Reading::All => true,
            })
            .cloned()
            .collect();
        for (uri, screen) in read_screens(&api, &reads).await {
            // The first reading is the baseline; a later change, or the screen going away, is news.
            let changed = seen.get(&uri).is_some_and(|before| *before != screen);
            if changed && screen.is_none() {
                live.warning(
                    json!({ "resource": uri, "event": "the screen cannot be read any more" }),
                );
            }
            seen.insert(uri.clone(), screen);
            if changed && live.is_subscribed(&uri) {
                let _ = peer
                    .notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(
                        uri,
                    ))
                    .await;
            }
        }
        if tokio::time::Instant::now() >= next_list {
            next_list = tokio::time::Instant::now() + LIST_PERIOD;
            let now = live_ids(&api).await;
            if now.is_some() && ids.is_some() && now != ids {
                let _ = peer.notify_resource_list_changed().await;
            }
            if now.is_some() {
                ids = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_screen_that_changes_has_another_fingerprint() {
        assert_eq!(fingerprint("$ ls\n"), fingerprint("$ ls\n"));
        assert_ne!(fingerprint("$ ls\n"), fingerprint("$ ls\na\n"));
    }
}
