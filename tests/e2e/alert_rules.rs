//! The alert rules in `contrib/prometheus/gateway-alerts.yml`: `promtool check rules` accepts
//! them, and `promtool test rules` runs `gateway-alerts.test.yml`, where every alert fires on a
//! made-up failure and stays quiet on a healthy gateway. (That the rules evaluate on a real
//! gateway's series, and name only metrics it exports, is in [`crate::prometheus`].)

use crate::prometheus::{promtool, repo_root};

#[test]
fn the_alert_rules_pass_promtool_check_rules() {
    let rules = repo_root().join("contrib/prometheus/gateway-alerts.yml");
    let rules = rules.to_str().expect("a UTF-8 path");
    let (ok, out) = promtool(&["check", "rules", rules], b"");
    assert!(ok, "promtool check rules {rules}:\n{out}");
    assert!(out.contains("SUCCESS: 11 rules found"), "{out}");
}

#[test]
fn every_alert_fires_on_its_failure_and_not_on_a_healthy_gateway() {
    let tests = repo_root().join("contrib/prometheus/gateway-alerts.test.yml");
    let tests = tests.to_str().expect("a UTF-8 path");
    let (ok, out) = promtool(&["test", "rules", tests], b"");
    assert!(ok, "promtool test rules {tests}:\n{out}");
}

/// Every alert of the rules file has a test where it fires and one where it must not.
#[test]
fn every_alert_has_a_firing_and_a_quiet_test() {
    let root = repo_root().join("contrib/prometheus");
    let rules = std::fs::read_to_string(root.join("gateway-alerts.yml")).expect("read rules");
    let tests = std::fs::read_to_string(root.join("gateway-alerts.test.yml")).expect("read tests");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 11, "{alerts:?}");
    // (alertname, whether alerts are expected) per alert_rule_test, flow or block style.
    let mut cases: Vec<(String, bool)> = Vec::new();
    let lines: Vec<&str> = tests
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for (i, line) in lines.iter().enumerate() {
        let Some((_, rest)) = line.split_once("alertname: ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        let quiet = if line.contains("exp_alerts") {
            line.contains("exp_alerts: []")
        } else {
            let next = lines.get(i + 1).copied().unwrap_or_default();
            let after = lines.get(i + 2).copied().unwrap_or_default();
            next == "exp_alerts: []" || !after.starts_with("- exp_labels:")
        };
        cases.push((name, !quiet));
    }
    for alert in alerts {
        for fires in [true, false] {
            assert!(
                cases.contains(&(alert.to_owned(), fires)),
                "{alert}: no test where it {}",
                if fires { "fires" } else { "stays quiet" }
            );
        }
    }
}
