//! What the open pages are told as it happens: a session's screen or state changed, sessions came
//! or went. One watcher per server, running only while a page listens. Where a target sends notices
//! of output (tmux through `serve`'s control client, pty hosts through their sockets, pods through
//! their attach streams), only the screens that changed are read, as soon as they change, and states
//! once a second; sessions of other targets are read, state and screen, a few times a second.
//! Changes are pushed to the pages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mahavishnu_api::Api;
use mahavishnu_core::{Instance, InstanceState};
use mahavishnu_orchestrator::ListFilter;
use serde::Serialize;
use tokio::sync::broadcast;

/// How often the watcher looks at sessions whose target sends no notice of output.
pub const TICK: Duration = Duration::from_millis(200);
/// How often it looks at states and the set of sessions when every target sends notices of output
/// (tmux under `serve`, pty, Kubernetes): screens are read when a notice says they changed.
pub const LOOK: Duration = Duration::from_secs(1);
/// How long notices are gathered before the screens they name are read.
const GATHER: Duration = Duration::from_millis(15);

/// A change, as the page receives it.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Update {
    /// A session's screen or state changed.
    Screen {
        /// The session.
        id: String,
        /// Its screen (plain text).
        screen: String,
        /// Its state's label (`waiting`, `exited (0)`).
        state: String,
        /// Its state's name, for styles.
        class: String,
    },
    /// The set of sessions changed: the page fetches its tiles again.
    Sessions {
        /// How many wait for input.
        waiting: usize,
    },
    /// Something was recorded in the event stream.
    Event {
        /// Its sequence number.
        seq: i64,
        /// When (RFC 3339).
        at: String,
        /// The session it concerns.
        instance: String,
        /// What happened.
        what: String,
        /// Its details.
        detail: String,
    },
}

/// The watcher: a broadcast that runs its loop while anyone listens.
pub struct Live {
    api: Api,
    sender: broadcast::Sender<Update>,
    running: Mutex<bool>,
}

impl Live {
    /// A watcher over `api`'s sessions; it starts with its first listener.
    pub fn new(api: Api) -> Arc<Live> {
        let (sender, _) = broadcast::channel(1024);
        Arc::new(Live {
            api,
            sender,
            running: Mutex::new(false),
        })
    }

    /// Listens to the changes from now on.
    pub fn subscribe(self: &Arc<Self>) -> broadcast::Receiver<Update> {
        let receiver = self.sender.subscribe();
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if !*running {
            *running = true;
            let live = Arc::clone(self);
            tokio::spawn(async move { live.watch().await });
        }
        receiver
    }

    async fn watch(self: Arc<Self>) {
        let (mut changes, mut noticing) = self.api.orchestrator().screen_changes();
        let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut sessions: Vec<(String, String)> = Vec::new();
        let mut last_event = self.api.orchestrator().last_event_seq().unwrap_or(0);
        let mut showing: BTreeMap<String, Instance> = BTreeMap::new();
        let mut next_look = tokio::time::Instant::now();
        loop {
            if self.sender.receiver_count() == 0 {
                let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
                // Checked again under the lock: a listener that came meanwhile keeps it going.
                if self.sender.receiver_count() == 0 {
                    *running = false;
                    return;
                }
            }
            let changed = tokio::select! {
                _ = tokio::time::sleep_until(next_look) => None,
                notice = changes.recv(), if !noticing.is_empty() => Some(notice),
            };
            let Some(first) = changed else {
                self.send_events(&mut last_event);
                if let Ok(instances) = live_instances(&self.api).await {
                    self.announce_sessions(&instances, &mut sessions);
                    showing = instances
                        .iter()
                        .filter(|i| has_screen(i.state))
                        .map(|i| (i.id.to_string(), i.clone()))
                        .collect();
                    let all: Vec<Instance> = showing.values().cloned().collect();
                    self.send_screens(&instances, &all, &mut seen).await;
                    seen.retain(|id, _| instances.iter().any(|i| i.id.to_string() == *id));
                    // Targets that send notices need a look only for what notices do not tell.
                    let polled_only = instances.iter().any(|i| !noticing.contains(&i.target));
                    next_look = tokio::time::Instant::now()
                        + if polled_only || noticing.is_empty() {
                            TICK
                        } else {
                            LOOK
                        };
                }
                continue;
            };
            let Some(first) = first else {
                noticing.clear(); // the notices ended: poll instead
                continue;
            };
            // Notices come in bursts: gather what arrives within a moment, then read those screens.
            let mut ids = std::collections::BTreeSet::new();
            let mut everything = false;
            let mut note = |notice: Option<mahavishnu_core::InstanceId>| match notice {
                Some(id) => {
                    ids.insert(id.to_string());
                }
                None => everything = true,
            };
            note(first);
            let gathered = tokio::time::Instant::now() + GATHER;
            while let Ok(Some(notice)) = tokio::time::timeout_at(gathered, changes.recv()).await {
                note(notice);
            }
            let reading: Vec<Instance> = showing
                .iter()
                .filter(|(id, _)| everything || ids.contains(*id))
                .map(|(_, instance)| instance.clone())
                .collect();
            if !reading.is_empty() {
                self.send_screens(&reading, &reading, &mut seen).await;
            }
        }
    }

    /// Passes on what was recorded in the event stream since `last`.
    fn send_events(&self, last: &mut i64) {
        if let Ok(events) = self.api.orchestrator().events(*last, None, 500) {
            for event in events {
                *last = (*last).max(event.seq);
                let _ = self.sender.send(Update::Event {
                    seq: event.seq,
                    at: event.at.to_string(),
                    instance: event.instance.unwrap_or_default(),
                    what: event.kind,
                    detail: event.detail.to_string(),
                });
            }
        }
    }

    /// Tells the pages when the set of sessions (or their states) changed.
    fn announce_sessions(&self, instances: &[Instance], sessions: &mut Vec<(String, String)>) {
        let now: Vec<(String, String)> = instances
            .iter()
            .map(|i| (i.id.to_string(), i.state.name().to_string()))
            .collect();
        if now != *sessions {
            let waiting = instances
                .iter()
                .filter(|i| i.state == InstanceState::Waiting)
                .count();
            let _ = self.sender.send(Update::Sessions { waiting });
            *sessions = now;
        }
    }

    /// Reads the screens of `reading` and sends each of `instances` whose screen or state differs
    /// from what the pages were last sent.
    async fn send_screens(
        &self,
        instances: &[Instance],
        reading: &[Instance],
        seen: &mut BTreeMap<String, (String, String)>,
    ) {
        let screens: BTreeMap<String, String> = self
            .api
            .orchestrator()
            .screens(reading, false)
            .await
            .into_iter()
            .map(|(id, screen)| (id.to_string(), screen))
            .collect();
        for instance in instances {
            let id = instance.id.to_string();
            let screen = screens
                .get(&id)
                .map(|screen| crate::pages::tile_text(screen))
                .unwrap_or_default();
            let state = instance.state_label();
            let now = (screen.clone(), state.clone());
            if seen.get(&id) != Some(&now) {
                let _ = self.sender.send(Update::Screen {
                    id: id.clone(),
                    screen,
                    state,
                    class: instance.state.name().to_string(),
                });
                seen.insert(id, now);
            }
        }
    }
}

/// Whether a session in this state has a screen to read.
pub fn has_screen(state: InstanceState) -> bool {
    matches!(
        state,
        InstanceState::Starting | InstanceState::Running | InstanceState::Waiting
    )
}

/// The sessions the dashboard shows: every one not closed, reconciled with its target.
pub async fn live_instances(api: &Api) -> mahavishnu_core::Result<Vec<Instance>> {
    let mut instances = api
        .orchestrator()
        .list_instances(&ListFilter::default())
        .await?;
    instances.retain(|i| i.state != InstanceState::Closed);
    instances.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Ok(instances)
}
