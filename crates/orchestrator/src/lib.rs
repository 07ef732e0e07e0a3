//! The orchestrator service: owns the targets, launches instances in parallel under a limit, routes
//! every call by the id prefix, records instances and events in the store, and reconciles the store
//! with what the targets report. Every face (CLI, MCP, HTTP) calls these functions.

mod launch;
mod wait;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mahavishnu_core::config::LoadedConfig;
use mahavishnu_core::keys::{Key, NamedKey};
use mahavishnu_core::status::{WaitingDetector, screen_hash};
use mahavishnu_core::store::{Event, Store};
use mahavishnu_core::{
    Error, ExecOutput, ExecRequest, InputPart, Instance, InstanceId, InstanceState, Observation,
    ObservedStatus, Result, ScreenOptions, Target, TargetName, Timestamp,
};
use serde::{Deserialize, Serialize};

pub use launch::{LaunchOutcome, LaunchRequest, check_name};
pub use wait::{WaitCondition, WaitOutcome};

/// The label that records where an instance was made, for a target whose place follows something
/// outside Mahavishnu (the built-in `kubernetes` target follows the kubeconfig's current context).
pub const SCOPE_LABEL: &str = "mahavishnu.scope";

/// How long a listing waits for one target's answer; a target that takes longer has its rows shown as
/// unknown, so that one silent cluster never holds up the others for its whole request timeout.
const LOOK_PATIENCE: Duration = Duration::from_secs(5);

/// How long a `starting` record may go unseen by its target before it counts as lost.
const STARTING_GRACE: Duration = Duration::from_secs(30);
/// The smallest terminal a resize may ask for, and the largest side.
const MIN_ROWS: u16 = 2;
const MIN_COLS: u16 = 10;
const MAX_SIDE: u16 = 1000;

/// Makes a copy of a named target that reaches a given scope (the built-in Kubernetes target for
/// another kubeconfig context), for the instances made there; `None` when it cannot.
pub type ScopedTargets = Arc<dyn Fn(&TargetName, &str) -> Option<Arc<dyn Target>> + Send + Sync>;

/// Where instances live: their target's name, and the scope within it they were made in.
type PlaceKey = (TargetName, Option<String>);

/// What a target reported: observations by native id, and the screens read.
type Observed = (HashMap<String, Observation>, HashMap<String, String>);

/// The orchestrator.
pub struct Orchestrator {
    config: Arc<LoadedConfig>,
    store: Arc<Store>,
    /// Every target, by name.
    targets: BTreeMap<TargetName, Arc<dyn Target>>,
    scoped: Option<ScopedTargets>,
    scoped_made: std::sync::Mutex<HashMap<(TargetName, String), Arc<dyn Target>>>,
}

/// A target as `targets` lists it: its name, kind, where it points, what it can do and its preflight.
#[derive(Clone, Debug, Serialize)]
pub struct TargetInfo {
    /// The name ids start with.
    pub name: TargetName,
    /// Its kind.
    pub kind: mahavishnu_core::TargetKind,
    /// Where it points.
    pub location: String,
    /// Whether it is one of the built-in targets.
    pub builtin: bool,
    /// What it can do.
    pub capabilities: mahavishnu_core::Capabilities,
    /// Whether it can be used now, and what was found.
    pub ready: bool,
    /// What the preflight found, or why it is not ready.
    pub detail: String,
}

/// Which instances a listing shows.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only instances of this project (or started below this directory).
    pub project: Option<PathBuf>,
    /// Include closed instances.
    pub all: bool,
    /// Only instances of this target.
    pub target: Option<TargetName>,
    /// Only instances of this profile.
    pub profile: Option<String>,
}

/// What one instance of a broadcast or of a wait for many did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EachOutcome {
    /// The instance.
    pub id: InstanceId,
    /// Whether it worked.
    pub ok: bool,
    /// How long it took, for a wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `capture` returns.
#[derive(Clone, Copy, Debug, Default)]
pub struct CaptureOptions {
    /// Only the last N non-empty-trailing lines.
    pub lines: Option<usize>,
    /// Keep the blank rows at the end of the screen (trimmed otherwise).
    pub full: bool,
    /// Scrollback and escape codes.
    pub screen: ScreenOptions,
}

/// The outcome of closing one instance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CloseOutcome {
    /// The instance.
    pub id: InstanceId,
    /// Whether it is closed now.
    pub closed: bool,
    /// Why not, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Orchestrator {
    /// An orchestrator over `targets`, recording into `store`.
    pub fn new(
        config: Arc<LoadedConfig>,
        store: Arc<Store>,
        targets: Vec<Arc<dyn Target>>,
    ) -> Self {
        let targets = targets
            .into_iter()
            .map(|target| (target.name().clone(), target))
            .collect();
        Orchestrator {
            config,
            store,
            targets,
            scoped: None,
            scoped_made: Default::default(),
        }
    }

    /// Lets calls on instances made in another scope than a target reaches now (another kubeconfig
    /// context) go to a target made for that scope, so that an id always leads where it was made.
    pub fn with_scoped_targets(mut self, make: ScopedTargets) -> Self {
        self.scoped = Some(make);
        self
    }

    /// The merged configuration.
    pub fn config(&self) -> &LoadedConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store, to share with another service.
    pub fn shared_store(&self) -> Arc<Store> {
        Arc::clone(&self.store)
    }

    /// The target called `name`, or an error that names the known ones.
    pub fn target(&self, name: &TargetName) -> Result<&Arc<dyn Target>> {
        self.targets.get(name).ok_or_else(|| Error::UnknownTarget {
            name: name.to_string(),
            known: self
                .targets
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The target that holds `instance`: the one of its name when that reaches the place the instance
    /// was made in, else a copy made for that place; otherwise an error that names the place, so that
    /// no call lands in another cluster.
    async fn route(&self, instance: &Instance) -> Result<Arc<dyn Target>> {
        let made_in = instance.labels.get(SCOPE_LABEL).map(String::as_str);
        match self.target_in(&instance.target, made_in).await? {
            Ok(target) => Ok(target),
            Err(reaches) => Err(out_of_scope(
                instance,
                made_in.unwrap_or_default(),
                reaches.as_deref(),
            )),
        }
    }

    /// The target called `name` as it reaches `made_in` (as it is when `None`); `Err` with the scope
    /// the configured target reaches instead when no target can reach it.
    async fn target_in(
        &self,
        name: &TargetName,
        made_in: Option<&str>,
    ) -> Result<std::result::Result<Arc<dyn Target>, Option<String>>> {
        let target = Arc::clone(self.target(name)?);
        let Some(made_in) = made_in else {
            return Ok(Ok(target));
        };
        let reaches = target.scope().await?;
        if reaches.as_deref() == Some(made_in) {
            return Ok(Ok(target));
        }
        let key = (name.clone(), made_in.to_string());
        let made = self
            .scoped_made
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&key)
            .cloned();
        let made = match made {
            Some(made) => Some(made),
            None => match self.scoped.as_ref().and_then(|make| make(name, made_in)) {
                // Only a target that says it reaches that place is used there.
                Some(made) if made.scope().await?.as_deref() == Some(made_in) => {
                    self.scoped_made
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .insert(key, Arc::clone(&made));
                    Some(made)
                }
                _ => None,
            },
        };
        Ok(made.ok_or(reaches))
    }

    /// Every target with its kind, where it points, its capabilities and its preflight (asked of all
    /// at once); only `name` when given.
    pub async fn target_infos(&self, name: Option<&TargetName>) -> Result<Vec<TargetInfo>> {
        let targets: Vec<&Arc<dyn Target>> = match name {
            Some(name) => vec![self.target(name)?],
            None => self.targets.values().collect(),
        };
        let verdicts =
            futures::future::join_all(targets.iter().map(|target| target.preflight())).await;
        Ok(targets
            .into_iter()
            .zip(verdicts)
            .map(|(target, verdict)| TargetInfo {
                name: target.name().clone(),
                kind: target.kind(),
                location: target.location(),
                builtin: target.name().is_builtin(),
                capabilities: target.capabilities(),
                ready: verdict.ready,
                detail: verdict.detail,
            })
            .collect())
    }

    /// Turns what the user typed into an id: `tmux:mv-1` as is, or a bare native id (`mv-1`) when it
    /// names exactly one recorded instance.
    pub fn resolve_id(&self, text: &str) -> Result<InstanceId> {
        if text.contains(':') {
            let id: InstanceId = text.parse()?;
            // An id of a target that is not configured names nothing, unless it was recorded before
            // the target went (then it can still be listed and closed).
            if let Err(unknown) = self.target(id.target())
                && self.store.instance(&id)?.is_none()
            {
                return Err(unknown);
            }
            return Ok(id);
        }
        let matches: Vec<InstanceId> = self
            .store
            .instances(true)?
            .into_iter()
            .filter(|instance| instance.id.native() == text)
            .map(|instance| instance.id)
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::UnknownInstance {
                id: text.to_string(),
            }),
            many => Err(Error::Invalid(format!(
                "`{text}` names several instances ({}); give the full id",
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The recorded instance with this id.
    pub fn recorded(&self, id: &InstanceId) -> Result<Instance> {
        self.store
            .instance(id)?
            .ok_or_else(|| Error::UnknownInstance { id: id.to_string() })
    }

    /// The instance, reconciled with its target.
    pub async fn instance(&self, id: &InstanceId) -> Result<Instance> {
        let instance = self.recorded(id)?;
        Ok(self.reconcile(vec![instance]).await?.remove(0))
    }

    /// Recorded instances matching `filter`, reconciled with what their targets report. A target
    /// filter must name a target, or one that holds records (it may have left the configuration).
    pub async fn list_instances(&self, filter: &ListFilter) -> Result<Vec<Instance>> {
        let instances = self.recorded_matching(filter)?;
        if let Some(name) = &filter.target
            && instances.is_empty()
        {
            self.target(name)?;
        }
        self.reconcile(instances).await
    }

    /// Recorded instances matching `filter`, as recorded (nothing asked of their targets).
    fn recorded_matching(&self, filter: &ListFilter) -> Result<Vec<Instance>> {
        let project = filter.project.as_deref().map(canonical).transpose()?;
        Ok(self
            .store
            .instances(filter.all)?
            .into_iter()
            .filter(|instance| {
                project
                    .as_deref()
                    .is_none_or(|dir| belongs_to(instance, dir))
                    && filter
                        .target
                        .as_ref()
                        .is_none_or(|name| &instance.target == name)
                    && filter
                        .profile
                        .as_deref()
                        .is_none_or(|profile| instance.profile == profile)
            })
            .collect())
    }

    /// The ids of the live instances of a project and profile (every one when they are None).
    pub async fn live_ids(
        &self,
        project: Option<PathBuf>,
        profile: Option<String>,
    ) -> Result<Vec<InstanceId>> {
        let filter = ListFilter {
            project,
            profile,
            ..Default::default()
        };
        Ok(self
            .list_instances(&filter)
            .await?
            .into_iter()
            .map(|instance| instance.id)
            .collect())
    }

    /// The ids of every recorded instance not closed yet, of a project and profile (every one when
    /// they are None), as recorded: for closing them, which needs no word from their targets first.
    pub fn open_ids(
        &self,
        project: Option<PathBuf>,
        profile: Option<String>,
    ) -> Result<Vec<InstanceId>> {
        let filter = ListFilter {
            project,
            profile,
            ..Default::default()
        };
        Ok(self
            .recorded_matching(&filter)?
            .into_iter()
            .map(|instance| instance.id)
            .collect())
    }

    /// Brings the records of `instances` up to date with their targets; returns them updated. Every
    /// target is asked at once, so a slow one costs its own time only; one that cannot be asked (or
    /// is not configured any more) leaves its records as they were, marked unknown with the reason.
    async fn reconcile(&self, mut instances: Vec<Instance>) -> Result<Vec<Instance>> {
        // Instances are asked about where they were made: by target, and by scope within it.
        let mut places: BTreeMap<PlaceKey, Vec<usize>> = BTreeMap::new();
        for (index, instance) in instances.iter().enumerate() {
            if instance.state.is_live() {
                let scope = instance.labels.get(SCOPE_LABEL).cloned();
                places
                    .entry((instance.target.clone(), scope))
                    .or_default()
                    .push(index);
            }
        }
        let looks = places.into_iter().map(|((name, made_in), indexes)| {
            let instances = &instances;
            async move {
                let look = self.look(&name, made_in.as_deref(), instances, &indexes);
                let seen = tokio::time::timeout(LOOK_PATIENCE, look)
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "target `{name}` did not answer within {}s",
                            LOOK_PATIENCE.as_secs()
                        ))
                    });
                (indexes, seen)
            }
        });
        for (indexes, seen) in futures::future::join_all(looks).await {
            match seen {
                Ok((observed, screens)) => {
                    for index in indexes {
                        self.apply(&mut instances[index], &observed, &screens)?;
                    }
                }
                Err(reason) => {
                    for index in indexes {
                        instances[index].unknown = Some(reason.clone());
                    }
                }
            }
        }
        Ok(instances)
    }

    /// What the target called `name` (as it reaches `made_in`) reports of the instances at `indexes`:
    /// its observations, and the screens of those whose state the screen decides. `Err` says why the
    /// target could not be asked.
    async fn look(
        &self,
        name: &TargetName,
        made_in: Option<&str>,
        instances: &[Instance],
        indexes: &[usize],
    ) -> std::result::Result<Observed, String> {
        let target = match self.target_in(name, made_in).await {
            Ok(Ok(target)) => target,
            Ok(Err(reaches)) => {
                return Err(format!(
                    "made in `{}`, which target `{name}` does not reach now (it reaches `{}`)",
                    made_in.unwrap_or_default(),
                    reaches.unwrap_or_default()
                ));
            }
            Err(Error::UnknownTarget { .. }) => {
                return Err(format!(
                    "unknown target `{name}`: it is not in the configuration any more"
                ));
            }
            Err(error) => return Err(error.to_string()),
        };
        // A target that measures no idle time (a cluster) needs every screen to tell busy from
        // waiting: those are asked together with the list, so that a slow target costs one round trip.
        let capabilities = target.capabilities();
        let early = capabilities.screen && !capabilities.host_processes;
        let live: Vec<String> = if early {
            indexes
                .iter()
                .map(|&index| instances[index].id.native().to_string())
                .collect()
        } else {
            Vec::new()
        };
        let (listed, early_screens) = tokio::join!(target.list(), async {
            if live.is_empty() {
                Vec::new()
            } else {
                target.screens(&live).await
            }
        });
        let observed: HashMap<String, Observation> = listed
            .map_err(|error| error.to_string())?
            .into_iter()
            .map(|observation| (observation.native.clone(), observation))
            .collect();
        if early {
            let screens = live
                .into_iter()
                .zip(early_screens)
                .filter_map(|(native, screen)| screen.ok().map(|screen| (native, screen)))
                .collect();
            return Ok((observed, screens));
        }
        // Screens are read where idle time is uncertain (the target's own measure is coarse or short)
        // and where the waiting patterns decide; the stored screen marks make idle time exact.
        let need_screen: Vec<String> = indexes
            .iter()
            .map(|&index| &instances[index])
            .filter(|instance| {
                let Some(observation) = observed.get(instance.id.native()) else {
                    return false;
                };
                let Ok(detector) = WaitingDetector::new(&instance.waiting) else {
                    return false;
                };
                observation.status == ObservedStatus::Running
                    && (observation
                        .idle_ms
                        .is_none_or(|idle| idle < instance.waiting.idle_ms)
                        || detector
                            .needs_screen(observation, instance.state == InstanceState::Waiting))
            })
            .map(|instance| instance.id.native().to_string())
            .collect();
        let screens: HashMap<String, String> = if need_screen.is_empty() {
            HashMap::new()
        } else {
            need_screen
                .iter()
                .cloned()
                .zip(target.screens(&need_screen).await)
                .filter_map(|(native, screen)| screen.ok().map(|screen| (native, screen)))
                .collect()
        };
        Ok((observed, screens))
    }

    /// Updates one record from what its target reported.
    fn apply(
        &self,
        instance: &mut Instance,
        observed: &HashMap<String, Observation>,
        screens: &HashMap<String, String>,
    ) -> Result<()> {
        let mut observation = observed.get(instance.id.native()).cloned();
        let detector = WaitingDetector::new(&instance.waiting).ok();
        let screen = screens.get(instance.id.native()).map(String::as_str);
        if let (Some(observation), Some(screen)) = (observation.as_mut(), screen) {
            let unchanged_ms = self.mark_screen(&instance.id, screen)?;
            observation.idle_ms = Some(
                observation
                    .idle_ms
                    .map_or(unchanged_ms, |idle| idle.max(unchanged_ms)),
            );
        }
        let (state, exit_code, pid) = match (&observation, &detector) {
            (None, _)
                if instance.state == InstanceState::Starting
                    && instance.created_at.age() < STARTING_GRACE =>
            {
                return Ok(());
            }
            (None, _) => (InstanceState::Lost, instance.exit_code, instance.pid),
            (Some(observation), Some(detector)) => {
                let exit_code = match observation.status {
                    ObservedStatus::Exited(code) => Some(code),
                    ObservedStatus::Running => None,
                };
                (
                    detector.classify(observation, screen),
                    exit_code,
                    observation.pid.or(instance.pid),
                )
            }
            (Some(_), None) => return Ok(()),
        };
        let question = match (&detector, screen) {
            (Some(detector), Some(screen)) if state == InstanceState::Waiting => {
                detector.question(screen)
            }
            _ => None,
        };
        self.set_question(instance, question)?;
        self.set_state(instance, state, exit_code, pid)
    }

    /// Compares `screen` with the stored mark of the instance; returns how long it has been unchanged.
    fn mark_screen(&self, id: &InstanceId, screen: &str) -> Result<u64> {
        let hash = screen_hash(screen);
        match self.store.screen_mark(id)? {
            Some((known, since)) if known == hash => Ok(since.age().as_millis() as u64),
            _ => {
                self.store.set_screen_mark(id, hash, Timestamp::now())?;
                Ok(0)
            }
        }
    }

    /// Records a state change (and its event) when something changed.
    fn set_state(
        &self,
        instance: &mut Instance,
        state: InstanceState,
        exit_code: Option<i32>,
        pid: Option<u32>,
    ) -> Result<()> {
        if instance.state == state && instance.exit_code == exit_code && instance.pid == pid {
            return Ok(());
        }
        let from = instance.state;
        instance.state = state;
        instance.exit_code = exit_code;
        instance.pid = pid;
        instance.updated_at = Timestamp::now();
        self.store.update_instance(instance)?;
        if from != state {
            let mut detail = serde_json::json!({ "from": from.name(), "to": state.name() });
            if let Some(code) = exit_code {
                detail["exit_code"] = code.into();
            }
            self.store
                .record_event(Some(&instance.id), "state", detail)?;
        }
        Ok(())
    }

    /// Records the question the instance waits on (None when it waits on none), when that changed.
    fn set_question(&self, instance: &mut Instance, question: Option<String>) -> Result<()> {
        if instance.question == question {
            return Ok(());
        }
        instance.question = question;
        self.store.update_instance(instance)
    }

    /// A live instance's record, or the error that says why it cannot take input.
    fn live(&self, id: &InstanceId) -> Result<Instance> {
        let instance = self.recorded(id)?;
        match instance.state {
            state if state.is_live() => Ok(instance),
            InstanceState::Exited => Err(Error::NotLive {
                id: id.to_string(),
                state: format!("exited with code {}", instance.exit_code.unwrap_or(-1)),
                hint: "`capture` still shows its last screen; launch a new one to go on".into(),
            }),
            state => Err(Error::NotLive {
                id: id.to_string(),
                state: state.name().into(),
                hint: "launch a new one with `mahavishnu terminal launch`".into(),
            }),
        }
    }

    /// Types `input` into the instance. Where its profile asks for it, an Enter that follows text waits
    /// `submit_delay_ms`, so that the program sees a keypress rather than the end of a paste, and is
    /// confirmed: when the screen has not moved on shortly after, Enter is pressed once more.
    pub async fn send(&self, id: &InstanceId, input: &[InputPart]) -> Result<()> {
        let instance = self.live(id)?;
        let target = self.route(&instance).await?;
        // What a later wait for a pattern compares against, so that it matches only what follows.
        // A target without screens has nothing a pattern could match, so nothing is recorded.
        if let Ok(screen) = target.screen(id.native(), ScreenOptions::default()).await {
            self.store.set_input_mark(id, &screen)?;
        }
        if instance.submit_delay_ms == 0 {
            return target.send(id.native(), input).await;
        }
        let enter = InputPart::Key(Key::Named(NamedKey::Enter));
        let mut pending: Vec<InputPart> = Vec::new();
        for part in input {
            if *part == enter
                && let Some(InputPart::Text(typed)) = pending.last()
            {
                let typed = typed.clone();
                target.send(id.native(), &pending).await?;
                pending.clear();
                tokio::time::sleep(Duration::from_millis(instance.submit_delay_ms)).await;
                submit_confirmed(target.as_ref(), id.native(), &typed).await?;
                continue;
            }
            pending.push(part.clone());
        }
        if pending.is_empty() {
            return Ok(());
        }
        target.send(id.native(), &pending).await
    }

    /// Types what a terminal's keyboard sent (bytes, escape sequences included) into the instance as
    /// it is: no submit delay, no marks for waits, one call to its target.
    pub async fn type_raw(&self, id: &InstanceId, text: &str) -> Result<()> {
        let instance = self.live(id)?;
        let target = self.route(&instance).await?;
        target
            .send(id.native(), &[InputPart::Text(text.to_string())])
            .await
    }

    /// The names of the targets, built-in and configured.
    pub fn target_names(&self) -> Vec<TargetName> {
        self.targets.keys().cloned().collect()
    }

    /// Gives the instance's terminal a new size, as resizing its window would.
    pub async fn resize(&self, id: &InstanceId, rows: u16, cols: u16) -> Result<()> {
        if !(MIN_ROWS..=MAX_SIDE).contains(&rows) || !(MIN_COLS..=MAX_SIDE).contains(&cols) {
            return Err(Error::Invalid(format!(
                "a terminal of {rows} rows and {cols} columns is not allowed: give {MIN_ROWS} to \
                 {MAX_SIDE} rows and {MIN_COLS} to {MAX_SIDE} columns"
            )));
        }
        let instance = self.live(id)?;
        let target = self.route(&instance).await?;
        target.resize(id.native(), rows, cols).await
    }

    /// Notices of instances whose screen changed, from every target that sends them (see
    /// `Target::screen_changes`), and the names of the targets that do; the others must be polled.
    /// A `None` in the stream means notices were lost (too many at once): every screen may have changed.
    pub fn screen_changes(
        &self,
    ) -> (
        tokio::sync::mpsc::UnboundedReceiver<Option<InstanceId>>,
        Vec<TargetName>,
    ) {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let mut noticing = Vec::new();
        for (name, target) in &self.targets {
            let Some(mut changes) = target.screen_changes() else {
                continue;
            };
            noticing.push(name.clone());
            let sender = sender.clone();
            let name = name.clone();
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    let received = tokio::select! {
                        _ = sender.closed() => return, // dropping `changes` tells the target
                        received = changes.recv() => received,
                    };
                    let notice = match received {
                        Ok(native) => InstanceId::new(name.clone(), native).ok(),
                        Err(RecvError::Lagged(_)) => None,
                        Err(RecvError::Closed) => return,
                    };
                    if sender.send(notice).is_err() {
                        return;
                    }
                }
            });
        }
        (receiver, noticing)
    }

    /// The screens of many instances, one batch per target: `(id, screen)` for each that has one.
    pub async fn screens(&self, instances: &[Instance], ansi: bool) -> Vec<(InstanceId, String)> {
        let mut by_target: BTreeMap<TargetName, Vec<&Instance>> = BTreeMap::new();
        for instance in instances {
            by_target
                .entry(instance.target.clone())
                .or_default()
                .push(instance);
        }
        let batches = by_target.into_values().map(|group| async move {
            let Ok(target) = self.route(group[0]).await else {
                return Vec::new();
            };
            if ansi {
                let options = ScreenOptions {
                    scrollback: false,
                    ansi: true,
                };
                let reads = group.iter().map(|instance| {
                    let target = &target;
                    async move {
                        target
                            .screen(instance.id.native(), options)
                            .await
                            .ok()
                            .map(|screen| (instance.id.clone(), screen))
                    }
                });
                return futures::future::join_all(reads)
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
            }
            let natives: Vec<String> = group.iter().map(|i| i.id.native().to_string()).collect();
            group
                .iter()
                .zip(target.screens(&natives).await)
                .filter_map(|(instance, screen)| screen.ok().map(|s| (instance.id.clone(), s)))
                .collect()
        });
        futures::future::join_all(batches)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Types the same input into every instance of `ids` at once; one outcome per instance.
    pub async fn broadcast(&self, ids: &[InstanceId], input: &[InputPart]) -> Vec<EachOutcome> {
        let sends = ids.iter().map(|id| async move {
            let sent = self.send(id, input).await;
            EachOutcome {
                id: id.clone(),
                ok: sent.is_ok(),
                elapsed_ms: None,
                error: sent.err().map(|e| e.to_string()),
            }
        });
        futures::future::join_all(sends).await
    }

    /// Waits for `condition` on every instance of `ids` at once, each at most `timeout`.
    pub async fn wait_all(
        &self,
        ids: &[InstanceId],
        condition: &WaitCondition,
        timeout: Duration,
    ) -> Vec<EachOutcome> {
        let waits = ids.iter().map(|id| async move {
            match self.wait(id, condition, timeout).await {
                Ok(outcome) => EachOutcome {
                    id: id.clone(),
                    ok: true,
                    elapsed_ms: Some(outcome.elapsed_ms),
                    error: None,
                },
                Err(error) => EachOutcome {
                    id: id.clone(),
                    ok: false,
                    elapsed_ms: None,
                    error: Some(error.to_string()),
                },
            }
        });
        futures::future::join_all(waits).await
    }

    /// The instance's screen.
    pub async fn capture(&self, id: &InstanceId, options: CaptureOptions) -> Result<String> {
        let instance = self.recorded(id)?;
        if instance.state == InstanceState::Closed {
            return Err(Error::NotLive {
                id: id.to_string(),
                state: "closed".into(),
                hint: "a closed session keeps no screen".into(),
            });
        }
        let text = self
            .route(&instance)
            .await?
            .screen(id.native(), options.screen)
            .await?;
        Ok(match options.lines {
            Some(lines) => last_lines(&text, lines),
            None if options.full => text,
            None => last_lines(&text, usize::MAX),
        })
    }

    /// Runs a side command in the instance's working directory and environment.
    pub async fn exec(
        &self,
        id: &InstanceId,
        command: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput> {
        if command.is_empty() {
            return Err(Error::Invalid(
                "no command given; pass it after `--`, e.g. `-- ls -la`".into(),
            ));
        }
        let instance = self.live(id)?;
        self.route(&instance)
            .await?
            .exec(id.native(), &ExecRequest { command, timeout })
            .await
    }

    /// The instance's output so far.
    pub async fn logs(&self, id: &InstanceId) -> Result<String> {
        let instance = self.recorded(id)?;
        self.route(&instance).await?.logs(id.native()).await
    }

    /// Closes the given instances (a grace period, then kill), in parallel. Unknown ids fail the whole
    /// call before anything is closed.
    pub async fn close_instances(
        &self,
        ids: &[InstanceId],
        grace: Option<Duration>,
    ) -> Result<Vec<CloseOutcome>> {
        let instances = ids
            .iter()
            .map(|id| self.recorded(id))
            .collect::<Result<Vec<_>>>()?;
        let grace = grace.unwrap_or(Duration::from_millis(
            self.config.config.terminal.stop_grace_ms,
        ));
        let mut finished = Vec::new();
        let mut by_target: BTreeMap<PlaceKey, (Arc<dyn Target>, Vec<Instance>)> = BTreeMap::new();
        for instance in instances {
            // A launch that failed started nothing, and a lost instance is gone from its target: their
            // records are closed without asking the target (which may not even be reachable).
            if matches!(instance.state, InstanceState::Failed | InstanceState::Lost) {
                finished.push((instance, Ok(())));
                continue;
            }
            match self.route(&instance).await {
                Err(Error::UnknownTarget { name, .. }) => {
                    let error = Error::Failed(format!(
                        "target `{name}` is not in the configuration any more, so nothing could be \
                         stopped; declare [targets.{name}] again to reach it, or drop the record with \
                         `mahavishnu terminal close {} --forget` (whatever still runs there is left \
                         running)",
                        instance.id
                    ));
                    finished.push((instance, Err(error)));
                }
                Ok(target) => by_target
                    .entry((
                        instance.target.clone(),
                        instance.labels.get(SCOPE_LABEL).cloned(),
                    ))
                    .or_insert_with(|| (target, Vec::new()))
                    .1
                    .push(instance),
                Err(error) => finished.push((instance, Err(error))),
            }
        }
        // Each target ends its instances together, so that one grace period runs for all of them.
        let limit = self.max_concurrent();
        let mut tasks = tokio::task::JoinSet::new();
        let mut stopping = HashMap::new();
        for (_, (target, instances)) in by_target {
            let natives: Vec<String> = instances
                .iter()
                .map(|instance| instance.id.native().to_string())
                .collect();
            let handle = tasks.spawn(async move { target.stop_many(&natives, grace, limit).await });
            stopping.insert(handle.id(), instances);
        }
        while let Some(joined) = tasks.join_next_with_id().await {
            match joined {
                Ok((id, results)) => {
                    if let Some(instances) = stopping.remove(&id) {
                        finished.extend(instances.into_iter().zip(results));
                    }
                }
                // A stop that panicked failed; it never vanishes from the outcome.
                Err(error) => {
                    for instance in stopping.remove(&error.id()).unwrap_or_default() {
                        let failure = Error::target(
                            &instance.target,
                            format!("stopping ended abnormally: {error}"),
                        );
                        finished.push((instance, Err(failure)));
                    }
                }
            }
        }
        let mut outcomes = Vec::new();
        for (mut instance, stopped) in finished {
            let error = stopped.err().map(|error| error.to_string());
            if error.is_none() {
                let exit_code = instance.exit_code;
                let pid = instance.pid;
                self.set_state(&mut instance, InstanceState::Closed, exit_code, pid)?;
                self.store
                    .record_event(Some(&instance.id), "closed", serde_json::json!({}))?;
            }
            outcomes.push(CloseOutcome {
                id: instance.id,
                closed: error.is_none(),
                error,
            });
        }
        outcomes.sort_by(|a, b| a.id.cmp(&b.id));
        self.remove_old_closed()?;
        Ok(outcomes)
    }

    /// Closes the records of the given instances without asking their targets (which may be gone
    /// from the configuration or unreachable for good); whatever still runs there is left running.
    pub fn forget_instances(&self, ids: &[InstanceId]) -> Result<Vec<CloseOutcome>> {
        let mut outcomes = Vec::with_capacity(ids.len());
        for id in ids {
            let mut instance = self.recorded(id)?;
            let (exit_code, pid) = (instance.exit_code, instance.pid);
            self.set_state(&mut instance, InstanceState::Closed, exit_code, pid)?;
            self.store.record_event(
                Some(id),
                "closed",
                serde_json::json!({ "forgotten": true }),
            )?;
            outcomes.push(CloseOutcome {
                id: id.clone(),
                closed: true,
                error: None,
            });
        }
        self.remove_old_closed()?;
        Ok(outcomes)
    }

    /// Removes the records of instances closed longer ago than `keep` (by default
    /// `terminal.keep_closed`); returns how many were removed.
    pub fn remove_closed(&self, keep: Option<Duration>) -> Result<usize> {
        let keep = match keep {
            Some(keep) => keep,
            None => self.config.config.terminal.keep_closed()?,
        };
        let before = Timestamp(Timestamp::now().0 - keep.as_millis() as i64);
        self.store.remove_closed_before(before)
    }

    /// `remove_closed` as closing does it on the way: a bad `keep_closed` never fails a close.
    fn remove_old_closed(&self) -> Result<()> {
        match self.remove_closed(None) {
            Ok(_) | Err(Error::Config(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Marks a stopped instance as paused (its work kept elsewhere until it is resumed).
    pub fn mark_paused(&self, id: &InstanceId) -> Result<Instance> {
        let mut instance = self.recorded(id)?;
        let (exit_code, pid) = (instance.exit_code, instance.pid);
        self.set_state(&mut instance, InstanceState::Paused, exit_code, pid)?;
        Ok(instance)
    }

    /// Forgets a stopped instance's record (paused, closed, exited...) so that it can be launched
    /// again under the same id; a live one is refused.
    pub fn forget_stopped(&self, id: &InstanceId) -> Result<Instance> {
        let instance = self.recorded(id)?;
        if instance.state.is_live() {
            return Err(Error::Invalid(format!(
                "{id} is {}; it must be stopped before it is launched again",
                instance.state
            )));
        }
        self.store.forget_instance(id)?;
        self.store
            .record_event(Some(id), "relaunching", serde_json::json!({}))?;
        Ok(instance)
    }

    /// The sequence number of the newest recorded event.
    pub fn last_event_seq(&self) -> Result<i64> {
        self.store.last_event_seq()
    }

    /// Recorded events after `after_seq`.
    pub fn events(
        &self,
        after_seq: i64,
        instance: Option<&InstanceId>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let instance = instance.map(ToString::to_string);
        self.store.events(after_seq, instance.as_deref(), limit)
    }

    /// Re-adopts instances that still run on their targets but have no live record (after the state
    /// directory was lost or replaced). Returns the adopted instances.
    pub async fn recover_instances(&self) -> Result<Vec<Instance>> {
        let mut adopted = Vec::new();
        for target in self.targets.values() {
            if !target.capabilities().recover {
                continue;
            }
            let Ok(specs) = target.recover().await else {
                continue;
            };
            for spec in specs {
                if self
                    .store
                    .instance(&spec.id)?
                    .is_some_and(|known| known.state.is_live())
                {
                    continue;
                }
                let profile = self.config.profile(&spec.profile).ok();
                let waiting = profile
                    .map(|profile| profile.waiting_rules())
                    .unwrap_or_default();
                let mut instance = launch::record_for(&spec, waiting, InstanceState::Running);
                instance.submit_delay_ms = profile.map_or(0, |profile| profile.submit_delay_ms);
                if self.store.insert_instance(&instance)? {
                    self.store.record_event(
                        Some(&instance.id),
                        "recovered",
                        serde_json::json!({}),
                    )?;
                    adopted.push(instance);
                }
            }
        }
        self.reconcile(adopted).await
    }

    fn max_concurrent(&self) -> usize {
        self.config.config.terminal.max_concurrent.max(1)
    }
}

/// How long a submitted prompt has to show on the screen before Enter is pressed once more.
const SUBMIT_PATIENCE: Duration = Duration::from_millis(2000);

/// Presses Enter after `typed` and makes sure that the program took it as a submit: programs that take
/// fast input for a paste keep the Enter as part of the text, or drop it. When the screen has not moved
/// on within `SUBMIT_PATIENCE`, Enter is pressed once more (only once: a second Enter on an empty input
/// line does nothing, a third could submit something else).
async fn submit_confirmed(target: &dyn Target, native: &str, typed: &str) -> Result<()> {
    let enter = [InputPart::Key(Key::Named(NamedKey::Enter))];
    let Some(before) = echoed(target, native, typed).await else {
        return target.send(native, &enter).await;
    };
    target.send(native, &enter).await?;
    let started = std::time::Instant::now();
    while started.elapsed() < SUBMIT_PATIENCE {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A screen that cannot be read any more belongs to a program that ended: it moved on.
        let Ok(now) = target.screen(native, ScreenOptions::default()).await else {
            return Ok(());
        };
        if moved_on(&before, &now, typed) {
            return Ok(());
        }
    }
    target.send(native, &enter).await
}

/// The screen once it shows the end of `typed`: on a busy machine the program draws typed text a while
/// after it arrives, and a screen taken before that would make the text's first appearance look like
/// the screen moving on. After `SUBMIT_PATIENCE` the screen is taken as it is (a program may not echo
/// what is typed); `None` when it cannot be read.
async fn echoed(target: &dyn Target, native: &str, typed: &str) -> Option<String> {
    let tail = typed_tail(typed);
    let started = std::time::Instant::now();
    loop {
        let screen = target.screen(native, ScreenOptions::default()).await.ok()?;
        if tail.is_empty() || screen.contains(&tail) || started.elapsed() >= SUBMIT_PATIENCE {
            return Some(screen);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The end of the last non-blank line of `typed`, which is what stays visible of it in an input field
/// (a long line wraps).
fn typed_tail(typed: &str) -> String {
    let last_line = typed
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("")
        .trim();
    let chars: Vec<char> = last_line.chars().collect();
    chars[chars.len().saturating_sub(16)..].iter().collect()
}

/// Whether the screen moved on from `before` after `typed` was submitted: the text left its input line
/// (it is gone from the screen, or the line that held it is no longer there, unchanged, at the same
/// row). Other lines changing is not enough: a CLI that is still starting redraws its status line (Codex
/// shows its model there once it is ready) while the text sits unsent in its input line. When the
/// text cannot be followed (nothing typed), any new words count.
fn moved_on(before: &str, after: &str, typed: &str) -> bool {
    let tail = typed_tail(typed);
    let input_row = before
        .lines()
        .collect::<Vec<_>>()
        .iter()
        .rposition(|line| line.contains(&tail));
    match input_row {
        Some(row) if !tail.is_empty() => {
            !after.contains(&tail) || after.lines().nth(row) != before.lines().nth(row)
        }
        _ => mahavishnu_core::diff::added_lines(before, after)
            .iter()
            .any(|line| line.chars().any(char::is_alphanumeric)),
    }
}

/// The error for a call on an instance made in another place than its target reaches now.
fn out_of_scope(instance: &Instance, made_in: &str, reaches: Option<&str>) -> Error {
    let name = &instance.target;
    let variable = format!(
        "MAHAVISHNU_TARGETS__{}__CONTEXT",
        name.as_str().to_ascii_uppercase().replace('-', "_")
    );
    let fix = if name.as_str().contains('-') {
        format!("Set `context` of [targets.{name}] back to it")
    } else {
        format!(
            "Run the command with {variable}={} set",
            mahavishnu_core::shell::quote(made_in)
        )
    };
    Error::Invalid(format!(
        "{} was made in context `{made_in}`, but target `{name}` now reaches `{}`; nothing was done, so \
         that the call cannot land in another cluster. {fix}",
        instance.id,
        reaches.unwrap_or("its default"),
    ))
}

fn canonical(dir: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(dir).map_err(|e| {
        Error::Invalid(format!(
            "--project {}: {e}; give an existing directory",
            dir.display()
        ))
    })
}

fn belongs_to(instance: &Instance, dir: &Path) -> bool {
    instance.project == dir || instance.cwd.starts_with(dir)
}

/// The last `count` lines of `text`, ignoring blank lines at its end.
fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .iter()
        .rposition(|line| !line.trim().is_empty())
        .map_or(0, |last| last + 1);
    let start = end.saturating_sub(count);
    let mut out = lines[start..end].join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use mahavishnu_core::{Preflight, TargetKind};

    /// A target whose launches and stops panic, and whose scope is set by the test.
    struct Panicking {
        name: TargetName,
        scope: std::sync::Mutex<Option<String>>,
    }

    #[async_trait::async_trait]
    impl Target for Panicking {
        fn name(&self) -> &TargetName {
            &self.name
        }
        fn kind(&self) -> TargetKind {
            TargetKind::Pty
        }
        fn location(&self) -> String {
            "nowhere".into()
        }
        fn capabilities(&self) -> mahavishnu_core::Capabilities {
            mahavishnu_core::Capabilities::default()
        }
        async fn preflight(&self) -> Preflight {
            Preflight {
                target: self.name.clone(),
                ready: true,
                detail: String::new(),
            }
        }
        async fn scope(&self) -> Result<Option<String>> {
            Ok(self.scope.lock().unwrap().clone())
        }
        async fn launch(&self, _: &mahavishnu_core::LaunchSpec) -> Result<Observation> {
            panic!("launch blew up")
        }
        async fn list(&self) -> Result<Vec<Observation>> {
            Ok(vec![])
        }
        async fn stop(&self, _: &str, _: Duration) -> Result<()> {
            panic!("stop blew up")
        }
    }

    fn orchestrator(dir: &Path, target: Arc<Panicking>) -> Orchestrator {
        let config = mahavishnu_core::config::ConfigLoader::new()
            .finish()
            .unwrap();
        let store = Store::open(&dir.join("state")).unwrap();
        Orchestrator::new(Arc::new(config), Arc::new(store), vec![target])
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn panicking_launches_and_stops_are_failures_and_scopes_hold() {
        let dir = tempfile::tempdir().unwrap();
        let target = Arc::new(Panicking {
            name: TargetName::builtin(TargetKind::Pty),
            scope: std::sync::Mutex::new(Some("cluster-a".into())),
        });
        let orchestrator = orchestrator(dir.path(), Arc::clone(&target));
        let request = LaunchRequest {
            profile: "shell".into(),
            count: 2,
            target: Some(TargetName::builtin(TargetKind::Pty)),
            cwd: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let outcome = orchestrator.launch_instances(&request).await.unwrap();
        assert!(outcome.instances.is_empty());
        assert_eq!(outcome.errors.len(), 2, "{:?}", outcome.errors);
        assert!(
            outcome.errors[0].contains("ended abnormally"),
            "{:?}",
            outcome.errors
        );
        let failed = orchestrator.store().instances(false).unwrap();
        assert!(failed.iter().all(|i| i.state == InstanceState::Failed));
        assert_eq!(failed[0].labels[SCOPE_LABEL], "cluster-a");

        // A running record whose stop panics reports the failure and stays open.
        let mut running = failed[0].clone();
        running.state = InstanceState::Running;
        orchestrator.store().update_instance(&running).unwrap();
        let closed = orchestrator
            .close_instances(std::slice::from_ref(&running.id), None)
            .await
            .unwrap();
        assert!(!closed[0].closed);
        assert!(
            closed[0]
                .error
                .as_deref()
                .unwrap()
                .contains("ended abnormally")
        );

        // The target now reaches another place: calls on the instance are refused, and listing
        // does not take it for lost.
        *target.scope.lock().unwrap() = Some("cluster-b".into());
        let error = orchestrator
            .close_instances(std::slice::from_ref(&running.id), None)
            .await
            .unwrap()
            .remove(0)
            .error
            .unwrap();
        assert!(
            error.contains("cluster-a") && error.contains("cluster-b"),
            "{error}"
        );
        let listed = orchestrator
            .list_instances(&ListFilter::default())
            .await
            .unwrap();
        let kept = listed.iter().find(|i| i.id == running.id).unwrap();
        assert_eq!(kept.state, InstanceState::Running);
        // The failed one closes without its target.
        let closed = orchestrator
            .close_instances(std::slice::from_ref(&failed[1].id), None)
            .await
            .unwrap();
        assert!(closed[0].closed, "{:?}", closed[0].error);
    }

    #[test]
    fn a_submit_moved_on_when_new_words_appear_or_the_text_leaves() {
        let typed = "Tell me the magic word, please";
        let before = "banner\n> Tell me the magic word, please\n? for shortcuts\n";
        // The Enter became part of the text: the input line grew, nothing else.
        let pasted = "banner\n> Tell me the magic word, please\n  \n? for shortcuts\n";
        assert!(!moved_on(before, before, typed));
        assert!(!moved_on(before, pasted, typed));
        let answered =
            "banner\n > Tell me the magic word, please\n⠋ Thinking (esc to cancel)\n> \n";
        assert!(moved_on(before, answered, typed));
        assert!(
            moved_on(before, "banner\n", typed),
            "the screen was cleared"
        );
        // A CLI still starting: its status line changes, the text stays in the input line.
        let starting = "banner\n> Tell me the magic word, please\n  stub-model default\n";
        assert!(!moved_on(before, starting, typed));
    }

    #[test]
    fn last_lines_skips_the_blank_end_of_the_screen() {
        assert_eq!(last_lines("a\nb\nc\n\n\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\n", 5), "a\n");
        assert_eq!(last_lines("\n\n", 3), "\n");
    }
}
