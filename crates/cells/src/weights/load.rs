//! Reading the checkpoints users download (docs/semantics.md#weight-names): safetensors (timm's
//! hub files), PyTorch's zip archive (`torch.save` since 1.6) and PyTorch's legacy pickle stream
//! (the 2017-2018 releases such as pretrainedmodels' `nasnetamobile-7e03cead.pth`), into one
//! name -> tensor map with the stored dtypes, wrappers (`state_dict`, `model`, `module.`)
//! removed.
//!
//! candle's own `pickle` module reads only the zip archive and at most one wrapper key given in
//! advance, and its parser trusts the file's sizes, so the pickled objects are read by this
//! crate's bounded parser (module `pickle`: lengths checked against the bytes left, memo
//! references and nesting counted against limits) and this module adds the rest: the legacy
//! stream's layout (as PyTorch's `torch/serialization.py` `_legacy_save` writes it: a pickled
//! magic number, protocol version and system info, then the pickled object whose storages are
//! persistent ids, then the pickled list of storage keys, then each storage as an 8-byte
//! little-endian element count and its raw bytes), storage views, strided tensors, and finding
//! the state dict inside a wrapper.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Read, Seek};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::pickle::{self, Object};
use crate::error::CellsError;

/// Keys under which training scripts wrap the state dict (`{"state_dict": ..., "epoch": ...}`).
const WRAPPER_KEYS: [&str; 3] = ["state_dict", "model", "model_state_dict"];

/// Reads a checkpoint into a name -> tensor map on `device`, whatever its format: safetensors,
/// PyTorch's zip archive or PyTorch's legacy pickle stream (protocol 2, as `torch.save` writes
/// it). The state dict is found inside a `state_dict` / `model` wrapper, `module.` prefixes
/// (from `DataParallel`) are removed, and each tensor keeps its stored dtype (a model built
/// from the map converts). A file that is none of these, or is truncated or malformed, or holds a
/// NaN or infinite weight (the tensor named), is a [`CellsError::Checkpoint`] saying why.
pub fn load_state_dict(
    path: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>, CellsError> {
    let fail = |reason: String| CellsError::Checkpoint {
        path: path.display().to_string(),
        reason,
    };
    let tensors = match Format::of(path)? {
        Format::Safetensors => candle_core::safetensors::load(path, device)
            .map_err(|e| fail(format!("bad safetensors file: {e}")))?,
        Format::Zip => read_zip(path, device).map_err(fail)?,
        Format::Legacy => read_legacy(path, device).map_err(fail)?,
        Format::Unknown => {
            return Err(fail(
                "not a checkpoint: neither safetensors, a PyTorch zip archive nor a legacy PyTorch pickle"
                    .into(),
            ))
        }
    };
    let tensors = strip_module_prefix(tensors);
    refuse_non_finite(&tensors).map_err(fail)?;
    Ok(tensors)
}

/// An error naming the first tensor (by name) holding a NaN or an infinity: such weights make
/// every output NaN, which would otherwise pass as a result (`"prob": null`, classes in
/// arbitrary order). Integer tensors (counters such as `num_batches_tracked`) are not checked.
fn refuse_non_finite(tensors: &HashMap<String, Tensor>) -> Result<(), String> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let bad = non_finite_count(&tensors[name])
            .map_err(|e| format!("cannot check tensor `{name}`: {e}"))?;
        if bad > 0 {
            return Err(format!(
                "tensor `{name}` holds {bad} non-finite value(s) (NaN or infinity): the weights are \
                 damaged"
            ));
        }
    }
    Ok(())
}

/// How many values of a floating-point tensor are NaN or infinite (0 for integer tensors).
fn non_finite_count(t: &Tensor) -> candle_core::Result<usize> {
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F64 => flat
            .to_vec1::<f64>()?
            .iter()
            .filter(|v| !v.is_finite())
            .count(),
        DType::F32 | DType::F16 | DType::BF16 => flat
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?
            .iter()
            .filter(|v| !v.is_finite())
            .count(),
        _ => 0,
    })
}

/// Removes the `module.` prefix `DataParallel` adds to every name.
fn strip_module_prefix(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    tensors
        .into_iter()
        .map(|(k, v)| match k.strip_prefix("module.") {
            Some(rest) => (rest.to_string(), v),
            None => (k, v),
        })
        .collect()
}

/// The on-disk formats, told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Safetensors,
    Zip,
    Legacy,
    Unknown,
}

/// The legacy stream's first pickle: protocol 2, `LONG1` of 10 bytes, PyTorch's magic number
/// 0x1950a86a20f9469cfc6c (little-endian), `STOP`.
const LEGACY_MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
];

/// Largest `data.pkl` read from a zip archive (a state dict's takes about 100 bytes per tensor).
const MAX_DATA_PKL: u64 = 64 << 20;

/// safetensors caps its JSON header at 100 MB.
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

impl Format {
    fn of(path: &Path) -> Result<Self, CellsError> {
        let io = |source| CellsError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let mut head = Vec::with_capacity(16);
        file.by_ref().take(16).read_to_end(&mut head).map_err(io)?;
        Ok(Self::from_head(&head))
    }

    fn from_head(head: &[u8]) -> Self {
        if head.starts_with(b"PK\x03\x04") {
            return Format::Zip;
        }
        if head.starts_with(&LEGACY_MAGIC) {
            return Format::Legacy;
        }
        // An 8-byte header length, then the JSON header; a length past the file is reported
        // by the reader as truncation, an absurd one means the file is something else.
        if head.len() > 8 && head[8] == b'{' {
            let mut n = [0u8; 8];
            n.copy_from_slice(&head[..8]);
            if u64::from_le_bytes(n) < MAX_SAFETENSORS_HEADER {
                return Format::Safetensors;
            }
        }
        Format::Unknown
    }
}

/// Where one tensor's values lie: which storage, and its view of it (in elements).
#[derive(Debug, Clone)]
struct TensorRef {
    storage: String,
    dtype: DType,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

type Res<T> = Result<T, String>;

/// Reads a PyTorch zip archive: `<root>/data.pkl` is the pickled object, `<root>/data/<key>`
/// each storage's raw little-endian bytes.
fn read_zip(path: &Path, device: &Device) -> Res<HashMap<String, Tensor>> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| format!("bad zip archive (truncated or damaged): {e}"))?;
    let pkl = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i)?.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("data.pkl"))
        .ok_or("a zip archive without data.pkl is not a PyTorch checkpoint")?;
    let root = pkl.trim_end_matches("data.pkl").to_string();
    let object = {
        let mut bytes = Vec::new();
        zip.by_name(&pkl)
            .map_err(|e| e.to_string())?
            .take(MAX_DATA_PKL + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{pkl}: {e}"))?;
        if bytes.len() as u64 > MAX_DATA_PKL {
            return Err(format!("{pkl} is larger than {MAX_DATA_PKL} bytes"));
        }
        parse_pickle(&mut Cursor::new(&bytes[..]), bytes.len() as u64)?
    };
    let refs = state_dict_refs(object)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = HashMap::with_capacity(refs.len());
    for (name, r) in refs {
        if !storages.contains_key(&r.storage) {
            let entry_name = format!("{root}data/{}", r.storage);
            let mut entry = zip
                .by_name(&entry_name)
                .map_err(|e| format!("storage {entry_name} of `{name}`: {e}"))?;
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| format!("storage {entry_name}: {e}"))?;
            storages.insert(r.storage.clone(), bytes);
        }
        let t = build_tensor(&name, &r, &storages[&r.storage], device)?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Reads the legacy stream (`_legacy_save`): magic number, protocol version, system info, the
/// object, the sorted storage keys, then each storage as a u64 element count and raw bytes.
fn read_legacy(path: &Path, device: &Device) -> Res<HashMap<String, Tensor>> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut r = BufReader::new(file);
    let mut magic = [0u8; LEGACY_MAGIC.len()];
    r.read_exact(&mut magic).map_err(|e| e.to_string())?;
    let version = parse_pickle(&mut r, file_len)?;
    if !matches!(version, Object::Int(1001)) {
        return Err(format!(
            "unsupported legacy protocol version: {} (1001 expected)",
            version.describe()
        ));
    }
    check_sys_info(parse_pickle(&mut r, file_len)?)?;
    let object = parse_pickle(&mut r, file_len)?;
    let mut dtypes = HashMap::new();
    collect_storage_dtypes(&object, &mut dtypes)?;
    let keys = match parse_pickle(&mut r, file_len)? {
        Object::List(keys) => keys,
        other => {
            return Err(format!(
                "expected the list of storage keys, got {}",
                other.describe()
            ))
        }
    };
    let mut storages = HashMap::with_capacity(keys.len());
    for key in keys {
        let Object::Unicode(key) = key else {
            return Err(format!("storage key is not a string: {}", key.describe()));
        };
        let dtype = *dtypes
            .get(&key)
            .ok_or_else(|| format!("storage {key} is listed but no tensor uses it"))?;
        let bytes = read_storage(&mut r, file_len, &key, dtype)?;
        storages.insert(key, bytes);
    }
    let mut out = HashMap::new();
    for (name, t) in state_dict_refs(object)? {
        let bytes = storages
            .get(&t.storage)
            .ok_or_else(|| format!("`{name}` uses storage {} the file lacks", t.storage))?;
        out.insert(name.clone(), build_tensor(&name, &t, bytes, device)?);
    }
    Ok(out)
}

/// One legacy storage: its element count (u64, little-endian) and `count * element size` bytes,
/// refused before allocating when the file is too short for them.
fn read_storage<R: Read + Seek>(r: &mut R, file_len: u64, key: &str, dtype: DType) -> Res<Vec<u8>> {
    let truncated = || format!("file truncated in storage {key}");
    let mut count = [0u8; 8];
    r.read_exact(&mut count).map_err(|_| truncated())?;
    let bytes = u64::from_le_bytes(count)
        .checked_mul(dtype.size_in_bytes() as u64)
        .ok_or_else(truncated)?;
    let pos = r.stream_position().map_err(|e| e.to_string())?;
    if bytes > file_len.saturating_sub(pos) {
        return Err(truncated());
    }
    let mut data = vec![0u8; bytes as usize];
    r.read_exact(&mut data).map_err(|_| truncated())?;
    Ok(data)
}

/// Refuses big-endian legacy files (their storages would need byte swapping).
fn check_sys_info(info: Object) -> Res<()> {
    let Object::Dict(entries) = info else {
        return Err(format!(
            "expected the system info dict, got {}",
            info.describe()
        ));
    };
    let big_endian = entries.iter().any(|(k, v)| {
        matches!(k, Object::Unicode(s) if s == "little_endian") && *v == Object::Bool(false)
    });
    if big_endian {
        return Err("big-endian checkpoints are not supported".into());
    }
    Ok(())
}

/// One pickle (up to its `STOP`) from `r`, positioned inside a stream of `len` bytes.
fn parse_pickle<R: BufRead + Seek>(r: &mut R, len: u64) -> Res<Object> {
    let pos = r.stream_position().map_err(|e| e.to_string())?;
    pickle::parse(r, len.saturating_sub(pos), pos)
        .map_err(|e| format!("malformed or truncated pickle: {e}"))
}

/// The state dict inside `object` (itself, or under a wrapper key), as tensor references by
/// name; entries that are not tensors (`_metadata`, numbers) are left out.
fn state_dict_refs(object: Object) -> Res<Vec<(String, TensorRef)>> {
    let mut entries = match object {
        Object::Dict(entries) => entries,
        other => {
            return Err(format!(
                "the checkpoint holds no dict of tensors but {}",
                other.describe()
            ))
        }
    };
    for _ in 0..3 {
        let refs = tensor_refs(&entries)?;
        if !refs.is_empty() {
            return Ok(refs);
        }
        let wrapped = entries.into_iter().find_map(|(k, v)| match (k, v) {
            (Object::Unicode(k), Object::Dict(inner)) if WRAPPER_KEYS.contains(&k.as_str()) => {
                Some(inner)
            }
            _ => None,
        });
        entries = wrapped
            .ok_or("the checkpoint holds no tensors (and no `state_dict` or `model` entry)")?;
    }
    Err("no tensors found within three levels of wrappers".into())
}

/// The tensors among a dict's entries.
fn tensor_refs(entries: &[(Object, Object)]) -> Res<Vec<(String, TensorRef)>> {
    let mut out = Vec::new();
    for (k, v) in entries {
        if let (Object::Unicode(name), Some(r)) = (k, tensor_ref(v)) {
            out.push((
                name.clone(),
                r.map_err(|e| format!("tensor `{name}`: {e}"))?,
            ));
        }
    }
    Ok(out)
}

/// If `o` rebuilds a tensor (`_rebuild_tensor_v2`, the older `_rebuild_tensor`, wrapped in
/// `_rebuild_parameter` or `_rebuild_from_type_v2`), where its values lie.
fn tensor_ref(o: &Object) -> Option<Res<TensorRef>> {
    let Object::Reduce { callable, args } = o else {
        return None;
    };
    let Object::Class {
        module_name,
        class_name,
    } = callable.as_ref()
    else {
        return None;
    };
    let Object::Tuple(args) = args.as_ref() else {
        return None;
    };
    match (module_name.as_str(), class_name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => Some(rebuild_args(args)),
        ("torch._utils", "_rebuild_parameter") => tensor_ref(args.first()?),
        ("torch._tensor", "_rebuild_from_type_v2") => {
            let (func, inner) = (args.first()?, args.get(2)?);
            tensor_ref(&Object::Reduce {
                callable: Box::new(func.clone()),
                args: Box::new(inner.clone()),
            })
        }
        _ => None,
    }
}

/// `(storage, storage_offset, size, stride, ...)`.
fn rebuild_args(args: &[Object]) -> Res<TensorRef> {
    let [storage, offset, size, stride, ..] = args else {
        return Err(format!(
            "expected at least 4 rebuild arguments, got {}",
            args.len()
        ));
    };
    let storage = storage_id(storage)?;
    let offset = as_usize(offset)?
        .checked_add(storage.view_offset)
        .ok_or("storage offset overflows")?;
    Ok(TensorRef {
        storage: storage.key,
        dtype: storage.dtype,
        offset,
        size: usize_tuple(size)?,
        stride: usize_tuple(stride)?,
    })
}

/// A persistent id `('storage', <Type>Storage, key, location, numel[, view_metadata])`; a legacy
/// view `(view_key, offset, size)` reads its root storage from `offset` on.
struct StorageId {
    key: String,
    dtype: DType,
    view_offset: usize,
}

fn storage_id(o: &Object) -> Res<StorageId> {
    let Object::PersistentLoad(id) = o else {
        return Err("the storage is not a persistent id".into());
    };
    let Object::Tuple(id) = id.as_ref() else {
        return Err("malformed storage id".into());
    };
    let (Some(Object::Class { class_name, .. }), Some(Object::Unicode(key))) =
        (id.get(1), id.get(2))
    else {
        return Err("malformed storage id (no storage type and key)".into());
    };
    let view_offset = match id.get(5) {
        Some(Object::Tuple(view)) => as_usize(view.get(1).ok_or("malformed storage view")?)?,
        _ => 0,
    };
    Ok(StorageId {
        key: key.clone(),
        dtype: storage_dtype(class_name)?,
        view_offset,
    })
}

fn storage_dtype(class_name: &str) -> Res<DType> {
    Ok(match class_name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "ByteStorage" | "BoolStorage" | "UntypedStorage" => DType::U8,
        other => return Err(format!("unsupported storage type {other}")),
    })
}

/// Every storage the object refers to, with its element type (the legacy stream's storages
/// carry only an element count, so their byte size needs it).
fn collect_storage_dtypes(o: &Object, out: &mut HashMap<String, DType>) -> Res<()> {
    match o {
        Object::PersistentLoad(_) => {
            let id = storage_id(o)?;
            out.insert(id.key, id.dtype);
        }
        Object::Tuple(v) | Object::List(v) => {
            for x in v {
                collect_storage_dtypes(x, out)?;
            }
        }
        Object::Dict(entries) => {
            for (k, v) in entries {
                collect_storage_dtypes(k, out)?;
                collect_storage_dtypes(v, out)?;
            }
        }
        Object::Reduce { callable, args } | Object::Build { callable, args } => {
            collect_storage_dtypes(callable, out)?;
            collect_storage_dtypes(args, out)?;
        }
        _ => {}
    }
    Ok(())
}

fn as_usize(o: &Object) -> Res<usize> {
    match o {
        Object::Int(v) => {
            usize::try_from(*v).map_err(|_| format!("expected a non-negative integer, got {v}"))
        }
        other => Err(format!(
            "expected a non-negative integer, got {}",
            other.describe()
        )),
    }
}

fn usize_tuple(o: &Object) -> Res<Vec<usize>> {
    match o {
        Object::Tuple(v) => v.iter().map(as_usize).collect(),
        other => Err(format!(
            "expected a tuple of sizes, got {}",
            other.describe()
        )),
    }
}

/// Copies a tensor's elements out of its storage's bytes (any strides, bounds checked).
fn build_tensor(name: &str, r: &TensorRef, storage: &[u8], device: &Device) -> Res<Tensor> {
    if r.size.len() != r.stride.len() {
        return Err(format!("`{name}`: size and stride differ in rank"));
    }
    let data = gather(
        storage,
        r.dtype.size_in_bytes(),
        r.offset,
        &r.size,
        &r.stride,
    )
    .map_err(|e| format!("`{name}`: {e}"))?;
    Tensor::from_raw_buffer(&data, r.dtype, &r.size, device).map_err(|e| format!("`{name}`: {e}"))
}

/// The bytes of the elements at `offset + sum(i_d * stride_d)` in row-major order of `size`.
fn gather(
    bytes: &[u8],
    elem: usize,
    offset: usize,
    size: &[usize],
    stride: &[usize],
) -> Res<Vec<u8>> {
    let numel = size
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .ok_or("tensor size overflows")?;
    if numel == 0 {
        return Ok(Vec::new());
    }
    let last = size
        .iter()
        .zip(stride)
        .try_fold(offset, |acc, (&n, &s)| {
            acc.checked_add((n - 1).checked_mul(s)?)
        })
        .and_then(|i| i.checked_add(1)?.checked_mul(elem))
        .ok_or("tensor extent overflows")?;
    if last > bytes.len() {
        return Err(format!(
            "needs {last} bytes of its storage, which holds {} (truncated file?)",
            bytes.len()
        ));
    }
    // A view that repeats elements (a zero stride, as `expand` makes) could ask for far more
    // memory than the file holds; state dicts do not hold such views.
    let stored = bytes.len() / elem;
    if numel > stored {
        return Err(format!(
            "a view of {numel} elements on a storage of {stored} (repeated elements) is not supported"
        ));
    }
    if is_row_major(size, stride) {
        return Ok(bytes[offset * elem..offset * elem + numel * elem].to_vec());
    }
    let mut out = Vec::with_capacity(numel * elem);
    let mut index = vec![0usize; size.len()];
    for _ in 0..numel {
        let at = offset + index.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(&bytes[at * elem..(at + 1) * elem]);
        for d in (0..size.len()).rev() {
            index[d] += 1;
            if index[d] < size[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(out)
}

fn is_row_major(size: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1;
    for (&n, &s) in size.iter().zip(stride).rev() {
        if n != 1 && s != expected {
            return false;
        }
        expected *= n;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_follows_strides() {
        // A 2 x 3 row-major storage of u8 read transposed (3 x 2, strides (1, 3)).
        let storage = [0u8, 1, 2, 3, 4, 5];
        let t = gather(&storage, 1, 0, &[3, 2], &[1, 3]).unwrap();
        assert_eq!(t, [0, 3, 1, 4, 2, 5]);
        // Contiguous from an offset, and a view past the end is refused.
        assert_eq!(
            gather(&storage, 1, 2, &[2, 2], &[2, 1]).unwrap(),
            [2, 3, 4, 5]
        );
        assert!(gather(&storage, 1, 3, &[2, 2], &[2, 1]).is_err());
        // A zero stride may repeat elements up to the storage's size, not beyond.
        assert_eq!(gather(&storage, 1, 1, &[6], &[0]).unwrap(), [1; 6]);
        let err = gather(&storage, 1, 0, &[1 << 40], &[0]).unwrap_err();
        assert!(err.contains("repeated elements"), "{err}");
        assert!(gather(&storage, 1, 0, &[1 << 40, 1 << 40], &[0, 0]).is_err());
    }

    fn class(module_name: &str, class_name: &str) -> Object {
        Object::Class {
            module_name: module_name.into(),
            class_name: class_name.into(),
        }
    }

    /// `_rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', 4), 0, (2, 2), (2, 1))`.
    fn tensor_object(key: &str) -> Object {
        let id = Object::Tuple(vec![
            Object::Unicode("storage".into()),
            class("torch", "FloatStorage"),
            Object::Unicode(key.into()),
            Object::Unicode("cpu".into()),
            Object::Int(4),
        ]);
        let pair = |a, b| Object::Tuple(vec![Object::Int(a), Object::Int(b)]);
        Object::Reduce {
            callable: Box::new(class("torch._utils", "_rebuild_tensor_v2")),
            args: Box::new(Object::Tuple(vec![
                Object::PersistentLoad(Box::new(id)),
                Object::Int(0),
                pair(2, 2),
                pair(2, 1),
                Object::Bool(false),
            ])),
        }
    }

    #[test]
    fn the_state_dict_is_found_inside_wrappers() {
        let inner = Object::Dict(vec![(Object::Unicode("w".into()), tensor_object("0"))]);
        let wrapped = Object::Dict(vec![
            (Object::Unicode("epoch".into()), Object::Int(3)),
            (Object::Unicode("state_dict".into()), inner.clone()),
        ]);
        for (what, object) in [("plain", inner), ("wrapped", wrapped)] {
            let refs = state_dict_refs(object).unwrap();
            assert_eq!(refs.len(), 1, "{what}");
            assert_eq!(
                (refs[0].0.as_str(), refs[0].1.size.as_slice()),
                ("w", &[2, 2][..])
            );
        }
        let no_tensors = Object::Dict(vec![(Object::Unicode("epoch".into()), Object::Int(3))]);
        assert!(state_dict_refs(no_tensors).is_err());
        assert!(state_dict_refs(Object::List(vec![])).is_err());
    }

    #[test]
    fn formats_are_told_apart_by_their_first_bytes() {
        assert_eq!(Format::from_head(b"PK\x03\x04rest"), Format::Zip);
        assert_eq!(Format::from_head(&LEGACY_MAGIC), Format::Legacy);
        let mut st = 20u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{\"a\"");
        assert_eq!(Format::from_head(&st), Format::Safetensors);
        // Text whose ninth byte is a brace has an absurd header length.
        assert_eq!(Format::from_head(b"abcdefgh{text}"), Format::Unknown);
        assert_eq!(Format::from_head(b"hello world, text"), Format::Unknown);
    }
}
