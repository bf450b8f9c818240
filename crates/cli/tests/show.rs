//! Runs the built `nasnet` binary: `show` (text, json, dot, svg, files, errors) and `space`.

mod common;

use std::path::PathBuf;
use std::process::Output;

use nasnet_searchspace::BigUint;
use serde_json::{json, Value};

use common::nasnet as nasnet_command;

fn nasnet(args: &[&str]) -> Output {
    nasnet_command()
        .args(args)
        .output()
        .expect("the nasnet binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A scratch file under Cargo's per-target temp dir.
fn scratch(name: &str, contents: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-show-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn block(inputs: [usize; 2], ops: [&str; 2]) -> Value {
    json!({"inputs": inputs, "ops": ops, "combine": "add"})
}

/// NASNet-A as docs/search-space.md#the-released-nasnet-a-encoding gives it (sepKxK =
/// sep_conv_KxK, avg3x3 = avg_pool_3x3,
/// max3x3 = max_pool_3x3, identity = identity; outputs are the states marked 0 in
/// `used_hiddenstates`).
fn nasnet_a_expected() -> Value {
    json!({
        "normal": {
            "blocks": [
                block([0, 1], ["sep_conv_5x5", "sep_conv_3x3"]),
                block([1, 1], ["sep_conv_5x5", "sep_conv_3x3"]),
                block([0, 1], ["avg_pool_3x3", "identity"]),
                block([1, 1], ["avg_pool_3x3", "avg_pool_3x3"]),
                block([0, 0], ["sep_conv_3x3", "identity"]),
            ],
            "concat": [1, 2, 3, 4, 5, 6]
        },
        "reduction": {
            "blocks": [
                block([0, 1], ["sep_conv_5x5", "sep_conv_7x7"]),
                block([0, 1], ["max_pool_3x3", "sep_conv_7x7"]),
                block([0, 1], ["avg_pool_3x3", "sep_conv_5x5"]),
                block([3, 2], ["identity", "avg_pool_3x3"]),
                block([2, 0], ["sep_conv_3x3", "max_pool_3x3"]),
            ],
            "concat": [3, 4, 5, 6]
        }
    })
}

/// PNASNet-5 as docs/search-space.md#pnasnet-5 gives it, the same cell in both roles.
fn pnasnet_5_expected() -> Value {
    let cell = json!({
        "blocks": [
            block([1, 1], ["sep_conv_5x5", "max_pool_3x3"]),
            block([0, 0], ["sep_conv_7x7", "max_pool_3x3"]),
            block([0, 0], ["sep_conv_5x5", "sep_conv_3x3"]),
            block([4, 0], ["sep_conv_3x3", "max_pool_3x3"]),
            block([1, 0], ["sep_conv_3x3", "identity"]),
        ],
        "concat": [2, 3, 4, 5, 6]
    });
    json!({"normal": cell.clone(), "reduction": cell})
}

fn show_json(arch: &str) -> Value {
    let o = nasnet(&["show", arch, "--format", "json"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn show_nasnet_a_json_is_reference_section_2() {
    assert_eq!(show_json("nasnet-a"), nasnet_a_expected());
    // Case and separator are forgiven.
    assert_eq!(show_json("NASNet_A"), nasnet_a_expected());
}

#[test]
fn show_pnasnet_5_json_is_reference_section_2() {
    assert_eq!(show_json("pnasnet-5"), pnasnet_5_expected());
}

#[test]
fn show_every_named_architecture_in_every_format() {
    for name in [
        "nasnet-a",
        "pnasnet-5",
        "amoebanet-a",
        "darts-v2",
        "darts-v1",
        "enas",
    ] {
        for format in ["text", "json", "dot", "svg"] {
            let o = nasnet(&["show", name, "--format", format]);
            assert!(o.status.success(), "{name} {format}: {}", stderr(&o));
            assert!(!stdout(&o).is_empty());
        }
    }
}

#[test]
fn show_dot_starts_with_digraph() {
    let o = nasnet(&["show", "nasnet-a", "--format", "dot"]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(out.starts_with("digraph"), "{out}");
    assert!(out.contains("cluster_normal") && out.contains("cluster_reduction"));
}

#[test]
fn show_svg_draws_both_cells_titled_by_name() {
    let o = nasnet(&["show", "nasnet-a", "--format", "svg"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("<svg") && out.trim_end().ends_with("</svg>"),
        "{out}"
    );
    assert!(out.contains("normal cell") && out.contains("reduction cell"));
    // NASNet-A's ops, by their figure labels; 2 cells x 5 blocks.
    for label in [
        "sep 3x3", "sep 5x5", "sep 7x7", "avg 3x3", "max 3x3", "identity",
    ] {
        assert!(out.contains(&format!(">{label}</text>")), "{label}");
    }
    assert_eq!(out.matches("<ellipse").count(), 10);
}

#[test]
fn show_text_is_readable_and_carries_the_compact_form() {
    let o = nasnet(&["show", "nasnet-a"]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(out.contains("normal cell (5 blocks)"), "{out}");
    assert!(out.contains("reduction cell (5 blocks)"), "{out}");
    let compact = out
        .lines()
        .find_map(|l| l.strip_prefix("compact: "))
        .expect("a compact line");
    // The compact form, saved to a file, shows back as the same JSON.
    let path = scratch("nasnet_a.txt", &format!("{compact}\n"));
    assert_eq!(show_json(path.to_str().unwrap()), nasnet_a_expected());
}

#[test]
fn show_reads_a_json_file() {
    let path = scratch(
        "pnasnet.json",
        &serde_json::to_string_pretty(&pnasnet_5_expected()).unwrap(),
    );
    assert_eq!(show_json(path.to_str().unwrap()), pnasnet_5_expected());
}

/// Runs `show` on a file and checks: exit 2, nothing on stdout, one line on stderr.
fn expect_user_error(args: &[&str]) -> String {
    let o = nasnet(args);
    assert_eq!(
        o.status.code(),
        Some(2),
        "args {args:?}, stderr {}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    err
}

#[test]
fn malformed_file_exits_2_with_one_line() {
    let path = scratch("malformed.json", "{\"normal\": {\"blocks\": [}");
    let err = expect_user_error(&["show", path.to_str().unwrap()]);
    assert!(
        err.contains("malformed.json") && err.contains("parse"),
        "{err}"
    );
}

#[test]
fn invalid_genotype_file_exits_2_naming_the_problem() {
    let mut v = nasnet_a_expected();
    v["normal"]["blocks"][1]["inputs"] = json!([0, 5]);
    let path = scratch("invalid.json", &v.to_string());
    let err = expect_user_error(&["show", path.to_str().unwrap(), "--format", "json"]);
    assert!(err.contains("normal cell, block 1"), "{err}");

    let mut v = nasnet_a_expected();
    v["reduction"]["blocks"][0]["ops"][1] = json!("sep_conv_9x9");
    let path = scratch("unknown_op.json", &v.to_string());
    let err = expect_user_error(&["show", path.to_str().unwrap()]);
    assert!(err.contains("sep_conv_9x9"), "{err}");

    let path = scratch("bad.txt", "normal: sep_conv_3x3@0 add -> 2");
    let err = expect_user_error(&["show", path.to_str().unwrap()]);
    assert!(err.contains("normal cell, block 0"), "{err}");
}

#[test]
fn unknown_name_and_format_exit_2() {
    let err = expect_user_error(&["show", "resnet-50"]);
    assert!(
        err.contains("resnet-50") && err.contains("nasnet-a"),
        "{err}"
    );
    let err = expect_user_error(&["show", "nasnet-a", "--format", "xml"]);
    assert!(err.contains("xml") && err.contains("json"), "{err}");
    let err = expect_user_error(&["space", "--space", "nasnet-z"]);
    assert!(err.contains("nasnet-z"), "{err}");
}

/// The hand formula: per cell prod_{b<B} (2+b)^2 * ops^2 * combines, squared (exceeds u128
/// for NASNet-C, hence BigUint).
fn hand_size(blocks: u32, ops: u32, combines: u32) -> BigUint {
    let cell = (0..blocks).fold(BigUint::from(1u32), |acc, b| {
        acc * BigUint::from((2 + b) * (2 + b) * ops * ops * combines)
    });
    &cell * &cell
}

fn space_listing(name: &str) -> String {
    let o = nasnet(&["space", "--space", name]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

#[test]
fn space_lists_decisions_and_exact_size() {
    for (name, blocks, combines) in [("nasnet", 5, 2), ("nasnet-b", 4, 4), ("nasnet-c", 5, 4)] {
        let out = space_listing(name);
        let size_line = out
            .lines()
            .find_map(|l| l.strip_prefix("size: "))
            .expect("a size line");
        assert_eq!(
            size_line,
            hand_size(blocks, 13, combines).to_string(),
            "{name}"
        );
        assert!(out.contains("size (scientific): "), "{out}");
        // One row per decision: `  index  role  block  kind  choices`.
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|t| {
                t.len() >= 5
                    && t[0].parse::<usize>().is_ok()
                    && (t[1] == "normal" || t[1] == "reduction")
            })
            .collect();
        assert_eq!(rows.len(), 2 * 5 * blocks as usize, "{name}");
        // Row 5 is block 1's first input: 3 choices; row 7 an op: 13; row 9 the combine.
        assert_eq!(rows[5], vec!["5", "normal", "1", "input", "1", "3"]);
        assert_eq!(rows[7], vec!["7", "normal", "1", "op", "1", "13"]);
        assert_eq!(
            rows[9],
            vec!["9", "normal", "1", "combine", &combines.to_string()]
        );
    }
    // Default is the paper's space.
    let o = nasnet(&["space"]);
    assert_eq!(stdout(&o), space_listing("nasnet"));
}
