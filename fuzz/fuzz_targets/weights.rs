//! libFuzzer entry point of the `weights` target (harness: `nasnet_fuzz::weights::weights`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nasnet_fuzz::weights::weights(data);
});
