//! Bad and absurd input to real `nasnet` processes: sizes whose arithmetic would overflow,
//! settings that cannot work, a run that diverges, data that cannot be what the user meant, and
//! models too large for the machine. Each is a one-line error (or a recorded failure), never a
//! wrapped number, a panic, an abort or a silently ignored flag.

mod common;

use std::process::{Command, Output};

use common::{nasnet, temp_dir};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Adds the `defaults` flags `extra` does not name (as `--flag value` or `--flag=value`), then
/// `extra`.
fn with_defaults(cmd: &mut Command, defaults: &[(&str, &str)], extra: &[&str]) {
    let named = |flag: &str| extra.iter().any(|e| e.split('=').next() == Some(flag));
    for (flag, value) in defaults {
        if !named(flag) {
            cmd.args([flag, value]);
        }
    }
    cmd.args(extra);
}

/// NASNet-A 1@24 on 128 embedded images, batches of 32, quiet, `epochs` epochs, into `out`;
/// `extra` flags (`--flag value` or `--flag=value`) replace the defaults of the same name.
fn tiny_train(out: &std::path::Path, epochs: &str, extra: &[&str]) -> Output {
    let defaults = [
        ("--net", "1@24"),
        ("--train-limit", "128"),
        ("--test-limit", "32"),
        ("--batch-size", "32"),
    ];
    let mut cmd = nasnet();
    cmd.args(["train", "--quiet", "--epochs", epochs]);
    with_defaults(&mut cmd, &defaults, extra);
    cmd.arg("--out").arg(out).output().unwrap()
}

/// One random-search trial of a 1@24 child on 256 embedded images in `run`; `extra` flags
/// replace the defaults of the same name.
fn tiny_search(run: &std::path::Path, extra: &[&str]) -> Output {
    let defaults = [
        ("--trials", "1"),
        ("--train-limit", "256"),
        ("--val-size", "128"),
        ("--child-net", "1@24"),
        ("--workers", "1"),
        ("--strategy", "random"),
    ];
    let mut cmd = nasnet();
    cmd.args(["search", "--quiet"]);
    with_defaults(&mut cmd, &defaults, extra);
    cmd.arg("--run-dir").arg(run).output().unwrap()
}

/// Asserts exit status 2 with a one-line message holding `needle`.
fn assert_user_error(o: &Output, needle: &str, what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{what}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
    assert!(err.contains(needle), "{what}: `{needle}` not in {err}");
}

/// The mult-adds `nasnet info` prints for NASNet-A 6@768 at `size`.
fn info_mult_adds(size: &str) -> Output {
    nasnet()
        .args(["info", "nasnet-a", "--input-size", size])
        .output()
        .unwrap()
}

fn parse_mult_adds(o: &Output) -> f64 {
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().find(|l| l.starts_with("mult-adds")).unwrap();
    let number = line.split_whitespace().nth(1).unwrap().replace(',', "");
    number.parse().unwrap()
}

#[test]
fn absurd_sizes_are_refused_not_wrapped() {
    let dir = temp_dir("overflow");
    let o = tiny_train(&dir.join("run"), "18446744073709551615", &[]);
    assert_user_error(&o, "more steps than", "--epochs u64::MAX");
    assert!(!dir.join("run").join("state.json").exists());

    let o = info_mult_adds("40000000");
    assert_user_error(&o, "overflows 64 bits", "info --input-size 40000000");
    // A large size that still fits is counted exactly: mult-adds grow with the pixel count.
    let (big, small) = (info_mult_adds("400000"), info_mult_adds("40000"));
    assert!(big.status.success() && small.status.success());
    let ratio = parse_mult_adds(&big) / parse_mult_adds(&small);
    assert!((ratio - 100.0).abs() < 0.01, "mult-adds ratio {ratio}");
}

#[test]
fn a_diverging_train_fails_with_the_epoch_counted_from_one() {
    let dir = temp_dir("diverge");
    let o = tiny_train(&dir.join("run"), "2", &["--lr", "1e6"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("diverged in epoch 1 "), "{err}");
    assert!(
        err.contains("divergence limit") || err.contains("not a finite"),
        "{err}"
    );

    let o = tiny_train(&dir.join("run2"), "1", &["--lr", "0.1", "--min-lr", "0.2"]);
    assert_user_error(&o, "--min-lr", "--min-lr above --lr");
}

#[test]
fn a_search_records_diverging_children_as_failed() {
    let dir = temp_dir("search-diverge");
    let run = dir.join("run");
    let o = tiny_search(&run, &["--child-lr", "1e6"]);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    let trials = std::fs::read_to_string(run.join("trials.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(trials.lines().next().unwrap()).unwrap();
    assert_eq!(record["status"], "failed", "{trials}");
    assert!(
        record["error"].as_str().unwrap_or("").contains("diverged"),
        "{trials}"
    );
}

#[test]
fn settings_that_cannot_mean_anything_are_errors_not_ignored() {
    let dir = temp_dir("settings");
    for (i, value) in ["--clip-norm=-1", "--clip-norm=nan", "--clip-norm=inf"]
        .iter()
        .enumerate()
    {
        let o = tiny_train(&dir.join(format!("clip{i}")), "1", &[value]);
        assert_user_error(&o, "clipping norm", value);
    }
    let o = tiny_train(&dir.join("size"), "1", &["--image-size", "64"]);
    assert_user_error(&o, "--dataset folder only", "--image-size on embedded data");
    let o = nasnet()
        .args(["eval", "--image-size", "64", "--checkpoint"])
        .arg(dir.join("size"))
        .output()
        .unwrap();
    assert_user_error(&o, "--dataset folder only", "eval --image-size");
}

#[test]
fn a_failed_start_leaves_no_empty_folder_and_errors_say_it_once() {
    let dir = temp_dir("leftover");
    // Fewer images than one batch: refused when training starts, after the folder was made.
    let out = dir.join("run");
    let o = tiny_train(&out, "1", &["--train-limit", "20"]);
    assert_user_error(&o, "larger than the training set", "--train-limit 20");
    assert!(!out.exists(), "the failed start left {}", out.display());
    // A diverged run that wrote no checkpoint leaves nothing either.
    let o = tiny_train(&out, "1", &["--lr", "1e6"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!out.exists(), "the diverged run left {}", out.display());
    // A folder the user made is left in place, with what they put in it.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let o = tiny_train(&out, "1", &["--train-limit", "20"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(out.join("notes.txt").is_file());

    let o = tiny_train(&dir.join("keep"), "1", &["--drop-path-keep", "2"]);
    assert_user_error(&o, "drop_path_keep_prob", "--drop-path-keep 2");
    assert_eq!(stderr(&o).matches("invalid configuration").count(), 1);
}

/// A 2x2 grayscale PNG (a valid file, written by hand so the test needs no image encoder).
const TINY_PNG: [u8; 71] = [
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 2, 0, 0, 0, 2, 8, 0, 0,
    0, 0, 87, 221, 82, 248, 0, 0, 0, 14, 73, 68, 65, 84, 120, 156, 99, 16, 80, 96, 48, 112, 0, 0,
    1, 118, 0, 161, 236, 48, 138, 244, 0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130,
];

/// A genotype of `blocks` blocks per cell in the compact text form: a chain of separable
/// convolutions, each block reading the one before.
fn long_genotype(blocks: usize) -> String {
    let cell: Vec<String> = (0..blocks)
        .map(|b| format!("sep_conv_3x3@{} identity@0 add", b + 1))
        .collect();
    let cell = cell.join(" | ");
    format!(
        "normal: {cell} -> {0} ; reduction: {cell} -> {0}",
        blocks + 1
    )
}

/// `nasnet train` of a `net` network (else as [`tiny_train`]) into `out`, under an address-space
/// limit of `limit_kib` KiB (`ulimit -v`), so that a check that allocates fails the test. Two
/// threads and two malloc arenas keep the address space of a many-core machine's thread pool
/// (reserved, not used) inside the limit.
fn train_under_address_limit(out: &std::path::Path, net: &str, limit_kib: u64) -> Output {
    Command::new("sh")
        .env("RAYON_NUM_THREADS", "2")
        .env("MALLOC_ARENA_MAX", "2")
        .arg("-c")
        .arg(format!("ulimit -v {limit_kib} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_nasnet"))
        .args(["train", "--quiet", "--epochs", "1", "--net", net])
        .args([
            "--train-limit",
            "128",
            "--test-limit",
            "32",
            "--batch-size",
            "32",
        ])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// The memory check built a shape-only model to count it, at a cost linear in N: `--net
/// 5000@24` took 935 MB to refuse and `--net 100000@24000` exhausted memory: under this 512 MiB
/// limit, in which `--net 1@24` trains, both aborted. It now estimates deep networks in
/// constant memory.
#[test]
fn the_memory_check_of_a_huge_network_fits_in_little_memory() {
    if !std::path::Path::new("/proc/meminfo").exists() {
        return; // the check only runs where the available memory is known
    }
    let dir = temp_dir("memory-limit");
    for net in ["100000@24000", "5000@24"] {
        let out = dir.join(net);
        let o = train_under_address_limit(&out, net, 512 << 10);
        assert_user_error(&o, "GiB available", &format!("--net {net}"));
        assert!(!out.exists());
    }
}

#[test]
fn models_too_large_for_the_machine_are_refused_before_allocating() {
    if !std::path::Path::new("/proc/meminfo").exists() {
        return; // the check only runs where the available memory is known
    }
    let dir = temp_dir("memory");
    let out = dir.join("run");
    let o = tiny_train(&out, "1", &["--net", "100@99984"]);
    assert_user_error(&o, "--no-memory-check", "--net 100@99984");
    assert!(stderr(&o).contains("GiB available"), "{}", stderr(&o));
    assert!(!out.exists());

    let arch = dir.join("long.txt");
    std::fs::write(&arch, long_genotype(10_000)).unwrap();
    let o = tiny_train(&out, "1", &["--arch", arch.to_str().unwrap()]);
    assert_user_error(&o, "GiB available", "a 10,000-block genotype");

    let images = dir.join("images");
    for (class, k) in [("a", 0), ("a", 1), ("b", 0), ("b", 1)] {
        std::fs::create_dir_all(images.join(class)).unwrap();
        std::fs::write(images.join(format!("{class}/{k}.png")), TINY_PNG).unwrap();
    }
    let data_dir = images.to_str().unwrap();
    let o = tiny_train(
        &out,
        "1",
        &[
            "--dataset",
            "folder",
            "--data-dir",
            data_dir,
            "--image-size",
            "100000",
        ],
    );
    assert_user_error(&o, "resized to 100000x100000", "--image-size 100000");

    let o = tiny_search(&dir.join("search"), &["--child-net", "100@99984"]);
    assert_user_error(&o, "GiB available", "search --child-net 100@99984");
    assert!(!dir.join("search").join("config.json").exists());

    // Evaluation checks its batch; the override lets a user who knows better go on.
    assert!(tiny_train(&out, "1", &[]).status.success());
    let eval = |extra: &[&str]| {
        nasnet()
            .args(["eval", "--test-limit", "32", "--batch-size", "100000000"])
            .args(extra)
            .arg("--checkpoint")
            .arg(&out)
            .output()
            .unwrap()
    };
    assert_user_error(&eval(&[]), "--no-memory-check", "eval --batch-size 1e8");
    let o = eval(&["--no-memory-check"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
