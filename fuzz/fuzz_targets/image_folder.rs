//! libFuzzer entry point of the `image_folder` target (harness: `nasnet_fuzz::data::image_folder`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nasnet_fuzz::data::image_folder(data);
});
