//! Hot reload from the manifest directory: changes are enforced within 1 s without a restart,
//! limiter and quota state survive, and bad files keep the last good table.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn a_plan_edit_is_enforced_within_a_second_and_keeps_other_state() {
    let gw = TestGateway::start("reload-edit").await; // limited: 1 per 1 s
                                                      // Drain a bucket and a quota of subscriptions whose plans are not edited.
    assert_eq!(
        gw.get_with_key("/weather/current", PATIENT_KEY)
            .await
            .status,
        200
    );
    gw.get_with_key("/weather/current", PATIENT_KEY)
        .await
        .assert_problem(429, "rate-limited");
    for _ in 0..2 {
        assert_eq!(
            gw.get_with_key("/weather/current", QUOTA_KEY).await.status,
            200
        );
    }
    gw.get_with_key("/weather/current", QUOTA_KEY)
        .await
        .assert_problem(429, "quota-exceeded");
    let r = gw.get_with_key("/weather/current", LIMITED_KEY).await;
    assert_eq!(r.header("ratelimit-limit"), Some("1"));
    let version = gw.table_version();

    gw.dir.write("plans.yaml", &plans_yaml(50));
    let enforced = eventually(Duration::from_secs(1), || async {
        let r = gw.get_with_key("/weather/current", LIMITED_KEY).await;
        r.header("ratelimit-limit") == Some("50")
    })
    .await;
    assert!(enforced, "the new limit is enforced within 1 s");
    assert_eq!(gw.table_version(), version + 1);
    // Burst of 50 now passes for the edited plan.
    for _ in 0..10 {
        assert_eq!(
            gw.get_with_key("/weather/current", LIMITED_KEY)
                .await
                .status,
            200
        );
    }
    // The other subscriptions were not reset by the reload.
    gw.get_with_key("/weather/current", PATIENT_KEY)
        .await
        .assert_problem(429, "rate-limited");
    gw.get_with_key("/weather/current", QUOTA_KEY)
        .await
        .assert_problem(429, "quota-exceeded");
}

#[tokio::test]
async fn an_invalid_file_keeps_the_last_good_table_and_is_reported() {
    let logs = capture_logs();
    let gw = TestGateway::start("reload-bad").await;
    let version = gw.table_version();
    assert!(gw
        .metrics()
        .await
        .contains("tollgate_reloads_failed_total 0"));

    // A misspelled field: the whole reload is refused.
    let misspelled = plans_yaml(50).replacen("rateLimit:", "rateLimt:", 1);
    gw.dir.write("plans.yaml", &misspelled);
    assert!(
        eventually(Duration::from_secs(2), || async {
            gw.metrics()
                .await
                .contains("tollgate_reloads_failed_total 1")
        })
        .await,
        "the refused reload is counted"
    );
    assert_eq!(gw.table_version(), version, "the old table keeps serving");
    let r = gw.get_with_key("/weather/current", LIMITED_KEY).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("ratelimit-limit"),
        Some("1"),
        "old plan still enforced"
    );
    let text = logs.contents();
    let line = text
        .lines()
        .find(|l| l.contains("plans.yaml") && l.contains("rateLimt"))
        .expect("the problem is logged with file and field");
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    assert_eq!(v["level"], "ERROR");

    // Broken YAML: refused too.
    gw.dir
        .write("plans.yaml", "kind: Plan\n  this: [is not yaml\n");
    assert!(
        eventually(Duration::from_secs(2), || async {
            gw.metrics()
                .await
                .contains("tollgate_reloads_failed_total 2")
        })
        .await
    );
    assert_eq!(
        gw.get_with_key("/weather/current", GOLD_PRIMARY)
            .await
            .status,
        200
    );

    // Fixed: the next table swaps in.
    gw.dir.write("plans.yaml", &plans_yaml(7));
    assert!(
        eventually(Duration::from_secs(1), || async {
            gw.get_with_key("/weather/current", LIMITED_KEY)
                .await
                .header("ratelimit-limit")
                == Some("7")
        })
        .await
    );
    assert!(gw
        .metrics()
        .await
        .contains(&format!("tollgate_table_version {}", version + 1)));
}

#[tokio::test]
async fn a_bad_object_is_left_out_and_the_rest_swaps_in() {
    let logs = capture_logs();
    let gw = TestGateway::start("reload-partial").await;
    // A subscription whose plan does not exist: compile error for that object only.
    let extra = "apiVersion: tollgate.dev/v1alpha1\nkind: Subscription\nmetadata: {name: dangling, namespace: t}\nspec:\n  plan: platinum\n  subscriber: {name: Nobody}\n";
    gw.dir.write("zz-extra.yaml", extra);
    gw.dir.write("plans.yaml", &plans_yaml(9));
    assert!(
        eventually(Duration::from_secs(1), || async {
            gw.get_with_key("/weather/current", LIMITED_KEY)
                .await
                .header("ratelimit-limit")
                == Some("9")
        })
        .await,
        "the good part of the change is live"
    );
    assert!(gw
        .metrics()
        .await
        .contains("tollgate_reloads_failed_total 0"));
    // The left-out object is reported with the file it came from, so it can be found and fixed.
    let text = logs.contents();
    assert!(
        text.lines().any(|l| l.contains("zz-extra.yaml")
            && l.contains("PlanNotFound")
            && l.contains("t/dangling")),
        "the compile diagnostic names file, object and reason: {text}"
    );
}

#[tokio::test]
async fn a_costly_bad_file_is_refused_at_once_reported_once_and_does_not_hold_up_the_fix() {
    let logs = capture_logs();
    let gw = TestGateway::start("reload-bomb").await;
    let version = gw.table_version();
    // 200 KB of nested brackets: the YAML parser took seconds of a core to refuse it.
    gw.dir.write("bomb.yaml", &"[".repeat(200_000));
    assert!(
        eventually(Duration::from_secs(2), || async {
            gw.metrics()
                .await
                .contains("tollgate_reloads_failed_total 1")
        })
        .await,
        "the bad file is refused within 2 s"
    );
    // A change elsewhere while it sits there: refused too (a bad file refuses the whole
    // reload), at once, and the bad file is not reported again.
    gw.dir.write("plans.yaml", &plans_yaml(7));
    assert!(
        eventually(Duration::from_secs(2), || async {
            gw.metrics()
                .await
                .contains("tollgate_reloads_failed_total 2")
        })
        .await,
        "the next reload is not held up by the bad file"
    );
    assert_eq!(
        gw.table_version(),
        version,
        "the last good table keeps serving"
    );
    let text = logs.contents();
    let reports = text
        .lines()
        .filter(|l| l.contains("bomb.yaml") && l.contains("ManifestLimitExceeded"))
        .count();
    assert_eq!(
        reports, 1,
        "the bad file is reported once, naming file and limit: {text}"
    );
    assert!(text.contains("deeper than 64 levels"), "{text}");
    // Removed: the waiting good change applies promptly.
    std::fs::remove_file(gw.dir.path().join("bomb.yaml")).expect("remove");
    assert!(
        eventually(Duration::from_secs(1), || async {
            gw.get_with_key("/weather/current", LIMITED_KEY)
                .await
                .header("ratelimit-limit")
                == Some("7")
        })
        .await,
        "the good change applies within a second of the bad file going"
    );
}

/// The layout of a Kubernetes ConfigMap volume: each manifest is a symlink through `..data`,
/// itself a symlink to a timestamped directory, and an update swaps `..data` by rename.
#[tokio::test]
async fn a_configmap_volume_update_is_applied() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        let upstream = Upstream::start().await;
        let dir = TempDir::new("reload-configmap");
        let products = products_yaml(&upstream.url(), closed_port().await);
        let publish = |generation: &str, limited: u32| {
            let data = dir.path().join(generation);
            std::fs::create_dir(&data).expect("data dir");
            std::fs::write(data.join("products.yaml"), &products).expect("write");
            std::fs::write(data.join("plans.yaml"), plans_yaml(limited)).expect("write");
            std::fs::write(data.join("subscriptions.yaml"), subscriptions_yaml()).expect("write");
            let tmp = dir.path().join("..data_tmp");
            symlink(generation, &tmp).expect("symlink");
            std::fs::rename(&tmp, dir.path().join("..data")).expect("swap ..data");
        };
        publish("..2026_12_04_1", 3);
        for name in ["products.yaml", "plans.yaml", "subscriptions.yaml"] {
            symlink(format!("..data/{name}"), dir.path().join(name)).expect("symlink");
        }
        let gateway = start_gateway(dir.path()).await;
        let client = client();
        let url = format!("http://{}/weather/current", gateway.proxy_addr());
        let limit = || async {
            send(&client, "GET", &url, &[("x-subscription-key", LIMITED_KEY)])
                .await
                .header("ratelimit-limit")
                .map(str::to_string)
        };
        assert_eq!(limit().await.as_deref(), Some("3"));
        publish("..2026_12_04_2", 9);
        std::fs::remove_dir_all(dir.path().join("..2026_12_04_1")).expect("old generation");
        assert!(
            eventually(Duration::from_secs(2), || async {
                limit().await.as_deref() == Some("9")
            })
            .await,
            "the swapped ConfigMap is served"
        );
    }
}
