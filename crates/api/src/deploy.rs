//! Deployments: validate, plan, deploy (a sandcastle, a pipeline, a block, several regions), status,
//! history, traffic, rollback, verify, logs and destroy.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use mahavishnu_core::deploy::{Manifest, PlatformKind, Problem};
use mahavishnu_core::{Error, Result};
use mahavishnu_deploy::{ApplyOptions, Engine, Selection, describe_change};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Api, Operation, Progress, Reply, Returns, define, plural};

pub(crate) fn operations() -> Vec<Operation> {
    vec![
        define(
            "deploy_validate",
            true,
            "Check a deploy manifest (mahavishnu.deploy.toml) and list every problem with its file, \
             line and key: unknown keys, cycles, needs naming nothing, bad paths, secrets given as values, \
             and topics without a Pub/Sub emulator.",
            deploy_validate,
        )
        .returns(Returns::Fields(&[("path", "string"), ("ok", "boolean"), ("problems", "array:object"), ("sandcastle", "string?"), ("waves", "array:array")])),
        define(
            "deploy_plan",
            true,
            "What deploying would change, service by service and region by region, each change with \
             its cause; changes nothing. `changes` is empty when nothing would change.",
            deploy_plan,
        )
        .returns(Returns::Fields(&[("sandcastle", "string"), ("platform", "string"), ("regions", "array:string"), ("changes", "array:object"), ("unchanged", "array:string"), ("notes", "array:string")])),
        define(
            "deploy_sandcastle",
            false,
            "Deploy the whole sandcastle: jobs that gate services first, then services in waves of the \
             graph, each new revision at 0 % until healthy, then released by its rollout steps with a \
             health and error-rate gate at each step. Nothing changed means nothing is done.",
            deploy_sandcastle,
        )
        .returns(Returns::Fields(&[("sandcastle", "string"), ("platform", "string"), ("ok", "boolean"), ("services", "array:object"), ("front_door", "string?"), ("changed", "boolean")])).idempotent(),
        define(
            "deploy_pipeline",
            false,
            "Deploy one pipeline's services, and whatever they need that is not deployed yet.",
            deploy_pipeline,
        )
        .returns(Returns::Fields(&[("sandcastle", "string"), ("platform", "string"), ("ok", "boolean"), ("services", "array:object"), ("front_door", "string?"), ("changed", "boolean")])).idempotent(),
        define(
            "deploy_block",
            false,
            "Deploy one service (a block), and whatever it needs that is not deployed yet.",
            deploy_block,
        )
        .returns(Returns::Fields(&[("sandcastle", "string"), ("platform", "string"), ("ok", "boolean"), ("services", "array:object"), ("front_door", "string?"), ("changed", "boolean")])).idempotent(),
        define(
            "deploy_multi_region",
            false,
            "Deploy the sandcastle to several regions, region by region with a health gate, then point \
             the front door at every healthy region.",
            deploy_multi_region,
        )
        .returns(Returns::Fields(&[("sandcastle", "string"), ("platform", "string"), ("ok", "boolean"), ("services", "array:object"), ("front_door", "string?"), ("changed", "boolean")])).idempotent(),
        define(
            "deployment_status",
            true,
            "Every service per region: revisions, traffic weights, health, URL, restarts, and requests \
             per second, error rate and p50/p99 latency per revision; and the front door.",
            deployment_status,
        )
        .returns(Returns::Fields(&[("sandcastle", "string"), ("platform", "string"), ("regions", "array:object"), ("front_door", "object?")])),
        define(
            "deploy_history",
            true,
            "A service's release history, newest first: the weights of each release and what made it.",
            deploy_history,
        )
        .returns(Returns::List("releases", "object")),
        define(
            "traffic_set",
            false,
            "Release: set a service's traffic weights over its revisions (they add up to 100), or send \
             all of it to one revision.",
            traffic_set,
        )
        .returns(Returns::Fields(&[("service", "string"), ("regions", "array:object")])).idempotent(),
        define(
            "revision_tag",
            false,
            "Give a revision of a service a tag with a URL of its own that reaches that revision \
             alone, for previews, whatever traffic it takes (the tag moves from any other revision); \
             or take the tag away.",
            revision_tag,
        )
        .returns(Returns::List("tags", "object")).idempotent(),
        define(
            "deploy_rollback",
            false,
            "Put a service's traffic back on an earlier revision at once, skipping canary steps (by \
             default the one that served before the current one).",
            deploy_rollback,
        )
        .returns(Returns::Fields(&[("service", "string"), ("regions", "array:object")])).destructive().idempotent(),
        define(
            "deploy_verify",
            true,
            "Check that every service is healthy in every region, every `needs` link answers from the \
             dependent's side, and every topic delivers a probe message to each subscriber.",
            deploy_verify,
        )
        .returns(Returns::Fields(&[("sandcastle", "string"), ("ok", "boolean"), ("checks", "array:object")])),
        define(
            "deploy_logs",
            true,
            "The last log lines of a service (or one revision) in a region.",
            deploy_logs,
        )
        .returns(Returns::List("lines", "string")),
        define(
            "deploy_recover",
            false,
            "Re-adopt what runs after a crash: every sandcastle and region with a supervisor that died \
             gets it started again, which starts its services again (those with secrets wait for the \
             next apply to hand them over).",
            deploy_recover,
        )
        .returns(Returns::List("recovered", "object")).idempotent(),
        define(
            "deploy_destroy",
            false,
            "Stop a revision that takes no traffic, a whole service, or (with no service) the whole \
             sandcastle with its front door.",
            deploy_destroy,
        )
        .returns(Returns::List("destroyed", "object")).destructive().idempotent(),
    ]
}

/// Adds the fields that say which manifest, platform and regions to a parameter type, and `place()`.
macro_rules! with_place {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$field_meta:meta])* pub $field:ident : $type:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $type,)*
            /// The manifest (default: mahavishnu.deploy.toml in the current directory or the nearest above).
            #[serde(default)]
            pub file: Option<PathBuf>,
            /// The platform (default: the manifest's `sandcastle.platform`, else local).
            #[serde(default)]
            pub platform: Option<String>,
            /// Only these regions (default: all of the manifest's).
            #[serde(default)]
            pub regions: Vec<String>,
        }

        impl $name {
            fn place(&self) -> Where {
                Where {
                    file: self.file.clone(),
                    platform: self.platform.clone(),
                    regions: self.regions.clone(),
                }
            }
        }
    };
}

/// Which manifest and where.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Where {
    /// The manifest (default: mahavishnu.deploy.toml in the current directory or the nearest above).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The platform (default: the manifest's `sandcastle.platform`, else local).
    #[serde(default)]
    pub platform: Option<String>,
    /// Only these regions (default: all of the manifest's).
    #[serde(default)]
    pub regions: Vec<String>,
}

impl Api {
    fn manifest(&self, file: Option<&PathBuf>) -> Result<Manifest> {
        let path = match file {
            Some(file) => self.absolute(file),
            None => Manifest::find(self.cwd())?,
        };
        Manifest::load(&path)
    }

    /// The engine for `platform` (default: the manifest's), and the manifest as it sees it.
    fn engine(&self, manifest: &Manifest, platform: Option<&str>) -> Result<(Manifest, Engine)> {
        let kind = platform.map(str::parse::<PlatformKind>).transpose()?;
        self.deployments_here()?.engine(manifest, kind)
    }

    /// The deployments service, or why this face has none.
    fn deployments_here(&self) -> Result<&mahavishnu_deploy::Deployments> {
        self.deployments()
            .ok_or_else(|| Error::Failed("deployments are not available in this server".into()))
    }

    fn prepare(&self, place: &Where) -> Result<(Manifest, Engine)> {
        let manifest = self.manifest(place.file.as_ref())?;
        self.engine(&manifest, place.platform.as_deref())
    }
}

/// The result of a validation.
#[derive(Debug, Serialize)]
pub struct Validation {
    /// The manifest checked.
    pub path: PathBuf,
    /// Whether it has no problem.
    pub ok: bool,
    /// Every problem.
    pub problems: Vec<Problem>,
    /// The sandcastle's name, when the manifest could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandcastle: Option<String>,
    /// Its services, in deploy waves.
    pub waves: Vec<Vec<String>>,
}

/// Which manifest to check.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateParams {
    /// The manifest (default: mahavishnu.deploy.toml in the current directory or the nearest above).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

async fn deploy_validate(api: Api, params: ValidateParams, _: Progress) -> Result<Reply> {
    let path = match &params.file {
        Some(file) => api.absolute(file),
        None => Manifest::find(api.cwd())?,
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Invalid(format!("cannot read the manifest {}: {e}", path.display())))?;
    let validation =
        match Manifest::parse(&path, &text) {
            Ok(manifest) => {
                let mut problems = Vec::new();
                if let Ok((manifest, engine)) = api.engine(&manifest, None) {
                    problems.extend(engine.check_environment(&manifest).into_iter().map(
                        |message| Problem {
                            line: None,
                            key: "topics".into(),
                            message,
                        },
                    ));
                }
                // Each platform the manifest configures checks its own settings (reading nothing
                // remote): a mistake under [platforms.cloudrun] shows before any deploy.
                for kind in manifest.platforms.keys() {
                    if let Err(e) = api.engine(&manifest, Some(kind.as_str())) {
                        let message = e.to_string();
                        let section = format!("platforms.{}", kind.as_str());
                        // "platforms.cloudrun.project: ..." names its own key.
                        let (key, message) = match message.split_once(": ") {
                            Some((key, rest)) if key.starts_with(&section) => {
                                (key.to_string(), rest.to_string())
                            }
                            _ => (section, message),
                        };
                        problems.push(Problem {
                            line: Manifest::line_of(&text, &key),
                            key,
                            message,
                        });
                    }
                }
                Validation {
                    path,
                    ok: problems.is_empty(),
                    problems,
                    sandcastle: Some(manifest.sandcastle.name.clone()),
                    waves: manifest.waves(),
                }
            }
            Err(problems) => Validation {
                path,
                ok: false,
                problems,
                sandcastle: None,
                waves: Vec::new(),
            },
        };
    let summary = if validation.ok {
        format!(
            "{} is valid: sandcastle {}, {}",
            validation.path.display(),
            validation.sandcastle.as_deref().unwrap_or("?"),
            plural(
                validation.waves.iter().map(Vec::len).sum(),
                "service",
                "services"
            )
        )
    } else {
        mahavishnu_core::deploy::describe_problems(&validation.path, &validation.problems)
    };
    Reply::new(&validation, summary)
}

with_place! {
    /// What to plan.
    pub struct PlanParams {
        /// Plan only this block (service) and what it needs that is missing.
        #[serde(default)]
        pub block: Option<String>,
        /// Plan only this pipeline and what it needs that is missing.
        #[serde(default)]
        pub pipeline: Option<String>,
    }
}

fn selection(block: Option<String>, pipeline: Option<String>) -> Result<Selection> {
    match (block, pipeline) {
        (Some(_), Some(_)) => Err(Error::Invalid(
            "give a block or a pipeline, not both".into(),
        )),
        (Some(block), None) => Ok(Selection::Block(block)),
        (None, Some(pipeline)) => Ok(Selection::Pipeline(pipeline)),
        (None, None) => Ok(Selection::Sandcastle),
    }
}

async fn deploy_plan(api: Api, params: PlanParams, _: Progress) -> Result<Reply> {
    let place = params.place();
    let (manifest, engine) = api.prepare(&place)?;
    let selection = selection(params.block, params.pipeline)?;
    let plan = engine.plan(&manifest, &selection, &place.regions).await?;
    let mut lines: Vec<String> = plan.changes.iter().map(describe_change).collect();
    if lines.is_empty() {
        lines.push(format!(
            "nothing to change: {} in {} is as the manifest wants",
            plan.sandcastle,
            plan.regions.join(", ")
        ));
    }
    lines.extend(plan.notes.iter().map(|note| format!("note: {note}")));
    Reply::new(&plan, lines.join("\n"))
}

with_place! {
    /// How to deploy.
    pub struct ApplyParams {
        /// Continue an apply that was interrupted (it converges from what runs now).
        #[serde(default)]
        pub resume: bool,
    }
}

with_place! {
    /// Which part to deploy.
    pub struct PartParams {
        /// The block (service) or pipeline name.
        pub name: String,
        /// Continue an apply that was interrupted (it converges from what runs now).
        #[serde(default)]
        pub resume: bool,
    }
}

impl PartParams {
    fn apply(self) -> ApplyParams {
        let place = self.place();
        ApplyParams {
            resume: self.resume,
            file: place.file,
            platform: place.platform,
            regions: place.regions,
        }
    }
}

async fn apply(
    api: Api,
    params: ApplyParams,
    selection: Selection,
    progress: Progress,
) -> Result<Reply> {
    let place = params.place();
    let (manifest, engine) = api.prepare(&place)?;
    let steps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let options = ApplyOptions {
        resume: params.resume,
        progress: Arc::new(move |line: String| {
            let done = steps.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            progress.report(done as f64, None, line);
        }),
    };
    let report = engine
        .apply(&manifest, &selection, &place.regions, &options)
        .await?;
    let describe = |outcome: &mahavishnu_deploy::ServiceOutcome| {
        format!(
            "{}/{}: {}{}{}",
            outcome.region,
            outcome.service,
            outcome.outcome,
            outcome
                .revision
                .as_ref()
                .map_or_else(String::new, |r| format!(" {r}")),
            outcome
                .detail
                .as_ref()
                .map_or_else(String::new, |d| format!(": {d}"))
        )
    };
    if !report.ok {
        // What went wrong, and what was put back; the rest is in the report.
        let lines: Vec<String> = report
            .services
            .iter()
            .filter(|o| o.went_wrong())
            .map(describe)
            .collect();
        return Ok(
            Reply::new(&report, format!("the apply failed:\n{}", lines.join("\n")))?.failed(),
        );
    }
    let mut lines: Vec<String> = report
        .services
        .iter()
        .filter(|outcome| outcome.outcome != "unchanged")
        .map(describe)
        .collect();
    if !report.changed {
        lines.push(format!(
            "nothing to change: {} is as the manifest wants",
            report.sandcastle
        ));
    }
    if let Some(url) = &report.front_door {
        lines.push(format!("front door: {url}"));
    }
    Reply::new(&report, lines.join("\n"))
}

async fn deploy_sandcastle(api: Api, params: ApplyParams, progress: Progress) -> Result<Reply> {
    apply(api, params, Selection::Sandcastle, progress).await
}

async fn deploy_pipeline(api: Api, params: PartParams, progress: Progress) -> Result<Reply> {
    let name = params.name.clone();
    apply(api, params.apply(), Selection::Pipeline(name), progress).await
}

async fn deploy_block(api: Api, params: PartParams, progress: Progress) -> Result<Reply> {
    let name = params.name.clone();
    apply(api, params.apply(), Selection::Block(name), progress).await
}

async fn deploy_multi_region(api: Api, params: ApplyParams, progress: Progress) -> Result<Reply> {
    let manifest = api.manifest(params.file.as_ref())?;
    let regions = if params.regions.is_empty() {
        manifest.sandcastle.regions.clone()
    } else {
        params.regions.clone()
    };
    if regions.len() < 2 {
        return Err(Error::Invalid(format!(
            "{} has one region ({}); list several under sandcastle.regions, or use deploy_sandcastle",
            manifest.sandcastle.name,
            regions.join(", ")
        )));
    }
    apply(api, params, Selection::Sandcastle, progress).await
}

async fn deployment_status(api: Api, params: Where, _: Progress) -> Result<Reply> {
    let (manifest, engine) = api.prepare(&params)?;
    let report = engine.status(&manifest, &params.regions).await?;
    let mut lines = Vec::new();
    for region in &report.regions {
        if !region.deployed {
            lines.push(format!("{}: not deployed", region.region));
            continue;
        }
        for service in &region.services {
            let weights = service.weights();
            lines.push(format!(
                "{}/{}: {} {}",
                region.region,
                service.name,
                service.url.as_deref().unwrap_or("(no URL)"),
                mahavishnu_deploy::plan::describe_weights(&weights)
            ));
        }
    }
    if let Some(door) = &report.front_door {
        lines.push(format!("front door: {}", door.url));
    }
    Reply::new(&report, lines.join("\n"))
}

/// Whose history.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// The service.
    pub service: String,
    /// Only this region.
    #[serde(default)]
    pub region: Option<String>,
    /// At most this many releases (default 50).
    #[serde(default)]
    pub limit: Option<usize>,
    /// The manifest (default: found from the current directory).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The platform (default: the manifest's).
    #[serde(default)]
    pub platform: Option<String>,
}

async fn deploy_history(api: Api, params: HistoryParams, _: Progress) -> Result<Reply> {
    let manifest = api.manifest(params.file.as_ref())?;
    let (manifest, engine) = api.engine(&manifest, params.platform.as_deref())?;
    let releases = engine.history(
        &manifest,
        &params.service,
        params.region.as_deref(),
        params.limit.unwrap_or(50),
    )?;
    let summary = if releases.is_empty() {
        format!("`{}` has no releases yet", params.service)
    } else {
        releases
            .iter()
            .map(|release| {
                format!(
                    "{} {}: {} ({})",
                    release.at,
                    release.region,
                    mahavishnu_deploy::plan::describe_weights(&release.weights),
                    release.cause
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Reply::list("releases", &releases, summary)
}

with_place! {
    /// The traffic to set.
    pub struct TrafficParams {
        /// The service.
        pub service: String,
        /// Revision names and their percentages, adding up to 100.
        #[serde(default)]
        pub weights: BTreeMap<String, u8>,
        /// Send all traffic to this revision instead.
        #[serde(default)]
        pub to: Option<String>,
    }
}

fn describe_traffic(report: &mahavishnu_deploy::TrafficReport) -> String {
    report
        .regions
        .iter()
        .map(|change| {
            format!(
                "{}/{}: {} -> {}",
                change.region,
                report.service,
                mahavishnu_deploy::plan::describe_weights(&change.before),
                mahavishnu_deploy::plan::describe_weights(&change.after)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn traffic_set(api: Api, params: TrafficParams, _: Progress) -> Result<Reply> {
    let (manifest, engine) = api.prepare(&params.place())?;
    let weights: Vec<(String, u8)> = match (&params.to, params.weights.is_empty()) {
        (Some(to), true) => vec![(to.clone(), 100)],
        (None, false) => params.weights.clone().into_iter().collect(),
        _ => {
            return Err(Error::Invalid(
                "give the weights (REV=90,REV2=10) or one revision to send everything to (--to REV)".into(),
            ));
        }
    };
    let report = engine
        .release(
            &manifest,
            &params.service,
            &weights,
            &params.place().regions,
            "release",
        )
        .await?;
    Reply::new(&report, describe_traffic(&report))
}

with_place! {
    /// What to roll back.
    pub struct RollbackParams {
        /// The service.
        pub service: String,
        /// The revision to put all traffic on (default: the one that served before the current one).
        #[serde(default)]
        pub to: Option<String>,
    }
}

async fn deploy_rollback(api: Api, params: RollbackParams, _: Progress) -> Result<Reply> {
    let (manifest, engine) = api.prepare(&params.place())?;
    let report = engine
        .rollback(
            &manifest,
            &params.service,
            params.to.as_deref(),
            &params.place().regions,
        )
        .await?;
    Reply::new(&report, describe_traffic(&report))
}

async fn deploy_verify(api: Api, params: Where, _: Progress) -> Result<Reply> {
    let (manifest, engine) = api.prepare(&params)?;
    let report = engine.verify(&manifest, &params.regions).await?;
    let lines: Vec<String> = report
        .checks
        .iter()
        .map(|check| {
            format!(
                "{} {}: {} ({})",
                if check.holds { "ok  " } else { "FAIL" },
                check.region,
                check.check,
                check.detail
            )
        })
        .collect();
    Reply::new(&report, lines.join("\n"))
}

/// Whose logs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsParams {
    /// The service.
    pub service: String,
    /// Only this revision.
    #[serde(default)]
    pub revision: Option<String>,
    /// The region (default: the manifest's first).
    #[serde(default)]
    pub region: Option<String>,
    /// How many of the last lines (default 100).
    #[serde(default)]
    pub tail: Option<usize>,
    /// The manifest (default: found from the current directory).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The platform (default: the manifest's).
    #[serde(default)]
    pub platform: Option<String>,
}

async fn deploy_logs(api: Api, params: LogsParams, _: Progress) -> Result<Reply> {
    let manifest = api.manifest(params.file.as_ref())?;
    let (manifest, engine) = api.engine(&manifest, params.platform.as_deref())?;
    let stream = engine
        .logs(
            &manifest,
            &params.service,
            params.revision.as_deref(),
            params.region.as_deref(),
            params.tail.unwrap_or(100),
            false,
        )
        .await?;
    let lines: Vec<String> = stream
        .filter_map(|line| async move { line.ok() })
        .collect()
        .await;
    let summary = lines.join("\n");
    Reply::list("lines", &lines, summary)
}

with_place! {
    /// What to stop.
    pub struct DestroyParams {
        /// The service (default: the whole sandcastle).
        #[serde(default)]
        pub service: Option<String>,
        /// Only this revision of the service; refused while it takes traffic.
        #[serde(default)]
        pub revision: Option<String>,
    }
}

async fn deploy_destroy(api: Api, params: DestroyParams, _: Progress) -> Result<Reply> {
    let (manifest, engine) = api.prepare(&params.place())?;
    if params.revision.is_some() && params.service.is_none() {
        return Err(Error::Invalid(
            "a revision belongs to a service; name the service too".into(),
        ));
    }
    let destroyed = engine
        .destroy(
            &manifest,
            params.service.as_deref(),
            params.revision.as_deref(),
            &params.place().regions,
        )
        .await?;
    let mut summary = if destroyed.is_empty() {
        "nothing to destroy".to_string()
    } else {
        format!("destroyed {}", destroyed.join(", "))
    };
    if let (Some(service), None) = (&params.service, &params.revision) {
        let dependents: Vec<&str> = manifest
            .services
            .iter()
            .filter(|(_, spec)| spec.needs.contains(service))
            .map(|(name, _)| name.as_str())
            .collect();
        if !destroyed.is_empty() && !dependents.is_empty() {
            summary.push_str(&format!(
                "\nnote: {} need {service}; it gets its URL back when it is deployed again",
                dependents.join(", ")
            ));
        }
    }
    Reply::list("destroyed", &destroyed, summary)
}

/// Nothing to say: recovery covers every sandcastle of this state directory.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverParams {}

async fn deploy_recover(api: Api, _: RecoverParams, _: Progress) -> Result<Reply> {
    let recovered = api.deployments_here()?.recover().await?;
    let summary = if recovered.is_empty() {
        "every supervisor answers; nothing to recover".to_string()
    } else {
        let names: Vec<String> = recovered.iter().map(ToString::to_string).collect();
        format!("started again: {}", names.join(", "))
    };
    Reply::list("recovered", &recovered, summary)
}

with_place! {
    /// The tag to set.
    pub struct TagParams {
        /// The service.
        pub service: String,
        /// The revision.
        pub revision: String,
        /// The tag (lower-case letters, digits and `-`); absent to take the revision's tag away.
        #[serde(default)]
        pub tag: Option<String>,
    }
}

async fn revision_tag(api: Api, params: TagParams, _: Progress) -> Result<Reply> {
    let (manifest, engine) = api.prepare(&params.place())?;
    let changes = engine
        .tag(
            &manifest,
            &params.service,
            &params.revision,
            params.tag.as_deref(),
            &params.place().regions,
        )
        .await?;
    let lines: Vec<String> = changes
        .iter()
        .map(|change| match (&change.tag, &change.url) {
            (Some(tag), Some(url)) => format!(
                "{}/{}: {} tagged {tag}: {url}",
                change.region, params.service, change.revision
            ),
            _ => format!(
                "{}/{}: {} has no tag",
                change.region, params.service, change.revision
            ),
        })
        .collect();
    Reply::list("tags", &changes, lines.join("\n"))
}
