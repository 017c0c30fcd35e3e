//! ICC color profiles carried from an input to its outputs.
//!
//! The model works on the input's samples as they are, so the output's
//! samples are in the input's color space: a photo tagged Display P3 or
//! Adobe RGB must keep its profile, or color-managed viewers show it as
//! sRGB (duller, shifted). Only a profile that can describe the output is
//! carried: a well-formed ICC header, an RGB data color space (outputs are
//! always RGB or RGBA; a gray or CMYK input's profile does not apply to
//! them) and a device class an image may embed. The profile's bytes are
//! copied, never interpreted further.

/// Largest profile carried (real RGB profiles are a few KB to a few hundred
/// KB; JPEG holds at most about 16 MB).
pub const MAX_PROFILE_BYTES: usize = 8 << 20;

/// The ICC header: 128 bytes, then the tag count.
const HEADER_BYTES: usize = 132;

/// The part of `bytes` to carry to an RGB output, or why none of it can be.
/// The reason completes "its ICC color profile is not carried to the output:".
pub fn rgb_output_profile(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < HEADER_BYTES || &bytes[36..40] != b"acsp" {
        return Err("it is not a well-formed ICC profile".to_string());
    }
    let declared = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if declared < HEADER_BYTES || declared > bytes.len() {
        return Err(format!(
            "it is not a well-formed ICC profile (it says {declared} bytes, holds {})",
            bytes.len()
        ));
    }
    if declared > MAX_PROFILE_BYTES {
        return Err(format!(
            "it is {} MiB, more than the {} MiB carried",
            declared >> 20,
            MAX_PROFILE_BYTES >> 20
        ));
    }
    let class = &bytes[12..16];
    if !matches!(class, b"mntr" | b"scnr" | b"prtr" | b"spac") {
        return Err(format!(
            "it is a '{}' profile, not one an image embeds",
            signature(class)
        ));
    }
    let color_space = &bytes[16..20];
    if color_space != b"RGB " {
        return Err(format!(
            "it describes '{}' samples and the output is RGB (colors as decoded, read as sRGB)",
            signature(color_space)
        ));
    }
    Ok(&bytes[..declared])
}

/// A four-byte ICC signature as text (trailing spaces dropped, anything not
/// printable shown as '?').
fn signature(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim_end()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile header of `size` bytes with the given class and color
    /// space (what the checks read; the tags are zeros).
    fn profile(size: usize, class: &[u8; 4], color_space: &[u8; 4]) -> Vec<u8> {
        let mut bytes = vec![0u8; size.max(HEADER_BYTES)];
        bytes[..4].copy_from_slice(&(size as u32).to_be_bytes());
        bytes[12..16].copy_from_slice(class);
        bytes[16..20].copy_from_slice(color_space);
        bytes[36..40].copy_from_slice(b"acsp");
        bytes
    }

    #[test]
    fn an_rgb_display_profile_is_carried_whole() {
        let bytes = profile(600, b"mntr", b"RGB ");
        assert_eq!(rgb_output_profile(&bytes), Ok(&bytes[..]));
    }

    #[test]
    fn padding_after_the_declared_size_is_left_behind() {
        let mut bytes = profile(600, b"mntr", b"RGB ");
        bytes.extend_from_slice(&[0; 7]);
        assert_eq!(rgb_output_profile(&bytes).unwrap().len(), 600);
    }

    #[test]
    fn gray_and_cmyk_profiles_do_not_describe_an_rgb_output() {
        for (space, shown) in [(b"GRAY", "'GRAY'"), (b"CMYK", "'CMYK'")] {
            let reason = rgb_output_profile(&profile(600, b"mntr", space)).unwrap_err();
            assert!(reason.contains(shown), "{reason}");
        }
    }

    #[test]
    fn device_links_and_abstract_profiles_are_not_embedded() {
        for class in [b"link", b"abst", b"nmcl"] {
            let reason = rgb_output_profile(&profile(600, class, b"RGB ")).unwrap_err();
            assert!(reason.contains("not one an image embeds"), "{reason}");
        }
    }

    #[test]
    fn malformed_profiles_are_refused_with_the_reason() {
        let good = profile(600, b"mntr", b"RGB ");
        assert!(rgb_output_profile(&good[..100]).is_err());
        let mut no_magic = good.clone();
        no_magic[36..40].copy_from_slice(b"xxxx");
        assert!(rgb_output_profile(&no_magic).is_err());
        let mut too_long = good.clone();
        too_long[..4].copy_from_slice(&601u32.to_be_bytes());
        let reason = rgb_output_profile(&too_long).unwrap_err();
        assert!(reason.contains("says 601 bytes, holds 600"), "{reason}");
        let mut too_short = good;
        too_short[..4].copy_from_slice(&100u32.to_be_bytes());
        assert!(rgb_output_profile(&too_short).is_err());
    }

    #[test]
    fn an_oversized_profile_is_not_carried() {
        let reason =
            rgb_output_profile(&profile(MAX_PROFILE_BYTES + 1, b"mntr", b"RGB ")).unwrap_err();
        assert!(reason.contains("more than the 8 MiB"), "{reason}");
        assert!(rgb_output_profile(&profile(MAX_PROFILE_BYTES, b"mntr", b"RGB ")).is_ok());
    }

    #[test]
    fn signatures_are_shown_printable() {
        assert_eq!(signature(b"RGB "), "RGB");
        assert_eq!(signature(&[0x41, 0x00, 0xff, 0x42]), "A??B");
    }
}
