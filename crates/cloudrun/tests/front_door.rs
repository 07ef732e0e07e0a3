//! The front door (the global external Application Load Balancer) against the Google Cloud fake: the
//! chain of Compute resources it makes, that a second ensure writes nothing, that regions come and
//! go through the backend service alone, that requests reach a healthy region, and that destroy
//! leaves nothing.

mod support;

use std::collections::BTreeSet;
use std::sync::Mutex;

use mahavishnu_cloudrun::FrontDoor;
use support::{Fake, PROJECT};

const GLOBAL: [&str; 7] = [
    "forwardingRules",
    "targetHttpsProxies",
    "targetHttpProxies",
    "sslCertificates",
    "urlMaps",
    "backendServices",
    "addresses",
];

fn regions(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

fn compute(fake: &Fake, path: &str) -> (u16, serde_json::Value) {
    fake.json("GET", &format!("/compute/v1/projects/{PROJECT}/{path}"), "")
}

/// The names of what a Compute collection holds.
fn names(fake: &Fake, scope: &str, collection: &str) -> BTreeSet<String> {
    let (status, list) = compute(fake, &format!("{scope}/{collection}"));
    assert_eq!(status, 200, "{list}");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| item["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|item| item.to_string()).collect()
}

/// The backend service's NEGs, by name.
fn backend_negs(fake: &Fake) -> BTreeSet<String> {
    let (status, backend) = compute(fake, "global/backendServices/shop-web-backend");
    assert_eq!(status, 200, "{backend}");
    backend["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            b["group"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn assert_nothing_left(fake: &Fake, all_regions: &[&str]) {
    for collection in GLOBAL {
        assert!(
            names(fake, "global", collection).is_empty(),
            "{collection} left: {:?}",
            names(fake, "global", collection)
        );
    }
    for region in all_regions {
        assert!(
            names(fake, &format!("regions/{region}"), "networkEndpointGroups").is_empty(),
            "NEGs left in {region}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_is_made_once_and_follows_the_regions() {
    let fake = Fake::start();
    let door = FrontDoor::new(&fake.settings()).await.unwrap();
    let said = Mutex::new(Vec::<String>::new());
    let progress = |line: String| said.lock().unwrap().push(line);

    let two = regions(&["us-central1", "europe-west1"]);
    let state = door
        .ensure("shop", "web", &two, None, &progress)
        .await
        .unwrap();
    assert!(!state.address.is_empty());
    assert_eq!(state.url, format!("http://{}", state.address));
    assert_eq!(state.regions, two);
    let lines = said.lock().unwrap().clone();
    assert!(
        lines.contains(&"front door: creating backend service shop-web-backend".to_string()),
        "{lines:#?}"
    );

    // The whole chain, each piece pointing at the next.
    for region in &two {
        let (status, neg) = compute(
            &fake,
            &format!("regions/{region}/networkEndpointGroups/shop-web-{region}"),
        );
        assert_eq!(status, 200, "{neg}");
        assert_eq!(neg["cloudRun"]["service"], "shop-web");
        assert_eq!(neg["networkEndpointType"], "SERVERLESS");
        assert!(neg["description"].as_str().unwrap().contains("mahavishnu"));
    }
    let (_, backend) = compute(&fake, "global/backendServices/shop-web-backend");
    assert_eq!(backend["loadBalancingScheme"], "EXTERNAL_MANAGED");
    assert_eq!(
        backend_negs(&fake),
        set(&["shop-web-us-central1", "shop-web-europe-west1"])
    );
    let (_, url_map) = compute(&fake, "global/urlMaps/shop-web-url-map");
    assert!(
        url_map["defaultService"]
            .as_str()
            .unwrap()
            .ends_with("/global/backendServices/shop-web-backend")
    );
    let (_, proxy) = compute(&fake, "global/targetHttpProxies/shop-web-http-proxy");
    assert!(
        proxy["urlMap"]
            .as_str()
            .unwrap()
            .ends_with("/global/urlMaps/shop-web-url-map")
    );
    let (_, rule) = compute(&fake, "global/forwardingRules/shop-web-rule");
    assert_eq!(rule["portRange"], "80");
    assert_eq!(rule["IPAddress"], state.address.as_str());
    assert_eq!(rule["loadBalancingScheme"], "EXTERNAL_MANAGED");
    assert!(
        rule["target"]
            .as_str()
            .unwrap()
            .ends_with("/global/targetHttpProxies/shop-web-http-proxy")
    );
    let (_, address) = compute(&fake, "global/addresses/shop-web-address");
    assert_eq!(address["address"], state.address.as_str());

    // As wanted already: reads only.
    fake.clear_requests();
    let again = door
        .ensure("shop", "web", &two, None, &progress)
        .await
        .unwrap();
    assert_eq!(again, state);
    assert_eq!(fake.writes(), Vec::<String>::new());
    assert!(
        !fake.requests().is_empty(),
        "the second ensure read nothing"
    );

    // A third region: its NEG, and the backend service; nothing else.
    fake.clear_requests();
    let three = regions(&["us-central1", "europe-west1", "asia-east1"]);
    let state = door
        .ensure("shop", "web", &three, None, &progress)
        .await
        .unwrap();
    assert_eq!(
        fake.writes(),
        vec![
            format!("POST /compute/v1/projects/{PROJECT}/regions/asia-east1/networkEndpointGroups"),
            format!("PATCH /compute/v1/projects/{PROJECT}/global/backendServices/shop-web-backend"),
        ]
    );
    assert_eq!(
        backend_negs(&fake),
        set(&[
            "shop-web-us-central1",
            "shop-web-europe-west1",
            "shop-web-asia-east1"
        ])
    );
    let observed = door.state("shop", "web").await.unwrap().unwrap();
    assert_eq!(observed.address, state.address);
    assert_eq!(observed.url, state.url);
    assert_eq!(
        observed.regions.iter().cloned().collect::<BTreeSet<_>>(),
        set(&["us-central1", "europe-west1", "asia-east1"])
    );

    // A region removed: the backend service first, then its NEG.
    fake.clear_requests();
    let back = regions(&["us-central1", "asia-east1"]);
    door.ensure("shop", "web", &back, None, &progress)
        .await
        .unwrap();
    assert_eq!(
        fake.writes(),
        vec![
            format!("PATCH /compute/v1/projects/{PROJECT}/global/backendServices/shop-web-backend"),
            format!(
                "DELETE /compute/v1/projects/{PROJECT}/regions/europe-west1/networkEndpointGroups/shop-web-europe-west1"
            ),
        ]
    );
    assert!(names(&fake, "regions/europe-west1", "networkEndpointGroups").is_empty());
    assert_eq!(
        door.state("shop", "web").await.unwrap().unwrap().regions,
        back
    );

    // Destroy: nothing left, and a second destroy is no error.
    door.destroy("shop", "web", &back).await.unwrap();
    assert_nothing_left(&fake, &["us-central1", "europe-west1", "asia-east1"]);
    assert_eq!(door.state("shop", "web").await.unwrap(), None);
    fake.clear_requests();
    door.destroy("shop", "web", &back).await.unwrap();
    assert!(
        fake.writes().iter().all(|call| call.starts_with("DELETE ")),
        "{:?}",
        fake.writes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_gets_a_managed_certificate_and_https() {
    let fake = Fake::start();
    let door = FrontDoor::new(&fake.settings()).await.unwrap();
    let two = regions(&["us-central1", "europe-west1"]);
    let state = door
        .ensure("shop", "web", &two, Some("shop.example.com"), &|_| {})
        .await
        .unwrap();
    assert_eq!(state.url, "https://shop.example.com");
    let (status, certificate) = compute(&fake, "global/sslCertificates/shop-web-cert");
    assert_eq!(status, 200, "{certificate}");
    assert_eq!(certificate["type"], "MANAGED");
    assert_eq!(
        certificate["managed"]["domains"],
        serde_json::json!(["shop.example.com"])
    );
    let (_, proxy) = compute(&fake, "global/targetHttpsProxies/shop-web-https-proxy");
    assert!(
        proxy["sslCertificates"][0]
            .as_str()
            .unwrap()
            .ends_with("/global/sslCertificates/shop-web-cert")
    );
    let (_, rule) = compute(&fake, "global/forwardingRules/shop-web-rule");
    assert_eq!(rule["portRange"], "443");
    assert!(names(&fake, "global", "targetHttpProxies").is_empty());

    let observed = door.state("shop", "web").await.unwrap().unwrap();
    assert_eq!(observed.url, "https://shop.example.com");
    assert_eq!(observed.address, state.address);

    fake.clear_requests();
    door.ensure("shop", "web", &two, Some("shop.example.com"), &|_| {})
        .await
        .unwrap();
    assert_eq!(fake.writes(), Vec::<String>::new());

    // Another domain cannot be had by changing the certificate: the error says what to do.
    let error = door
        .ensure("shop", "web", &two, Some("other.example.com"), &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("shop-web-cert"), "{error}");
    assert!(error.contains("destroy"), "{error}");

    door.destroy("shop", "web", &two).await.unwrap();
    assert_nothing_left(&fake, &["us-central1", "europe-west1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_compute_refuses_are_refused_before_any_call() {
    let fake = Fake::start();
    let door = FrontDoor::new(&fake.settings()).await.unwrap();
    let long = "s".repeat(40);
    let error = door
        .ensure(
            &long,
            "web",
            &regions(&["northamerica-northeast1"]),
            None,
            &|_| {},
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("at most 63"), "{error}");
    assert_eq!(fake.requests(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_a_healthy_region_through_the_front_door() {
    let fake = Fake::start();
    fake.deploy("shop-web", "us-central1", "central");
    fake.deploy("shop-web", "europe-west1", "europe");
    let door = FrontDoor::new(&fake.settings()).await.unwrap();
    let two = regions(&["us-central1", "europe-west1"]);
    let state = door
        .ensure("shop", "web", &two, None, &|_| {})
        .await
        .unwrap();
    let through = |path: &str| fake.http("GET", &format!("/lb/{}{path}", state.address), "");

    let (status, body) = through("/");
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with(" 200\n"), "{body:?}");

    // One region down: the other answers, every time.
    let (status, answer) = fake.http(
        "POST",
        "/_fake/kill?service=shop-web&location=us-central1",
        "",
    );
    assert_eq!(status, 200, "{answer}");
    for _ in 0..5 {
        let (status, body) = through("/");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, "europe 200\n");
    }

    // Both down: nothing answers.
    fake.http(
        "POST",
        "/_fake/kill?service=shop-web&location=europe-west1",
        "",
    );
    let (status, _) = through("/");
    assert_eq!(status, 503);

    door.destroy("shop", "web", &two).await.unwrap();
    let (status, _) = through("/");
    assert_eq!(status, 404, "the address still answers after destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_is_named_and_the_next_ensure_finishes_the_chain() {
    let fake = Fake::start();
    let door = FrontDoor::new(&fake.settings()).await.unwrap();
    let two = regions(&["us-central1", "europe-west1"]);
    let (status, _) = fake.http(
        "POST",
        "/_fake/fail-next?method=POST&status=403&path=/global/urlMaps",
        "",
    );
    assert_eq!(status, 200);
    let error = door
        .ensure("shop", "web", &two, None, &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("creating the URL map shop-web-url-map"),
        "{error}"
    );
    assert!(error.contains("PermissionDenied"), "{error}");
    assert!(names(&fake, "global", "forwardingRules").is_empty());

    // What was made stays; the rest is made now.
    fake.clear_requests();
    let state = door
        .ensure("shop", "web", &two, None, &|_| {})
        .await
        .unwrap();
    let writes = fake.writes();
    assert!(
        writes.iter().all(
            |call| !call.contains("networkEndpointGroups") && !call.contains("backendServices")
        ),
        "{writes:?}"
    );
    assert_eq!(
        door.state("shop", "web").await.unwrap().map(|s| s.address),
        Some(state.address)
    );
}
