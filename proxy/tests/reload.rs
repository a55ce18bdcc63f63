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
