//! The repository README's library example is the crate's doc test (which `cargo test --doc`
//! runs): the README shows the doc test's visible lines, so a change to one that is not made to
//! the other fails here.

/// The visible lines of the first plain (runnable) code block of the crate docs in `lib_rs`:
/// the `//! ` prefix removed, rustdoc's hidden `# ` lines dropped.
fn doc_test_lines(lib_rs: &str) -> Vec<&str> {
    let docs: Vec<&str> = lib_rs
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = docs
        .iter()
        .position(|l| *l == "```")
        .expect("the crate docs have a runnable example");
    let len = docs[start + 1..]
        .iter()
        .position(|l| *l == "```")
        .expect("the example's block is closed");
    docs[start + 1..start + 1 + len]
        .iter()
        .copied()
        .filter(|l| !(l.starts_with("# ") || *l == "#"))
        .collect()
}

#[test]
fn the_readme_example_is_the_doc_test() {
    let lib_rs = include_str!("../src/lib.rs");
    let readme = include_str!("../../../README.md");
    let lines = doc_test_lines(lib_rs);
    assert!(lines.len() > 10, "the doc test is too short: {lines:?}");
    let block = format!("```rust\n{}\n```\n", lines.join("\n"));
    assert!(
        readme.contains(&block),
        "README.md does not show the doc test of crates/cells/src/lib.rs as it is:\n{block}"
    );
}
