//! Any byte string given to the GGUF reader, and on to the model loader,
//! must give a model or an error: never a panic, never an out-of-bounds read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phi3_formats::{GgufFile, ModelFiles};

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = GgufFile::from_bytes("fuzz.gguf", data) {
        for t in file.all_tensors() {
            let _ = t.bytes().len();
            let _ = t.to_f32_vec();
        }
        let _ = phi3_model::Model::from_files(ModelFiles::Gguf(file));
    }
});
