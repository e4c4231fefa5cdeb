//! Making an image's variants, without I/O: the bytes are decoded with limits (dimensions and
//! pixel count capped before any pixel is decoded, against decompression bombs; the format
//! told by the content, never by a declared type); `thumbnail` fits 200×200 and `medium`
//! 800×800, aspect kept, never upscaled, re-encoded compressed (JPEG at quality 80, or
//! lossless WebP for an image with transparency), and never larger than the original (a
//! variant of the original's size that would be larger is the original's bytes).

use std::io::Cursor;

use image::{
    DynamicImage, ImageDecoder, ImageFormat, ImageReader,
    codecs::{jpeg::JpegEncoder, webp::WebPEncoder},
};

/// What an image may be.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Widest and tallest accepted, in pixels.
    pub max_side: u32,
    /// Most pixels accepted (width × height).
    pub max_pixels: u64,
    /// Most bytes the decoded image may take (pixels × bytes a pixel of its color type: a
    /// 16-bit RGBA image takes 8 a pixel, twice an 8-bit one).
    pub max_decoded_bytes: u64,
}

/// One encoded image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Its format.
    pub format: Format,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// The formats taken and made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JPEG.
    Jpeg,
    /// PNG.
    Png,
    /// WebP.
    Webp,
}

impl Format {
    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
        }
    }

    /// The extension of its object keys.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
            Self::Webp => "webp",
        }
    }

    /// The format of a key's extension.
    pub fn of_extension(extension: &str) -> Option<Self> {
        [Self::Jpeg, Self::Png, Self::Webp]
            .into_iter()
            .find(|f| f.extension() == extension)
    }
}

/// An image's variants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Made {
    /// The original's format and size (its bytes are the input's).
    pub original: Encoded,
    /// Fits 200×200.
    pub thumbnail: Encoded,
    /// Fits 800×800.
    pub medium: Encoded,
}

/// Why an image cannot be processed, ever: the job fails at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The box a thumbnail fits in.
pub const THUMBNAIL: u32 = 200;
/// The box a medium variant fits in.
pub const MEDIUM: u32 = 800;

/// The variants of the image in `bytes`.
pub fn make(bytes: &[u8], limits: Limits) -> Result<Made, Invalid> {
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| Invalid(format!("unreadable: {e}")))
    };
    let format = match reader()?.format() {
        Some(ImageFormat::Jpeg) => Format::Jpeg,
        Some(ImageFormat::Png) => Format::Png,
        Some(ImageFormat::WebP) => Format::Webp,
        Some(other) => {
            return Err(Invalid(format!(
                "{other:?} images are not taken: JPEG, PNG or WebP only"
            )));
        }
        None => return Err(Invalid("not a JPEG, PNG or WebP image".into())),
    };
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| Invalid(format!("undecodable {format:?}: {e}")))?;
    if width == 0 || height == 0 {
        return Err(Invalid("the image has no pixels".into()));
    }
    if width > limits.max_side || height > limits.max_side {
        return Err(Invalid(format!(
            "{width}×{height} is too large: at most {} pixels a side",
            limits.max_side
        )));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(Invalid(format!(
            "{width}×{height} is too large: at most {} pixels",
            limits.max_pixels
        )));
    }
    let bytes_per_pixel = reader()?
        .into_decoder()
        .map_err(|e| Invalid(format!("undecodable {format:?}: {e}")))?
        .color_type()
        .bytes_per_pixel();
    let decoded = u64::from(width) * u64::from(height) * u64::from(bytes_per_pixel);
    if decoded > limits.max_decoded_bytes {
        return Err(Invalid(format!(
            "{width}×{height} at {bytes_per_pixel} bytes a pixel is too large: it would take \
             {} MiB decoded, at most {} MiB",
            decoded.div_ceil(1024 * 1024),
            limits.max_decoded_bytes / (1024 * 1024)
        )));
    }
    let mut reader = reader()?;
    let mut decoding = image::Limits::default();
    decoding.max_image_width = Some(limits.max_side);
    decoding.max_image_height = Some(limits.max_side);
    decoding.max_alloc = Some(limits.max_decoded_bytes);
    reader.limits(decoding);
    let image = reader
        .decode()
        .map_err(|e| Invalid(format!("undecodable {format:?}: {e}")))?;
    let original = Encoded {
        bytes: bytes.to_vec(),
        format,
        width,
        height,
    };
    Ok(Made {
        thumbnail: variant(&image, THUMBNAIL, &original)?,
        medium: variant(&image, MEDIUM, &original)?,
        original,
    })
}

/// `image` fitted in `side`×`side` (never upscaled) and re-encoded; the original's bytes when
/// that would be larger at the original's size.
fn variant(image: &DynamicImage, side: u32, original: &Encoded) -> Result<Encoded, Invalid> {
    let fitted = if image.width() <= side && image.height() <= side {
        image.clone()
    } else {
        image.thumbnail(side, side)
    };
    let encoded = encode(&fitted)?;
    let same_size = fitted.width() == original.width && fitted.height() == original.height;
    if same_size && encoded.bytes.len() >= original.bytes.len() {
        return Ok(original.clone());
    }
    Ok(encoded)
}

/// JPEG at quality 80, or lossless WebP when the image has transparency.
fn encode(image: &DynamicImage) -> Result<Encoded, Invalid> {
    let mut bytes = Vec::new();
    let format = if image.color().has_alpha() {
        let rgba = image.to_rgba8();
        WebPEncoder::new_lossless(&mut bytes)
            .encode(
                rgba.as_raw(),
                rgba.width(),
                rgba.height(),
                image::ExtendedColorType::Rgba8,
            )
            .map_err(|e| Invalid(format!("cannot encode: {e}")))?;
        Format::Webp
    } else {
        let rgb = image.to_rgb8();
        JpegEncoder::new_with_quality(&mut bytes, 80)
            .encode_image(&rgb)
            .map_err(|e| Invalid(format!("cannot encode: {e}")))?;
        Format::Jpeg
    };
    Ok(Encoded {
        bytes,
        format,
        width: image.width(),
        height: image.height(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb, Rgba};

    const LIMITS: Limits = Limits {
        max_side: 10_000,
        max_pixels: 40_000_000,
        max_decoded_bytes: 160 * 1024 * 1024,
    };

    /// A photo-like gradient of `width`×`height` in `format`.
    fn picture(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
        let image = ImageBuffer::from_fn(width, height, |x, y| {
            Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
        });
        let mut bytes = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(image)
            .write_to(&mut bytes, format)
            .expect("encodes");
        bytes.into_inner()
    }

    /// The CRC-32 of PNG chunks.
    fn crc32(bytes: &[u8]) -> u32 {
        !bytes.iter().fold(u32::MAX, |crc, &b| {
            (0..8).fold(crc ^ u32::from(b), |c, _| {
                if c & 1 == 1 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                }
            })
        })
    }

    #[test]
    fn variants_fit_their_box_keep_the_aspect_and_are_smaller() {
        let png = picture(1600, 1000, ImageFormat::Png);
        let made = make(&png, LIMITS).expect("valid");
        assert_eq!((made.original.width, made.original.height), (1600, 1000));
        assert_eq!(made.original.format, Format::Png);
        assert_eq!((made.thumbnail.width, made.thumbnail.height), (200, 125));
        assert_eq!((made.medium.width, made.medium.height), (800, 500));
        for variant in [&made.thumbnail, &made.medium] {
            assert_eq!(variant.format, Format::Jpeg);
            assert!(variant.bytes.len() < png.len());
            let decoded = image::load_from_memory(&variant.bytes).expect("decodable");
            assert_eq!(
                (decoded.width(), decoded.height()),
                (variant.width, variant.height)
            );
        }
    }

    #[test]
    fn a_small_image_is_never_upscaled_nor_made_larger() {
        let jpeg = picture(120, 90, ImageFormat::Jpeg);
        let made = make(&jpeg, LIMITS).expect("valid");
        for variant in [&made.thumbnail, &made.medium] {
            assert_eq!((variant.width, variant.height), (120, 90));
            assert!(variant.bytes.len() <= jpeg.len());
        }
    }

    #[test]
    fn transparency_is_kept_as_lossless_webp() {
        let image = ImageBuffer::from_fn(400, 400, |x, _| Rgba([10, 20, 30, (x % 256) as u8]));
        let mut png = Cursor::new(Vec::new());
        DynamicImage::ImageRgba8(image)
            .write_to(&mut png, ImageFormat::Png)
            .expect("encodes");
        let made = make(png.get_ref(), LIMITS).expect("valid");
        assert_eq!(made.thumbnail.format, Format::Webp);
        let decoded = image::load_from_memory(&made.thumbnail.bytes).expect("decodable");
        assert!(decoded.color().has_alpha());
    }

    #[test]
    fn the_format_is_told_by_the_content() {
        let webp_named_nothing = picture(300, 300, ImageFormat::WebP);
        assert_eq!(
            make(&webp_named_nothing, LIMITS)
                .expect("valid")
                .original
                .format,
            Format::Webp
        );
        for bad in [
            &b""[..],
            b"not an image",
            b"\x89PNG\r\n\x1a\nbroken",
            b"GIF89a......",
        ] {
            assert!(make(bad, LIMITS).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_decoding() {
        // A PNG header claiming 100,000 × 100,000 pixels (its checksum right), with almost
        // nothing after it.
        let mut bomb = picture(8, 8, ImageFormat::Png);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        let why = make(&bomb, LIMITS).expect_err("refused").0;
        assert!(why.contains("too large"), "{why}");
        let tall = picture(20, 3000, ImageFormat::Png);
        let small = Limits {
            max_pixels: 50_000,
            ..LIMITS
        };
        assert!(
            make(&tall, small)
                .expect_err("refused")
                .0
                .contains("pixels")
        );
    }

    #[test]
    fn a_deep_image_is_measured_by_its_decoded_bytes_not_only_its_pixels() {
        // 300×200 16-bit RGBA: 60,000 pixels (well within the pixel limit), 480,000 bytes
        // decoded.
        let deep = ImageBuffer::from_fn(300, 200, |x, y| {
            Rgba([(x * 200) as u16, (y * 300) as u16, 7, u16::MAX])
        });
        let mut png = Cursor::new(Vec::new());
        DynamicImage::ImageRgba16(deep)
            .write_to(&mut png, ImageFormat::Png)
            .expect("encodes");
        let tight = Limits {
            max_decoded_bytes: 400_000,
            ..LIMITS
        };
        let why = make(png.get_ref(), tight).expect_err("refused").0;
        assert!(why.contains("8 bytes a pixel"), "{why}");
        // The same pixels at 8 bits (240,000 bytes) are taken.
        let shallow = image::load_from_memory(png.get_ref())
            .expect("decodes")
            .to_rgba8();
        let mut png = Cursor::new(Vec::new());
        DynamicImage::ImageRgba8(shallow)
            .write_to(&mut png, ImageFormat::Png)
            .expect("encodes");
        assert!(make(png.get_ref(), tight).is_ok());
    }
}
