//! `nasnet report` on run folders built by hand: the best cells drawn as SVG (`best.svg`, and
//! `top.svg` with one row per distinct architecture, failed ones never drawn), and for a
//! weight-sharing run (`sharing.jsonl`) the learning curves (`learning.svg`) and a summary of
//! the last fifth of updates, with a torn last line skipped and a bad line elsewhere refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use nasnet_searchspace::named::nasnet_a;
use nasnet_searchspace::{Genotype, Op};
use serde_json::json;

use common::{nasnet, temp_dir, TempDir};

fn report(run: &Path) -> Output {
    nasnet()
        .arg("report")
        .arg(run)
        .output()
        .expect("the nasnet binary runs")
}

/// The report's standard output, after checking it succeeded.
fn report_ok(run: &Path) -> String {
    let out = report(run);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// NASNet-A with its first normal op swapped for `op`: a distinct architecture whose picture
/// shows `op`.
fn nasnet_a_with(op: Op) -> Genotype {
    let mut g = nasnet_a();
    g.normal.blocks[0].ops[0] = op;
    g
}

fn trial_line(trial: u64, genotype: &Genotype, reward: f64, ok: bool) -> String {
    let status = if ok { "ok" } else { "failed" };
    let line = json!({"trial": trial, "genotype": genotype, "reward": reward,
        "status": status, "params": 1000, "seconds": 2.0, "reward_source": "shared"});
    format!("{line}\n")
}

/// A run folder: trial 1 is the best (a 1x7+7x1 conv in its normal cell), trials 0 and 2 are
/// NASNet-A (2 the better), trial 3 failed (its 7x7 max pool must not be drawn).
fn run_folder(tag: &str) -> TempDir {
    let run = temp_dir(tag);
    std::fs::write(
        run.join("config.json"),
        r#"{"strategy": "ppo", "sharing": true}"#,
    )
    .unwrap();
    let trials = [
        trial_line(0, &nasnet_a(), 0.5, true),
        trial_line(1, &nasnet_a_with(Op::Conv1x7_7x1), 0.7, true),
        trial_line(2, &nasnet_a(), 0.6, true),
        trial_line(3, &nasnet_a_with(Op::MaxPool7x7), 0.0, false),
    ];
    std::fs::write(run.join("trials.jsonl"), trials.concat()).unwrap();
    run
}

/// Update `u` of a made-up run of 20: the strategy's reward climbs past random's, its entropy
/// falls; update 7 logged no entropy.
fn update(u: u64) -> serde_json::Value {
    let entropy = (u != 7).then_some(9.0 - 0.2 * u as f64);
    json!({"update": u, "step": 50 * (u + 1), "elapsed_s": 3.0 * u as f64,
        "reward_mean": 0.2 + 0.02 * u as f64, "random_reward_mean": 0.3 - 0.001 * u as f64,
        "entropy": entropy})
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn report_draws_the_best_distinct_cells_and_never_a_failed_one() {
    let run = run_folder("cells");
    let stdout = report_ok(&run);
    assert!(
        !stdout.contains("weight sharing"),
        "no sharing.jsonl: {stdout}"
    );
    assert!(!run.join("report/learning.svg").exists());

    let best = read(run.join("report/best.svg"));
    assert!(best.starts_with("<svg") && best.trim_end().ends_with("</svg>"));
    assert!(best.contains("trial 1 (reward 0.7000)"), "{best}");
    assert!(best.contains(">1x7+7x1 conv</text>"));
    assert!(best.contains("normal cell") && best.contains("reduction cell"));
    assert!(
        run.join("report/best.dot").is_file(),
        "the DOT output stays"
    );

    let top = read(run.join("report/top.svg"));
    assert!(top.contains("rank 1: trial 1 (reward 0.7000)"));
    assert!(top.contains("rank 2: trial 2 (reward 0.6000)"));
    assert!(
        !top.contains("rank 3"),
        "trial 0 repeats trial 2's architecture"
    );
    assert!(!top.contains("max 7x7"), "the failed trial is drawn");
    // Two genotypes x two cells x five blocks, one combine ellipse each.
    assert_eq!(top.matches("<ellipse").count(), 20);
    for name in ["best.svg", "top.svg", "best.dot", "reward.svg"] {
        assert!(stdout.contains(&format!(
            "wrote {}",
            run.join("report").join(name).display()
        )));
    }
}

#[test]
fn a_sharing_run_gets_learning_curves_and_a_summary_of_its_last_fifth() {
    let run = run_folder("sharing");
    let mut lines: String = (0..20).map(|u| format!("{}\n", update(u))).collect();
    lines.push_str(r#"{"update": 20, "step": 10"#); // killed mid-append
    std::fs::write(run.join("sharing.jsonl"), lines).unwrap();
    let stdout = report_ok(&run);

    // The last fifth of 20 updates is 16..=19.
    let mean = |key: &str| {
        (16..20)
            .map(|u| update(u)[key].as_f64().unwrap())
            .sum::<f64>()
            / 4.0
    };
    let (strategy, random) = (mean("reward_mean"), mean("random_reward_mean"));
    let expected = format!(
        "(updates 16-19): strategy {strategy:.4}, uniform random {random:.4} ({:+.4})",
        strategy - random
    );
    assert!(
        stdout.contains("weight sharing: 20 strategy updates, 1000 shared-weight steps"),
        "{stdout}"
    );
    assert!(stdout.contains(&expected), "{expected} not in {stdout}");
    let (first, last) = (
        update(0)["entropy"].as_f64().unwrap(),
        update(19)["entropy"].as_f64().unwrap(),
    );
    assert!(
        stdout.contains(&format!(
            "entropy: {first:.4} at update 0 -> {last:.4} at update 19"
        )),
        "{stdout}"
    );

    let svg = read(run.join("report/learning.svg"));
    assert!(svg.contains(">strategy</text>") && svg.contains(">uniform random</text>"));
    assert!(svg.contains("strategy entropy"));
    let polylines: Vec<&str> = svg.lines().filter(|l| l.starts_with("<polyline")).collect();
    assert_eq!(polylines.len(), 3, "strategy, random, entropy");
    let points = |l: &str| {
        l.split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .split(' ')
            .count()
    };
    // Rewards: updates 0..=19 (the torn 20th skipped); entropy: all but update 7.
    assert_eq!(
        polylines.iter().map(|l| points(l)).collect::<Vec<_>>(),
        vec![20, 20, 19]
    );
}

#[test]
fn a_bad_line_inside_sharing_jsonl_is_an_error_naming_it() {
    let run = run_folder("bad-line");
    let lines = format!("{}\nnot json\n{}\n", update(0), update(1));
    std::fs::write(run.join("sharing.jsonl"), lines).unwrap();
    let out = report(&run);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sharing.jsonl line 2"), "{stderr}");
}
