//! libFuzzer entry point of the `genotype_json` target (harness: `nasnet_fuzz::genotype::json`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nasnet_fuzz::genotype::json(data);
});
