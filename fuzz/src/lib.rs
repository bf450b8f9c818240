//! Fuzzing harnesses for every file format a user hands to nasnet-rs.
//!
//! Each harness takes arbitrary bytes, writes them where the library expects a file (a scratch
//! folder private to the process) when the API reads files, and calls the same reader the CLI
//! uses. A harness never checks the error, only that the reader returns: a panic, an abort, an
//! allocation above [`alloc::MAX_ALLOCATION`] or a hang is a bug. Round trips (a genotype parsed
//! must print and parse back to itself) are asserted where the library promises them.
//!
//! Each harness also says whether the reader accepted the input: the libFuzzer entry points in
//! `fuzz_targets/` ignore it, the tests at the bottom replay the seed corpus in `corpus/` through
//! the harnesses and check that every seed is accepted except those named `reject-*`, so CI
//! checks the harnesses and the corpus without a fuzzer. Several inputs hold more than one file:
//! [`parts`] splits them at [`SEPARATOR`].

pub mod alloc;
pub mod checkpoint;
pub mod data;
pub mod genotype;
pub mod run_dir;
pub mod scratch;
pub mod weights;

#[global_allocator]
static ALLOCATOR: alloc::CappedAlloc = alloc::CappedAlloc;

/// Separates the files packed into one fuzz input (a line no seed file contains).
pub const SEPARATOR: &[u8] = b"\n=====\n";

/// Splits `data` at [`SEPARATOR`] into at most `max` parts (the last part keeps any further
/// separators), so a mutation of one file leaves the others intact.
pub fn parts(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() + 1 < max {
        match find(rest, SEPARATOR) {
            Some(at) => {
                out.push(&rest[..at]);
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}

/// Joins files into one fuzz input (the inverse of [`parts`]), for building the seed corpus.
pub fn join(files: &[&[u8]]) -> Vec<u8> {
    files.join(SEPARATOR)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A harness: one fuzz input in, whether the reader accepted it out.
pub type Harness = fn(&[u8]) -> bool;

/// Every harness by target name (the names of `fuzz_targets/` and `corpus/`).
pub const TARGETS: [(&str, Harness); 8] = [
    ("genotype_json", genotype::json),
    ("genotype_text", genotype::text),
    ("idx", data::idx),
    ("cifar", data::cifar),
    ("image_folder", data::image_folder),
    ("checkpoint", checkpoint::checkpoint),
    ("run_dir", run_dir::run_dir),
    ("weights", weights::weights),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Runs every seed file of `target` through its harness: each must be accepted unless its
    /// name starts with `reject-`. Returns how many ran.
    fn replay(target: &str) -> usize {
        let harness = TARGETS.iter().find(|(n, _)| *n == target).unwrap().1;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in &files {
            let accepted = harness(&std::fs::read(f).unwrap());
            let name = f.file_name().unwrap().to_string_lossy();
            assert_eq!(accepted, !name.starts_with("reject-"), "{}", f.display());
        }
        assert!(files.len() >= 2, "{target}: fewer than 2 seeds");
        files.len()
    }

    #[test]
    fn parts_inverts_join() {
        let files: [&[u8]; 3] = [b"a", b"", b"c\nd"];
        assert_eq!(parts(&join(&files), 3), files);
        assert_eq!(parts(&join(&files), 2), [&b"a"[..], &join(&files[1..])]);
        assert_eq!(parts(b"no separator", 4), [b"no separator"]);
    }

    #[test]
    fn genotype_json_seeds() {
        replay("genotype_json");
    }

    #[test]
    fn genotype_text_seeds() {
        replay("genotype_text");
    }

    #[test]
    fn idx_seeds() {
        replay("idx");
    }

    #[test]
    fn cifar_seeds() {
        replay("cifar");
    }

    #[test]
    fn image_folder_seeds() {
        replay("image_folder");
    }

    #[test]
    fn checkpoint_seeds() {
        replay("checkpoint");
    }

    #[test]
    fn run_dir_seeds() {
        replay("run_dir");
    }

    #[test]
    fn weights_seeds() {
        replay("weights");
    }

    #[test]
    fn a_huge_declared_size_is_refused_not_allocated() {
        // An IDX header announcing 10^12 bytes (1000 images of 10^9 pixels) on 4 bytes of data.
        let mut images = 0x0803u32.to_be_bytes().to_vec();
        for d in [1000u32, 1_000_000, 1000] {
            images.extend(d.to_be_bytes());
        }
        images.extend([0; 4]);
        assert!(!data::idx(&join(&[&images, b""])));
    }
}
