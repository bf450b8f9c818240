//! libFuzzer entry point of the `run_dir` target (harness: `nasnet_fuzz::run_dir::run_dir`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nasnet_fuzz::run_dir::run_dir(data);
});
