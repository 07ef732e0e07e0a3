//! Cloud Monitoring against the Google Cloud fake: uptime checks made once, left alone when they
//! already check the URL, changed when the path changes, listed and deleted; and the request counts
//! of each revision with their errors, from requests that really went through the fake.

mod support;

use std::time::Duration;

use mahavishnu_cloudrun::Monitoring;
use support::{Fake, NUMBER, PROJECT};

fn run_url(service: &str, region: &str) -> String {
    format!("https://{service}-{NUMBER}.{region}.run.app")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uptime_checks_are_made_once_listed_and_deleted() {
    let fake = Fake::start();
    let monitoring = Monitoring::new(&fake.settings()).await.unwrap();
    let central = run_url("shop-web", "us-central1");
    let europe = run_url("shop-web", "europe-west1");

    let name = monitoring
        .ensure_uptime_check("shop", "web", "us-central1", &central, "/healthz")
        .await
        .unwrap();
    assert!(
        name.starts_with(&format!("projects/{PROJECT}/uptimeCheckConfigs/")),
        "{name}"
    );
    let (status, check) = fake.json("GET", &format!("/v3/{name}"), "");
    assert_eq!(status, 200, "{check}");
    assert_eq!(check["displayName"], "mahavishnu shop/web us-central1");
    assert_eq!(check["userLabels"]["managed-by"], "mahavishnu");
    assert_eq!(check["userLabels"]["mahavishnu-sandcastle"], "shop");
    assert_eq!(check["userLabels"]["mahavishnu-service"], "web");
    assert_eq!(check["userLabels"]["mahavishnu-region"], "us-central1");
    assert_eq!(check["monitoredResource"]["type"], "uptime_url");
    assert_eq!(
        check["monitoredResource"]["labels"]["host"],
        format!("shop-web-{NUMBER}.us-central1.run.app")
    );
    assert_eq!(check["httpCheck"]["path"], "/healthz");
    assert_eq!(check["httpCheck"]["useSsl"], true);

    // Already checking that URL and path: no write.
    fake.clear_requests();
    let again = monitoring
        .ensure_uptime_check("shop", "web", "us-central1", &central, "/healthz")
        .await
        .unwrap();
    assert_eq!(again, name);
    assert_eq!(fake.writes(), Vec::<String>::new());

    // Another region is another check; another sandcastle's check is not ours.
    let second = monitoring
        .ensure_uptime_check("shop", "web", "europe-west1", &europe, "/healthz")
        .await
        .unwrap();
    assert_ne!(second, name);
    monitoring
        .ensure_uptime_check(
            "other",
            "web",
            "us-central1",
            &run_url("other-web", "us-central1"),
            "/",
        )
        .await
        .unwrap();
    let mut checks = monitoring.uptime_checks("shop").await.unwrap();
    checks.sort_by(|a, b| a.region.cmp(&b.region));
    let seen = checks
        .iter()
        .map(|check| {
            (
                check.name.as_str(),
                check.service.as_str(),
                check.region.as_str(),
                check.url.as_str(),
            )
        })
        .collect::<Vec<_>>();
    assert_eq!(
        seen,
        vec![
            (
                second.as_str(),
                "web",
                "europe-west1",
                format!("{europe}/healthz").as_str()
            ),
            (
                name.as_str(),
                "web",
                "us-central1",
                format!("{central}/healthz").as_str()
            ),
        ]
    );

    // A new path: the same check, changed in place.
    fake.clear_requests();
    let changed = monitoring
        .ensure_uptime_check("shop", "web", "us-central1", &central, "/ready")
        .await
        .unwrap();
    assert_eq!(changed, name);
    let writes = fake.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(writes[0].starts_with("PATCH "), "{writes:?}");
    let (_, check) = fake.json("GET", &format!("/v3/{name}"), "");
    assert_eq!(check["httpCheck"]["path"], "/ready");
    assert_eq!(check["userLabels"]["mahavishnu-region"], "us-central1");

    // Deleted by region, then all of the service; missing is fine.
    monitoring
        .delete_uptime_checks("shop", "web", Some("us-central1"))
        .await
        .unwrap();
    let left = monitoring.uptime_checks("shop").await.unwrap();
    assert_eq!(
        left.iter().map(|c| c.region.as_str()).collect::<Vec<_>>(),
        ["europe-west1"]
    );
    monitoring
        .delete_uptime_checks("shop", "web", None)
        .await
        .unwrap();
    assert!(monitoring.uptime_checks("shop").await.unwrap().is_empty());
    monitoring
        .delete_uptime_checks("shop", "web", None)
        .await
        .unwrap();
    assert_eq!(monitoring.uptime_checks("other").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_metrics_count_requests_and_errors_per_revision() {
    let fake = Fake::start();
    let monitoring = Monitoring::new(&fake.settings()).await.unwrap();
    let host = Fake::host("shop-web", "us-central1");
    let window = Duration::from_secs(60);

    fake.deploy("shop-web", "us-central1", "one");
    // The same service in another region is not counted here.
    fake.deploy("shop-web", "europe-west1", "one");
    fake.clear_requests();
    let before = monitoring
        .revision_metrics("shop-web", "us-central1", window)
        .await
        .unwrap();
    // The readiness probe's requests count: start from what is there.
    let first = before.keys().next().cloned().expect("the first revision");
    let base = before[&first].requests;
    for _ in 0..6 {
        let (status, _) = fake.http("GET", &format!("/run/{host}/"), "");
        assert_eq!(status, 200);
    }
    for _ in 0..2 {
        let (status, _) = fake.http("GET", &format!("/run/{host}/fail"), "");
        assert_eq!(status, 500);
    }
    let europe = Fake::host("shop-web", "europe-west1");
    for _ in 0..3 {
        fake.http("GET", &format!("/run/{europe}/fail"), "");
    }

    let counted = monitoring
        .revision_metrics("shop-web", "us-central1", window)
        .await
        .unwrap();
    assert_eq!(counted.len(), 1, "{counted:#?}");
    let one = &counted[&first];
    assert_eq!(one.requests, base + 8, "{one:?}");
    assert_eq!(one.errors, 2, "{one:?}");
    assert!(
        (one.error_rate - 2.0 / (base + 8) as f64).abs() < 1e-9,
        "{one:?}"
    );
    assert!((one.rps - (base + 8) as f64 / 60.0).abs() < 1e-9, "{one:?}");
    assert_eq!((one.p50_ms, one.p99_ms), (None, None));

    // A second revision, which takes the traffic and fails every request.
    fake.deploy("shop-web", "us-central1", "two");
    let after_deploy = monitoring
        .revision_metrics("shop-web", "us-central1", window)
        .await
        .unwrap();
    let second = after_deploy
        .keys()
        .find(|name| **name != first)
        .cloned()
        .expect("the second revision");
    let second_base = after_deploy[&second].requests;
    for _ in 0..4 {
        let (status, body) = fake.http("GET", &format!("/run/{host}/fail"), "");
        assert_eq!((status, body.as_str()), (500, "two 500\n"));
    }

    fake.clear_requests();
    let metrics = monitoring
        .revision_metrics("shop-web", "us-central1", window)
        .await
        .unwrap();
    let calls = fake.requests();
    assert_eq!(calls.len(), 1, "one list_time_series call: {calls:?}");
    assert!(calls[0].ends_with("/timeSeries"), "{calls:?}");
    assert_eq!(metrics.len(), 2, "{metrics:#?}");

    // The first revision kept its errors (it answered the rollover's probes with 200).
    let one = &metrics[&first];
    assert!(one.requests >= base + 8, "{one:?}");
    assert_eq!(one.errors, 2, "{one:?}");

    let two = &metrics[&second];
    assert_eq!(two.requests, second_base + 4, "{two:?}");
    assert_eq!(two.errors, 4, "{two:?}");
    assert!(
        (two.error_rate - 4.0 / (second_base + 4) as f64).abs() < 1e-9,
        "{two:?}"
    );

    // A service nobody called has no revisions to report.
    assert!(
        monitoring
            .revision_metrics("shop-api", "us-central1", window)
            .await
            .unwrap()
            .is_empty()
    );
}
