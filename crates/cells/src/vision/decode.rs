//! Decoding image files within fixed limits, for every reader of images (the CLI's `classify`,
//! the trainer's image folders): the format is taken from the content, not the file name (a PNG
//! named `.jpg` is read as the PNG it is, and an error says what the content really is); a
//! header declaring more pixels than [`MAX_IMAGE_SIDE`] or [`MAX_IMAGE_BYTES`] is refused before
//! any pixel is allocated; and a JPEG that stops before its end-of-image marker is refused as
//! truncated, as PIL (which the ports use) refuses it, instead of the decoder silently filling
//! the missing part.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::Path;

use image::{DynamicImage, ImageFormat, RgbImage};

use super::limits::{MAX_IMAGE_BYTES, MAX_IMAGE_SIDE};
use crate::error::CellsError;

/// The limits handed to the decoder.
fn decode_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_BYTES);
    limits
}

/// Decodes a JPEG or PNG file (format recognised from its first bytes) within the limits, as
/// it is stored (grayscale stays grayscale).
pub fn load_image(path: &Path) -> Result<DynamicImage, CellsError> {
    let fail = |reason: String| CellsError::Image {
        path: path.display().to_string(),
        reason,
    };
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut reader = BufReader::new(file);
    let head = reader.fill_buf().map_err(|e| fail(e.to_string()))?;
    let format = content_format(head).map_err(fail)?;
    let decoded = if format == ImageFormat::Jpeg {
        // The JPEG decoder reads the whole file into memory anyway; the check needs it.
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| fail(e.to_string()))?;
        if !jpeg_is_complete(&bytes) {
            return Err(fail(format!(
                "the JPEG data stops before its end-of-image marker: the file is truncated \
                 ({} bytes)",
                bytes.len()
            )));
        }
        decode_within_limits(std::io::Cursor::new(bytes), format)
    } else {
        decode_within_limits(reader, format)
    };
    decoded.map_err(|e| fail(format!("cannot decode its {} data: {e}", name(format))))
}

/// Decodes `reader` as `format` under the decode limits.
fn decode_within_limits<R: BufRead + Seek>(
    reader: R,
    format: ImageFormat,
) -> image::ImageResult<DynamicImage> {
    let mut reader = image::ImageReader::with_format(reader, format);
    reader.limits(decode_limits());
    reader.decode()
}

/// Decodes a JPEG or PNG file to 8-bit RGB (alpha dropped, grayscale replicated), as PIL's
/// `convert("RGB")` does, within the limits of [`load_image`].
pub fn load_rgb(path: &Path) -> Result<RgbImage, CellsError> {
    Ok(load_image(path)?.to_rgb8())
}

/// The format the content shows, when it is one this crate decodes; otherwise what the content
/// is, in words.
fn content_format(head: &[u8]) -> Result<ImageFormat, String> {
    match image::guess_format(head) {
        Ok(format @ (ImageFormat::Png | ImageFormat::Jpeg)) => Ok(format),
        Ok(other) => Err(format!(
            "the file is a {} image, not PNG or JPEG (the formats read)",
            name(other)
        )),
        Err(_) => {
            let start: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
            Err(format!(
                "the file is neither PNG nor JPEG (its content starts with bytes {})",
                if start.is_empty() {
                    "none: it is empty".to_string()
                } else {
                    start.join(" ")
                }
            ))
        }
    }
}

/// A format's usual name (`PNG`, `JPEG`, `GIF`...).
fn name(format: ImageFormat) -> String {
    match format {
        ImageFormat::Jpeg => "JPEG".into(),
        other => format!("{other:?}").to_uppercase(),
    }
}

/// Whether a JPEG stream reaches its end-of-image marker: walks the marker segments (by their
/// lengths) and, after each start-of-scan, the entropy-coded data (where a 0xFF byte is
/// followed by 0x00 or a restart marker) to the next marker. A stream cut anywhere before EOI
/// (in a header, a segment or the scan data) is incomplete.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut i = 2; // after SOI
    loop {
        // Skip to the next marker (0xFF, possibly repeated as fill bytes).
        while i < bytes.len() && bytes[i] != 0xFF {
            i += 1;
        }
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = bytes.get(i) else {
            return false;
        };
        i += 1;
        match marker {
            0xD9 => return true,
            0x01 | 0xD0..=0xD8 => continue, // standalone markers
            _ => {}
        }
        let Some(len) = bytes
            .get(i..i + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return false;
        };
        i += len;
        if i > bytes.len() {
            return false;
        }
        if marker == 0xDA {
            i = end_of_scan(bytes, i);
        }
    }
}

/// The position of the first marker after entropy-coded data starting at `i` (or the end).
fn end_of_scan(bytes: &[u8], mut i: usize) -> usize {
    while i + 1 < bytes.len() {
        if bytes[i] == 0xFF && bytes[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&bytes[i + 1]) {
            return i;
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_whole_jpeg_is_complete_and_every_cut_of_it_is_not() {
        let bytes = jpeg(33, 17);
        assert!(jpeg_is_complete(&bytes));
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(b"trailing bytes after EOI");
        assert!(jpeg_is_complete(&trailing));
        for cut in 2..bytes.len() - 1 {
            assert!(!jpeg_is_complete(&bytes[..cut]), "cut at {cut}");
        }
    }

    #[test]
    fn the_content_names_the_format() {
        assert_eq!(content_format(&jpeg(2, 2)), Ok(ImageFormat::Jpeg));
        let gif = content_format(b"GIF89a\x01\x00").unwrap_err();
        assert!(gif.contains("GIF image"), "{gif}");
        let text = content_format(b"{\"a\": 1}").unwrap_err();
        assert!(text.contains("7b 22 61"), "{text}");
    }
}
