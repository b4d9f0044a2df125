//! JSON string escaping with `ensure_ascii` semantics, byte-for-byte what CPython's `json` module
//! writes: printable ASCII other than `"` and `\` stands as is; `\b \f \n \r \t`, `"` and `\` get
//! their short escapes; everything else (other control characters, DEL, and every non-ASCII code
//! point) becomes `\uXXXX` with lowercase hex digits, astral code points as a surrogate pair.

/// Bytes that can be copied verbatim: `0x20..=0x7e` except `"` (0x22) and `\` (0x5c).
#[inline(always)]
fn is_plain(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[inline]
fn push_u16_escape(out: &mut Vec<u8>, unit: u32) {
    out.extend_from_slice(&[
        b'\\',
        b'u',
        HEX[((unit >> 12) & 0xf) as usize],
        HEX[((unit >> 8) & 0xf) as usize],
        HEX[((unit >> 4) & 0xf) as usize],
        HEX[(unit & 0xf) as usize],
    ]);
}

/// Escape one code point that is not plain ASCII.
#[inline]
fn push_escaped_char(out: &mut Vec<u8>, c: char) {
    match c {
        '"' => out.extend_from_slice(b"\\\""),
        '\\' => out.extend_from_slice(b"\\\\"),
        '\n' => out.extend_from_slice(b"\\n"),
        '\r' => out.extend_from_slice(b"\\r"),
        '\t' => out.extend_from_slice(b"\\t"),
        '\u{08}' => out.extend_from_slice(b"\\b"),
        '\u{0c}' => out.extend_from_slice(b"\\f"),
        _ => {
            let cp = c as u32;
            if cp >= 0x1_0000 {
                let v = cp - 0x1_0000;
                push_u16_escape(out, 0xd800 | (v >> 10));
                push_u16_escape(out, 0xdc00 | (v & 0x3ff));
            } else {
                push_u16_escape(out, cp);
            }
        }
    }
}

/// Length of the leading run of plain bytes. Paths are almost always all plain, so we test 32
/// bytes at a time with a branch-free fold that the compiler turns into SIMD compares.
#[inline]
fn plain_prefix_len(bytes: &[u8]) -> usize {
    let mut i = 0;
    for block in bytes.chunks_exact(32) {
        if block.iter().fold(false, |acc, &b| acc | !is_plain(b)) {
            break;
        }
        i += 32;
    }
    while i < bytes.len() && is_plain(bytes[i]) {
        i += 1;
    }
    i
}

/// Append `s` as a quoted, `ensure_ascii`-escaped JSON string.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut i = plain_prefix_len(bytes);
    if i == bytes.len() {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    while i < bytes.len() {
        if is_plain(bytes[i]) {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        // `i` is on a char boundary: every byte before it in this run was ASCII.
        let c = s[i..].chars().next().expect("index is inside the string");
        push_escaped_char(out, c);
        i += c.len_utf8();
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::write_json_str;

    fn esc(s: &str) -> String {
        let mut v = Vec::new();
        write_json_str(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn plain_ascii_is_copied() {
        assert_eq!(
            esc("root://eos.cern.ch//a/b.root"),
            "\"root://eos.cern.ch//a/b.root\""
        );
        assert_eq!(esc(""), "\"\"");
        assert_eq!(esc(" ~"), "\" ~\"");
    }

    #[test]
    fn short_escapes() {
        assert_eq!(esc("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(esc("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
    }

    #[test]
    fn control_and_del_use_lowercase_u_escapes() {
        assert_eq!(esc("\u{0}\u{1f}\u{7f}"), r#""\u0000\u001f\u007f""#);
    }

    #[test]
    fn non_ascii_bmp_and_astral() {
        assert_eq!(esc("é"), r#""\u00e9""#);
        assert_eq!(esc("\u{ffff}"), r#""\uffff""#);
        assert_eq!(esc("😀"), r#""\ud83d\ude00""#);
        assert_eq!(esc("a\u{10ffff}b"), r#""a\udbff\udfffb""#);
        assert_eq!(esc("μμ/π"), r#""\u03bc\u03bc/\u03c0""#);
    }
}
