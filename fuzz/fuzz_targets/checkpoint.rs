//! libFuzzer entry point of the `checkpoint` target (harness: `nasnet_fuzz::checkpoint::checkpoint`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nasnet_fuzz::checkpoint::checkpoint(data);
});
