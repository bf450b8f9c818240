//! libFuzzer entry point of the `genotype_text` target (harness: `nasnet_fuzz::genotype::text`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nasnet_fuzz::genotype::text(data);
});
