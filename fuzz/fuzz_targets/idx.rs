//! libFuzzer entry point of the `idx` target (harness: `nasnet_fuzz::data::idx`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nasnet_fuzz::data::idx(data);
});
