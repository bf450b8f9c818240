//! The size limits every image path shares (decoding, resizing, cropping), in one place, so that
//! no step after a bounded decode can ask for more than the decode was allowed: a resize keeping
//! the aspect ratio of a 1 x 65535 image would otherwise ask for 12.9 GB.

use crate::error::CellsError;

/// The longest side an image may have, decoded or after a resize or crop (a header declaring
/// more is refused before any pixel is allocated).
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// The most bytes one image may take, decoded (what the decoder may allocate) or after a resize
/// or crop (its RGB pixels): 128 MiB, so that a decoded image's RGB8 copy stays under 384 MiB
/// even for a one-channel image (found by fuzzing: a JPEG header declaring 32262 x 9990 pixels
/// took about 1 GB before).
pub const MAX_IMAGE_BYTES: u64 = 128 << 20;

/// An error ([`CellsError::ImageTooLarge`]) when an image of size `from` brought to
/// `width x height` would be beyond the limits, so a resize or crop is refused before it
/// allocates (for resizes done by other code, e.g. the `image` crate's).
pub fn check_output_size(from: (u32, u32), width: usize, height: usize) -> Result<(), CellsError> {
    check_step(from, width, height, height)
}

/// [`check_output_size`] for a step whose largest buffer has `rows` rows of `width` pixels
/// (a resize's horizontal pass keeps the source's rows).
pub(crate) fn check_step(
    from: (u32, u32),
    width: usize,
    height: usize,
    rows: usize,
) -> Result<(), CellsError> {
    let side = MAX_IMAGE_SIDE as usize;
    let bytes = (width as u64)
        .saturating_mul(rows.max(height) as u64)
        .saturating_mul(3);
    if width > side || height > side || bytes > MAX_IMAGE_BYTES {
        return Err(CellsError::ImageTooLarge {
            from,
            to: (width, height),
        });
    }
    Ok(())
}
