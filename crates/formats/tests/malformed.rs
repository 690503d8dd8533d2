//! Tier 6: one handcrafted broken file per failure mode. Each must give its
//! typed error, naming the file, and never panic.

use std::path::Path;

use phi3_formats::gguf::Value;
use phi3_formats::{DType, ErrorKind, FormatError, GgufFile, GgufWriter, ModelFiles, SafetensorsModel};

/// A GGUF image assembled field by field, so any field can be made wrong.
struct Gguf {
    version: u32,
    kv: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<i64>, u32, u64)>,
    n_tensors_override: Option<u64>,
    n_kv_override: Option<u64>,
    data: Vec<u8>,
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

impl Gguf {
    /// A valid file: one u32 key and one 4×8 F32 tensor.
    fn valid() -> Gguf {
        Gguf {
            version: 3,
            kv: vec![("general.architecture".into(), 8, string(b"phi3"))],
            tensors: vec![("w".into(), vec![4, 8], 0, 0)],
            n_tensors_override: None,
            n_kv_override: None,
            data: vec![0u8; 4 * 8 * 4],
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(
            &self
                .n_tensors_override
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        b.extend_from_slice(&self.n_kv_override.unwrap_or(self.kv.len() as u64).to_le_bytes());
        for (k, ty, v) in &self.kv {
            b.extend(string(k.as_bytes()));
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(v);
        }
        for (name, dims, ty, off) in &self.tensors {
            b.extend(string(name.as_bytes()));
            b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&off.to_le_bytes());
        }
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend_from_slice(&self.data);
        b
    }
}

const NAME: &str = "broken.gguf";

fn open(g: &Gguf) -> Result<GgufFile, FormatError> {
    GgufFile::from_bytes(NAME, &g.bytes())
}

fn expect_err(r: Result<GgufFile, FormatError>) -> FormatError {
    let e = r.expect_err("the file must be rejected");
    assert!(e.to_string().contains(NAME), "error must name the file: {e}");
    e
}

#[test]
fn the_valid_baseline_opens() {
    let f = open(&Gguf::valid()).unwrap();
    assert_eq!(f.tensors.len(), 1);
    assert_eq!(f.tensor("w").unwrap().shape, vec![8, 4]);
}

#[test]
fn wrong_magic() {
    let mut b = Gguf::valid().bytes();
    b[..4].copy_from_slice(b"GGML");
    let e = expect_err(GgufFile::from_bytes(NAME, &b));
    assert!(matches!(e.kind, ErrorKind::BadMagic { .. }), "{e}");
}

#[test]
fn unsupported_versions() {
    for v in [0, 1, 4, u32::MAX] {
        let mut g = Gguf::valid();
        g.version = v;
        let e = expect_err(open(&g));
        assert!(matches!(e.kind, ErrorKind::UnsupportedVersion(x) if x == v), "{e}");
    }
}

#[test]
fn truncated_at_every_length_is_an_error_not_a_panic() {
    let b = Gguf::valid().bytes();
    for len in 0..b.len() {
        let e = expect_err(GgufFile::from_bytes(NAME, &b[..len]));
        assert!(
            matches!(
                e.kind,
                ErrorKind::Truncated { .. } | ErrorKind::DataPastEnd { .. } | ErrorKind::ImplausibleCount { .. }
            ),
            "cut at {len}: {e}"
        );
    }
}

#[test]
fn tensor_data_past_the_end() {
    let mut g = Gguf::valid();
    g.data.truncate(64);
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::DataPastEnd { .. }), "{e}");
}

#[test]
fn offset_beyond_the_file() {
    let mut g = Gguf::valid();
    g.tensors[0].3 = u64::MAX - 31;
    let e = expect_err(open(&g));
    assert!(
        matches!(
            e.kind,
            ErrorKind::MisalignedOffset { .. } | ErrorKind::DataPastEnd { .. }
        ),
        "{e}"
    );
    g.tensors[0].3 = 1 << 40;
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::DataPastEnd { .. }), "{e}");
}

#[test]
fn misaligned_offset() {
    let mut g = Gguf::valid();
    g.tensors[0].3 = 4;
    g.data.extend_from_slice(&[0u8; 32]);
    let e = expect_err(open(&g));
    assert!(
        matches!(
            e.kind,
            ErrorKind::MisalignedOffset {
                offset: 4,
                alignment: 32,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn bad_alignment_value() {
    let mut g = Gguf::valid();
    g.kv.push(("general.alignment".into(), 4, 24u32.to_le_bytes().to_vec()));
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::BadAlignment(24)), "{e}");
}

#[test]
fn duplicate_keys() {
    let mut g = Gguf::valid();
    g.kv.push(("general.architecture".into(), 8, string(b"llama")));
    let e = expect_err(open(&g));
    assert!(
        matches!(&e.kind, ErrorKind::DuplicateKey { key } if key == "general.architecture"),
        "{e}"
    );
}

#[test]
fn duplicate_tensors() {
    let mut g = Gguf::valid();
    g.tensors.push(("w".into(), vec![4, 8], 0, 128));
    g.data.extend_from_slice(&[0u8; 128]);
    let e = expect_err(open(&g));
    assert!(
        matches!(&e.kind, ErrorKind::DuplicateTensor { name } if name == "w"),
        "{e}"
    );
}

#[test]
fn overlapping_tensors() {
    let mut g = Gguf::valid();
    g.tensors.push(("v".into(), vec![4, 8], 0, 64));
    g.data.extend_from_slice(&[0u8; 64]);
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::OverlappingTensors { .. }), "{e}");
}

#[test]
fn element_count_overflow() {
    let mut g = Gguf::valid();
    g.tensors[0].1 = vec![1 << 32, 1 << 32, 1 << 8];
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::ElementCountOverflow { .. }), "{e}");
    // fits in u64 elements but not in bytes
    g.tensors[0].1 = vec![1 << 31, 1 << 31];
    let e = expect_err(open(&g));
    assert!(
        matches!(
            e.kind,
            ErrorKind::DataPastEnd { .. } | ErrorKind::ElementCountOverflow { .. }
        ),
        "{e}"
    );
}

#[test]
fn negative_dimension_and_too_many_dimensions() {
    let mut g = Gguf::valid();
    g.tensors[0].1 = vec![4, -8];
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::BadShape { .. }), "{e}");
    g.tensors[0].1 = vec![1, 1, 1, 1, 1];
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::TooManyDims { n_dims: 5, .. }), "{e}");
}

#[test]
fn unknown_tensor_type() {
    let mut g = Gguf::valid();
    g.tensors[0].2 = 4; // Q4_2, removed from ggml
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::UnknownTensorType { type_id: 4, .. }), "{e}");
}

#[test]
fn quant_row_not_a_whole_number_of_blocks() {
    let mut g = Gguf::valid();
    g.tensors[0].2 = DType::Q4_0.ggml_id();
    g.tensors[0].1 = vec![33, 1];
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::BadShape { .. }), "{e}");
}

#[test]
fn unknown_value_type() {
    let mut g = Gguf::valid();
    g.kv.push(("x".into(), 13, vec![0; 8]));
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::UnknownValueType { type_id: 13, .. }), "{e}");
}

#[test]
fn implausible_counts_do_not_allocate() {
    let mut g = Gguf::valid();
    g.n_tensors_override = Some(u64::MAX);
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::ImplausibleCount { .. }), "{e}");
    let mut g = Gguf::valid();
    g.n_kv_override = Some(1 << 60);
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::ImplausibleCount { .. }), "{e}");
    // an array claiming 2^62 u32 elements
    let mut g = Gguf::valid();
    let mut v = 4u32.to_le_bytes().to_vec();
    v.extend_from_slice(&(1u64 << 62).to_le_bytes());
    g.kv.push(("big".into(), 9, v));
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::ImplausibleCount { .. }), "{e}");
}

#[test]
fn string_longer_than_the_file() {
    let mut g = Gguf::valid();
    g.kv[0].2 = (1u64 << 50).to_le_bytes().to_vec();
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::Truncated { .. }), "{e}");
}

#[test]
fn invalid_utf8_in_a_key() {
    let mut g = Gguf::valid();
    g.kv[0].0 = String::new();
    let mut b = g.bytes();
    // the first key is empty; rewrite the value string "phi3" as invalid UTF-8
    let pos = b.windows(4).position(|w| w == b"phi3").unwrap();
    b[pos] = 0xff;
    let e = expect_err(GgufFile::from_bytes(NAME, &b));
    assert!(matches!(e.kind, ErrorKind::InvalidUtf8 { .. }), "{e}");
}

#[test]
fn nesting_too_deep() {
    let mut g = Gguf::valid();
    // array of array of ... (6 levels) of u8
    let mut v = Vec::new();
    for _ in 0..5 {
        v.extend_from_slice(&9u32.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
    }
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&1u64.to_le_bytes());
    v.push(7);
    g.kv.push(("deep".into(), 9, v));
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::NestingTooDeep(_)), "{e}");
}

#[test]
fn bool_out_of_range() {
    let mut g = Gguf::valid();
    g.kv.push(("flag".into(), 7, vec![2]));
    let e = expect_err(open(&g));
    assert!(matches!(e.kind, ErrorKind::BadMetadata { .. }), "{e}");
}

#[test]
fn writer_output_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.gguf");
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("phi3".into()));
    w.set("a.list", Value::Array(vec![Value::I32(-1), Value::I32(7)]));
    w.set("a.f", Value::F64(0.25));
    let vals: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.add_bytes("t", DType::F32, vec![3, 4], vals.clone());
    w.add_bytes("u", DType::F16, vec![5], vec![0u8; 10]);
    w.write(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(
        f.get("a.list"),
        Some(&Value::Array(vec![Value::I32(-1), Value::I32(7)]))
    );
    assert_eq!(f.get("a.f"), Some(&Value::F64(0.25)));
    let t = f.tensor("t").unwrap();
    assert_eq!(t.shape, vec![3, 4]);
    assert_eq!(t.bytes(), &vals[..]);
    assert!(t.is_mapped());
    assert_eq!(f.info("u").unwrap().offset % 32, 0);
    // no temporary file is left behind
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn writer_rejects_a_size_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    let mut w = GgufWriter::new();
    w.add_bytes("t", DType::F32, vec![3, 4], vec![0u8; 7]);
    let e = w.write(&path).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BadShape { .. }), "{e}");
    assert!(!path.exists(), "nothing half-written is left");
}

// ---- safetensors ----

fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

fn st_err(bytes: &[u8]) -> FormatError {
    let e = SafetensorsModel::from_bytes("broken.safetensors", bytes).expect_err("must be rejected");
    assert!(e.to_string().contains("broken.safetensors"), "{e}");
    e
}

#[test]
fn safetensors_valid_baseline() {
    let b = safetensors_bytes(
        r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#,
        &[0u8; 16],
    );
    let m = SafetensorsModel::from_bytes("ok.safetensors", &b).unwrap();
    assert_eq!(m.tensor("w").unwrap().shape, vec![2, 2]);
}

#[test]
fn safetensors_malformed_cases() {
    // truncated header length
    assert!(matches!(st_err(&[1, 2, 3]).kind, ErrorKind::Safetensors(_)));
    // header longer than the file
    let mut b = safetensors_bytes("{}", &[]);
    b[..8].copy_from_slice(&1000u64.to_le_bytes());
    assert!(matches!(st_err(&b).kind, ErrorKind::Safetensors(_)));
    // invalid JSON
    assert!(matches!(
        st_err(&safetensors_bytes("{not json", &[])).kind,
        ErrorKind::Safetensors(_)
    ));
    // data past the end
    let b = safetensors_bytes(
        r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#,
        &[0u8; 8],
    );
    assert!(matches!(st_err(&b).kind, ErrorKind::Safetensors(_)));
    // shape and byte size disagree
    let b = safetensors_bytes(
        r#"{"w":{"dtype":"F32","shape":[3,2],"data_offsets":[0,16]}}"#,
        &[0u8; 16],
    );
    assert!(matches!(st_err(&b).kind, ErrorKind::Safetensors(_)));
    // overflowing shape
    let b = safetensors_bytes(
        r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}"#,
        &[0u8; 16],
    );
    assert!(matches!(st_err(&b).kind, ErrorKind::Safetensors(_)));
    // unsupported dtype
    let b = safetensors_bytes(r#"{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#, &[0u8; 4]);
    assert!(matches!(&st_err(&b).kind, ErrorKind::UnsupportedDType { name, .. } if name == "w"));
    // invalid UTF-8 in the header
    let mut b = safetensors_bytes(r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0u8; 4]);
    b[10] = 0xff;
    assert!(matches!(st_err(&b).kind, ErrorKind::Safetensors(_)));
}

#[test]
fn misaligned_safetensors_data_is_copied_aligned() {
    // a 9-byte header puts the data at offset 17: not 4-aligned
    let header = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut b = safetensors_bytes(header, &[]);
    b.extend_from_slice(&1.5f32.to_le_bytes());
    let m = SafetensorsModel::from_bytes("odd.safetensors", &b).unwrap();
    let t = m.tensor("w").unwrap();
    assert_eq!(t.bytes().as_ptr() as usize % 4, 0);
    assert_eq!(t.to_f32_vec().unwrap(), vec![1.5]);
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn sharded_folder_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shard = safetensors_bytes(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0u8; 4]);
    write(&d.join("s1.safetensors"), &shard);
    write(&d.join("s2.safetensors"), &shard);
    // index names a tensor its shard lacks
    write(
        &d.join("model.safetensors.index.json"),
        br#"{"weight_map":{"a":"s1.safetensors","b":"s1.safetensors"}}"#,
    );
    let e = SafetensorsModel::open_dir(d).unwrap_err();
    assert!(
        matches!(&e.kind, ErrorKind::MissingInShard { name, .. } if name == "b"),
        "{e}"
    );
    // the same tensor in two shards
    write(
        &d.join("model.safetensors.index.json"),
        br#"{"weight_map":{"a":"s1.safetensors","x":"s2.safetensors"}}"#,
    );
    let e = SafetensorsModel::open_dir(d).unwrap_err();
    assert!(
        matches!(&e.kind, ErrorKind::DuplicateTensor { name } if name == "a"),
        "{e}"
    );
    // a shard path that escapes the folder
    write(
        &d.join("model.safetensors.index.json"),
        br#"{"weight_map":{"a":"../s1.safetensors"}}"#,
    );
    let e = SafetensorsModel::open_dir(d).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Json(_)), "{e}");
    // a missing shard file
    write(
        &d.join("model.safetensors.index.json"),
        br#"{"weight_map":{"a":"s9.safetensors"}}"#,
    );
    let e = SafetensorsModel::open_dir(d).unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::Io(_)) && e.to_string().contains("s9.safetensors"),
        "{e}"
    );
    // broken index JSON
    write(&d.join("model.safetensors.index.json"), b"{");
    let e = SafetensorsModel::open_dir(d).unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::Json(_)) && e.to_string().contains("index.json"),
        "{e}"
    );
}

#[test]
fn model_files_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.gguf");
    let e = ModelFiles::open(&missing).unwrap_err();
    assert!(e.to_string().contains("nope.gguf"), "{e}");
    let empty = dir.path().join("empty.gguf");
    write(&empty, b"GG");
    let e = ModelFiles::open(&empty).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Truncated { .. }), "{e}");
    let text = dir.path().join("notes.txt");
    write(&text, b"hello world");
    let e = ModelFiles::open(&text).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::NotAModel(_)), "{e}");
    let e = ModelFiles::open(dir.path()).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::NotAModel(_)), "{e}");
}
