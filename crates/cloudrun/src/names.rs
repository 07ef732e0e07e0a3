//! How Mahavishnu names and marks what it creates on Cloud Run: one resource per service and region,
//! named after the sandcastle and the service, its revisions after the spec's hash, and labels that
//! say who made it.

use mahavishnu_core::deploy::{Placement, RevisionSpec};

/// Marks every resource Mahavishnu created, so that it never touches anything else.
pub const MANAGED_BY: (&str, &str) = ("managed-by", "mahavishnu");
/// The sandcastle a resource belongs to.
pub const SANDCASTLE_LABEL: &str = "mahavishnu-sandcastle";
/// The manifest's name of the service.
pub const SERVICE_LABEL: &str = "mahavishnu-service";
/// The first 32 hex digits of the spec's hash (a label value holds at most 63 characters).
pub const SPEC_LABEL: &str = "mahavishnu-spec";
/// The whole spec a revision was made from (references, never secret values), as JSON.
pub const SPEC_ANNOTATION: &str = "mahavishnu.dev/spec";
/// The engine's name of the revision (`web-1a2b3c4d`).
pub const REVISION_ANNOTATION: &str = "mahavishnu.dev/revision";

/// Cloud Run's longest service, job and worker pool name.
const LONGEST_NAME: usize = 49;

/// The Cloud Run name of `service` in a placement: `SANDCASTLE-SERVICE`.
pub fn resource_id(at: &Placement, service: &str) -> String {
    format!("{}-{service}", at.sandcastle)
}

/// The Cloud Run name of the engine's revision `revision` (`shop-web-1a2b3c4d`): Cloud Run wants a
/// revision's name to start with its service's.
pub fn cloud_revision(at: &Placement, revision: &str) -> String {
    format!("{}-{revision}", at.sandcastle)
}

/// The engine's name of a Cloud Run revision, when it is one of Mahavishnu's.
pub fn engine_revision(at: &Placement, cloud: &str) -> Option<String> {
    let short = cloud.rsplit('/').next().unwrap_or(cloud);
    short
        .strip_prefix(&format!("{}-", at.sandcastle))
        .map(str::to_string)
}

/// Why `service` cannot have a Cloud Run name in this placement, if it cannot.
pub fn invalid_name(at: &Placement, service: &str) -> Option<String> {
    let id = resource_id(at, service);
    let valid = id.len() <= LONGEST_NAME
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    (!valid).then(|| {
        format!(
            "its Cloud Run name `{id}` (sandcastle-service) must be at most {LONGEST_NAME} lowercase \
             letters, digits and hyphens, starting with a letter; rename the sandcastle or the service"
        )
    })
}

/// A label value made of what Cloud Run takes: lowercase letters, digits, `_` and `-`, at most 63.
pub fn label_value(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .take(63)
        .collect()
}

/// The labels every resource of `spec` in `at` carries.
pub fn labels(at: &Placement, spec: &RevisionSpec) -> Vec<(String, String)> {
    vec![
        (MANAGED_BY.0.into(), MANAGED_BY.1.into()),
        (SANDCASTLE_LABEL.into(), label_value(&at.sandcastle)),
        (SERVICE_LABEL.into(), label_value(&spec.service)),
        (SPEC_LABEL.into(), spec.hash()[..32].to_string()),
    ]
}

/// Whether labels mark a resource of this sandcastle, made by Mahavishnu.
pub fn is_ours<'a>(
    at: &Placement,
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Option<String> {
    let mut managed = false;
    let mut sandcastle = false;
    let mut service = None;
    for (key, value) in labels {
        match key.as_str() {
            k if k == MANAGED_BY.0 => managed = value == MANAGED_BY.1,
            SANDCASTLE_LABEL => sandcastle = *value == label_value(&at.sandcastle),
            SERVICE_LABEL => service = Some(value.clone()),
            _ => {}
        }
    }
    service.filter(|_| managed && sandcastle)
}

/// Cloud Run's host of a service (`shop-web-123456789012.europe-west1.run.app`), or of one of its
/// tags (`blue---shop-web-….run.app`).
pub fn run_app_host(id: &str, number: &str, region: &str, tag: Option<&str>) -> String {
    match tag {
        Some(tag) => format!("{tag}---{id}-{number}.{region}.run.app"),
        None => format!("{id}-{number}.{region}.run.app"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Placement {
        Placement {
            sandcastle: "shop".into(),
            region: "europe-west1".into(),
        }
    }

    #[test]
    fn revisions_carry_the_sandcastle_and_come_back() {
        let cloud = cloud_revision(&at(), "web-1a2b3c4d");
        assert_eq!(cloud, "shop-web-1a2b3c4d");
        let full = format!("projects/p/locations/l/services/shop-web/revisions/{cloud}");
        assert_eq!(
            engine_revision(&at(), &full).as_deref(),
            Some("web-1a2b3c4d")
        );
        assert_eq!(engine_revision(&at(), "other-web-00001-abc"), None);
    }

    #[test]
    fn names_cloud_run_refuses_are_caught_before_any_call() {
        assert!(invalid_name(&at(), "web").is_none());
        assert!(invalid_name(&at(), "Web").is_some());
        assert!(invalid_name(&at(), "web_api").is_some());
        assert!(invalid_name(&at(), &"w".repeat(60)).is_some());
    }

    #[test]
    fn the_run_app_host_is_known_before_deploy() {
        assert_eq!(
            run_app_host("shop-web", "123456789012", "europe-west1", None),
            "shop-web-123456789012.europe-west1.run.app"
        );
        assert_eq!(
            run_app_host("shop-web", "1", "us-central1", Some("blue")),
            "blue---shop-web-1.us-central1.run.app"
        );
    }

    #[test]
    fn label_values_are_what_cloud_run_takes() {
        assert_eq!(label_value("Shop.EU"), "shop_eu");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }
}
