//! Any byte string given to the safetensors reader must give tensors or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phi3_formats::SafetensorsModel;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = SafetensorsModel::from_bytes("fuzz.safetensors", data) {
        for t in model.tensors.values() {
            let _ = t.bytes().len();
            let _ = t.to_f32_vec();
        }
    }
});
