//! The dtype switch every CPU custom op of this crate needs: its loops are generic over f32 and
//! f64, candle hands them a `CpuStorage` enum.

/// Evaluates `$body` with the type alias `$t` set to the element type of `$storage` (f32 or
/// f64); any other dtype is an error naming the op, `$what`.
macro_rules! for_float_storage {
    ($storage:expr, $what:expr, $t:ident => $body:expr) => {
        match $storage {
            candle_core::CpuStorage::F32(_) => {
                type $t = f32;
                $body
            }
            candle_core::CpuStorage::F64(_) => {
                type $t = f64;
                $body
            }
            other => candle_core::bail!(
                "{}: only f32 and f64 are supported, got {:?}",
                $what,
                candle_core::backend::BackendStorage::dtype(other)
            ),
        }
    };
}
