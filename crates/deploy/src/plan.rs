//! The plan: a pure function of wanted and observed state into changes, each with its cause, the way
//! Nomad's `job plan` shows them. `apply` makes the same decisions one service at a time.

use std::collections::BTreeMap;

use mahavishnu_core::deploy::{Health, Observed, ObservedService, RevisionSpec, ServiceKind};
use serde::{Deserialize, Serialize};

use crate::wanted::WantedService;

/// What would happen to a service in a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A new service: its first revision, released at 100 % once healthy.
    Create,
    /// A new revision, released by the rollout steps once healthy.
    Update,
    /// A revision that exists and must be started again (secrets to hand over, a failed job).
    Restart,
    /// Only traffic moves: the wanted revision exists but does not take all of it.
    Release,
    /// A job to run (again).
    RunJob,
    /// It would be started, but the platform cannot run it (or its secrets cannot be read here);
    /// the last cause says why.
    Blocked,
}

impl Action {
    /// The word plans show.
    pub fn label(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Restart => "restart",
            Action::Release => "release",
            Action::RunJob => "run job",
            Action::Blocked => "blocked",
        }
    }
}

/// One change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The region.
    pub region: String,
    /// The service.
    pub service: String,
    /// What it is.
    pub kind: ServiceKind,
    /// What would happen.
    pub action: Action,
    /// The revision it would deploy or release, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Why: each cause in a few words (`new service`, `env LOG_LEVEL changed`, `traffic a 90 / b 10 -> b 100`).
    pub causes: Vec<String>,
}

/// What a plan found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The sandcastle.
    pub sandcastle: String,
    /// The platform.
    pub platform: String,
    /// The regions planned.
    pub regions: Vec<String>,
    /// The changes, region by region, in deploy order.
    pub changes: Vec<Change>,
    /// Services that would not change, as `region/service`.
    pub unchanged: Vec<String>,
    /// Things worth knowing that change nothing (a service running that the manifest no longer has).
    pub notes: Vec<String>,
    /// The platform's own manifests of what would be applied (Kubernetes objects), where it has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<serde_json::Value>,
}

impl Plan {
    /// Whether applying it would change anything.
    pub fn changes_anything(&self) -> bool {
        !self.changes.is_empty()
    }
}

/// What should happen to one wanted service, given what runs: `None` when nothing.
pub fn decide(
    region: &str,
    wanted: &WantedService,
    observed: Option<&ObservedService>,
) -> Option<Change> {
    let mut change = decide_unblocked(region, wanted, observed)?;
    // What keeps a revision from being started matters only when one would be.
    if let Some(reason) = &wanted.blocked
        && matches!(
            change.action,
            Action::Create | Action::Update | Action::Restart | Action::RunJob
        )
    {
        change.causes.push(reason.clone());
        change.action = Action::Blocked;
    }
    Some(change)
}

fn decide_unblocked(
    region: &str,
    wanted: &WantedService,
    observed: Option<&ObservedService>,
) -> Option<Change> {
    let change = |action: Action, revision: Option<String>, causes: Vec<String>| {
        Some(Change {
            region: region.to_string(),
            service: wanted.name.clone(),
            kind: wanted.kind,
            action,
            revision,
            causes,
        })
    };
    let spec = wanted.spec.as_ref()?;
    let revision = wanted.revision();
    let Some(observed) = observed.filter(|observed| !observed.revisions.is_empty()) else {
        let mut causes = vec!["new service".to_string()];
        causes.extend(wanted.pending.iter().cloned());
        let action = if spec.kind == ServiceKind::Job {
            Action::RunJob
        } else {
            Action::Create
        };
        return change(action, revision, causes);
    };
    if let Some(name) = &revision
        && let Some(existing) = observed.revision(name)
    {
        if spec.kind == ServiceKind::Job {
            return match &existing.health {
                Health::Failed(reason) => change(
                    Action::RunJob,
                    revision,
                    vec![format!("its last run failed: {reason}")],
                ),
                _ => None,
            };
        }
        if let Health::Failed(reason) = &existing.health {
            return change(Action::Restart, revision, vec![reason.clone()]);
        }
        let weights = observed.weights();
        if weights == [(name.clone(), 100)] {
            return None;
        }
        return change(
            Action::Release,
            revision.clone(),
            vec![format!(
                "traffic {} -> {name} 100",
                describe_weights(&weights)
            )],
        );
    }
    let current = observed.serving().or_else(|| observed.revisions.last());
    let mut causes = current.map_or_else(Vec::new, |current| {
        spec_changes(&current.spec, spec, &wanted.pending)
    });
    if causes.is_empty() {
        causes.push("new revision".into());
    }
    causes.extend(wanted.pending.iter().cloned());
    let action = if spec.kind == ServiceKind::Job {
        Action::RunJob
    } else {
        Action::Update
    };
    change(action, revision, causes)
}

/// Computes the plan of every region: `wanted` by region in deploy order, `observed` by region.
pub fn compute(
    sandcastle: &str,
    platform: &str,
    wanted: &[(String, Vec<WantedService>)],
    observed: &BTreeMap<String, Observed>,
) -> Plan {
    let mut plan = Plan {
        sandcastle: sandcastle.to_string(),
        platform: platform.to_string(),
        regions: wanted.iter().map(|(region, _)| region.clone()).collect(),
        ..Plan::default()
    };
    let empty = Observed::default();
    for (region, services) in wanted {
        let here = observed.get(region).unwrap_or(&empty);
        for service in services {
            if service.spec.is_none() {
                continue;
            }
            match decide(region, service, here.services.get(&service.name)) {
                Some(change) => plan.changes.push(change),
                None => plan.unchanged.push(format!("{region}/{}", service.name)),
            }
        }
    }
    for (region, here) in observed {
        let Some((_, services)) = wanted
            .iter()
            .find(|(wanted_region, _)| wanted_region == region)
        else {
            continue;
        };
        for name in here.services.keys() {
            if !services.iter().any(|service| &service.name == name) {
                plan.notes.push(format!(
                    "{region}/{name} runs but is not wanted here; `mahavishnu deploy destroy {name}` removes it"
                ));
            }
        }
    }
    plan
}

/// `a 90 / b 10`.
pub fn describe_weights(weights: &[(String, u8)]) -> String {
    if weights.is_empty() {
        return "none".into();
    }
    weights
        .iter()
        .map(|(name, weight)| format!("{name} {weight}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// What differs between two revision specs, in a few words each. Variables still `pending` are left
/// out: their cause is given on its own.
pub fn spec_changes(
    before: &RevisionSpec,
    after: &RevisionSpec,
    pending: &[String],
) -> Vec<String> {
    let mut causes = Vec::new();
    let mut field = |name: &str, changed: bool| {
        if changed {
            causes.push(format!("{name} changed"));
        }
    };
    field("kind", before.kind != after.kind);
    field("run", before.run != after.run);
    field("image", before.image != after.image);
    field("dir", before.dir != after.dir);
    field("health", before.health != after.health);
    field("scale", before.scale != after.scale);
    field("resources", before.resources != after.resources);
    field("ingress", before.ingress != after.ingress);
    field("timeout", before.timeout != after.timeout);
    let is_pending = |name: &str| {
        pending
            .iter()
            .any(|item| item.starts_with(&format!("{name}:")))
    };
    for (what, old, new) in [
        ("env", string_map(&before.env), string_map(&after.env)),
        (
            "secret",
            before
                .secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            after
                .secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        ),
    ] {
        let old: BTreeMap<String, String> = old;
        let new: BTreeMap<String, String> = new;
        for name in old
            .keys()
            .chain(new.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            if is_pending(name) {
                continue;
            }
            match (old.get(name), new.get(name)) {
                (None, Some(_)) => causes.push(format!("{what} {name} added")),
                (Some(_), None) => causes.push(format!("{what} {name} removed")),
                (Some(a), Some(b)) if a != b => causes.push(format!("{what} {name} changed")),
                _ => {}
            }
        }
    }
    causes
}

fn string_map(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mahavishnu_core::deploy::{ObservedRevision, ScaleSpec};

    fn spec(service: &str, run: &str) -> RevisionSpec {
        RevisionSpec {
            service: service.into(),
            kind: ServiceKind::Http,
            run: Some(run.into()),
            image: None,
            dir: "/app".into(),
            env: BTreeMap::from([("LOG_LEVEL".to_string(), "info".to_string())]),
            secrets: BTreeMap::new(),
            health: None,
            scale: ScaleSpec::default(),
            resources: Default::default(),
            ingress: Default::default(),
            timeout: None,
            listens: true,
            service_account: None,
            invoker: None,
        }
    }

    fn wanted(spec: RevisionSpec) -> WantedService {
        WantedService {
            name: spec.service.clone(),
            kind: spec.kind,
            spec: Some(spec),
            pending: Vec::new(),
            blocked: None,
        }
    }

    fn running(specs: &[(RevisionSpec, u8)], health: Health) -> ObservedService {
        ObservedService {
            name: specs[0].0.service.clone(),
            kind: ServiceKind::Http,
            url: Some("http://127.0.0.1:1".into()),
            revisions: specs
                .iter()
                .map(|(spec, weight)| ObservedRevision {
                    name: spec.revision_name(),
                    spec: spec.clone(),
                    weight: *weight,
                    tag: None,
                    tag_url: None,
                    health: health.clone(),
                    copies: Vec::new(),
                    metrics: None,
                    created: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_new_service_is_created_and_a_running_one_is_left_alone() {
        let web = spec("web", "serve");
        let created = decide("local", &wanted(web.clone()), None).expect("a change");
        assert_eq!(created.action, Action::Create);
        assert_eq!(created.causes, ["new service"]);
        let observed = running(&[(web.clone(), 100)], Health::Healthy);
        assert_eq!(decide("local", &wanted(web), Some(&observed)), None);
    }

    #[test]
    fn a_changed_spec_is_an_update_that_names_what_changed() {
        let before = spec("web", "serve");
        let mut after = spec("web", "serve --fast");
        after.env.insert("LOG_LEVEL".into(), "debug".into());
        after.env.insert("NEW".into(), "1".into());
        let observed = running(&[(before, 100)], Health::Healthy);
        let change = decide("local", &wanted(after.clone()), Some(&observed)).expect("a change");
        assert_eq!(change.action, Action::Update);
        assert_eq!(change.revision, Some(after.revision_name()));
        assert_eq!(
            change.causes,
            ["run changed", "env LOG_LEVEL changed", "env NEW added"]
        );
    }

    #[test]
    fn a_canary_left_part_way_is_a_release_and_a_revision_without_its_secrets_a_restart() {
        let old = spec("web", "old");
        let new = spec("web", "new");
        let observed = running(&[(old.clone(), 90), (new.clone(), 10)], Health::Healthy);
        let change = decide("local", &wanted(new.clone()), Some(&observed)).expect("a change");
        assert_eq!(change.action, Action::Release);
        assert_eq!(
            change.causes,
            [format!(
                "traffic {} 90 / {} 10 -> {} 100",
                old.revision_name(),
                new.revision_name(),
                new.revision_name()
            )]
        );
        let lost = running(&[(new.clone(), 100)], Health::Failed("secrets".into()));
        assert_eq!(
            decide("local", &wanted(new), Some(&lost)).map(|c| c.action),
            Some(Action::Restart)
        );
    }

    #[test]
    fn a_job_runs_when_new_or_failed_and_not_when_it_succeeded() {
        let mut job = spec("migrate", "migrate");
        job.kind = ServiceKind::Job;
        job.listens = false;
        let mut wanted_job = wanted(job.clone());
        wanted_job.kind = ServiceKind::Job;
        assert_eq!(
            decide("r", &wanted_job, None).map(|c| c.action),
            Some(Action::RunJob)
        );
        let done = running(&[(job.clone(), 0)], Health::Succeeded);
        assert_eq!(decide("r", &wanted_job, Some(&done)), None);
        let failed = running(&[(job, 0)], Health::Failed("exit 3".into()));
        assert_eq!(
            decide("r", &wanted_job, Some(&failed)).map(|c| c.action),
            Some(Action::RunJob)
        );
    }

    #[test]
    fn what_blocks_a_start_matters_only_when_something_would_start() {
        let web = spec("web", "serve");
        let mut blocked = wanted(web.clone());
        blocked.blocked = Some("SECRET: env:X cannot be resolved here".into());
        let change = decide("local", &blocked, None).expect("a change");
        assert_eq!(change.action, Action::Blocked);
        assert_eq!(
            change.causes,
            ["new service", "SECRET: env:X cannot be resolved here"]
        );
        let running = running(&[(web, 100)], Health::Healthy);
        assert_eq!(decide("local", &blocked, Some(&running)), None);
    }

    #[test]
    fn pending_inputs_are_causes_of_their_own_and_no_revision_is_named() {
        let mut api = wanted(spec("api", "serve"));
        api.pending
            .push("DB_URL: known once `db` is deployed".into());
        let change = decide("local", &api, None).expect("a change");
        assert_eq!(change.revision, None);
        assert_eq!(
            change.causes,
            ["new service", "DB_URL: known once `db` is deployed"]
        );
    }

    #[test]
    fn the_plan_covers_every_region_and_notes_what_runs_unwanted() {
        let web = spec("web", "serve");
        let old = spec("old", "serve");
        let wanted_regions = vec![
            ("a".to_string(), vec![wanted(web.clone())]),
            ("b".to_string(), vec![wanted(web.clone())]),
        ];
        let mut observed = BTreeMap::new();
        let mut a = Observed::default();
        a.services.insert(
            "web".into(),
            running(&[(web.clone(), 100)], Health::Healthy),
        );
        a.services
            .insert("old".into(), running(&[(old, 100)], Health::Healthy));
        observed.insert("a".to_string(), a);
        let plan = compute("shop", "local", &wanted_regions, &observed);
        assert_eq!(plan.unchanged, ["a/web"]);
        assert_eq!(plan.changes.len(), 1);
        assert_eq!(plan.changes[0].region, "b");
        assert!(
            plan.notes[0].starts_with("a/old runs but is not wanted"),
            "{:?}",
            plan.notes
        );
        assert!(plan.changes_anything());
    }
}
