//! libFuzzer entry point of the `cifar` target (harness: `nasnet_fuzz::data::cifar`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nasnet_fuzz::data::cifar(data);
});
