//! Sorting file paths by bytes, which for UTF-8 is the code-point order Python's `sorted` uses.
//!
//! Paths in one dataset share long prefixes (`root://host//store/mc/Campaign/Sample/...`), so a
//! plain comparison sort spends its time re-reading the same 150 bytes. We strip the common prefix
//! once, sort `(next 8 bytes as a big-endian u64, index)` pairs, and compare the rest only on ties.

use std::cmp::Ordering;

use crate::prefetch::{prefetch, AHEAD};

/// Length of the common prefix of `a` and `b`, eight bytes at a time.
pub fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut i = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let x = u64::from_le_bytes(x.try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(y.try_into().expect("8 bytes"));
        if x != y {
            return i + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + a[i..]
        .iter()
        .zip(&b[i..])
        .take_while(|(x, y)| x == y)
        .count()
}

#[inline]
fn head_u64(tail: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = tail.len().min(8);
    buf[..n].copy_from_slice(&tail[..n]);
    u64::from_be_bytes(buf)
}

/// The permutation that sorts `keys` ascending by bytes (stable for equal keys).
pub fn sorted_order(keys: &[&[u8]]) -> Vec<u32> {
    assert!(
        keys.len() <= u32::MAX as usize,
        "more than 2^32 files in one dataset"
    );
    let n = keys.len();
    // Chunks that split_fileset made are sorted already: check that first, prefetching ahead
    // because each path lives in its own Python object somewhere on the heap.
    let sorted = (1..n).all(|i| {
        if let Some(ahead) = keys.get(i + AHEAD) {
            prefetch(ahead);
        }
        keys[i - 1] <= keys[i]
    });
    if sorted {
        return (0..n as u32).collect();
    }
    let first = keys[0];
    let lcp = keys[1..].iter().fold(first.len(), |acc, k| {
        acc.min(common_prefix_len(&first[..acc], k))
    });
    let mut order: Vec<(u64, u32)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            if let Some(ahead) = keys.get(i + AHEAD) {
                prefetch(&ahead[lcp.min(ahead.len())..(lcp + 8).min(ahead.len())]);
            }
            (head_u64(&k[lcp..]), i as u32)
        })
        .collect();
    order.sort_unstable_by(|a, b| match a.0.cmp(&b.0) {
        Ordering::Equal => keys[a.1 as usize][lcp..]
            .cmp(&keys[b.1 as usize][lcp..])
            .then(a.1.cmp(&b.1)),
        other => other,
    });
    order.into_iter().map(|(_, i)| i).collect()
}

/// Sort `items` in place by the bytes `key` returns.
pub fn sort_by_path<T: Copy, F: Fn(&T) -> &[u8]>(items: &mut Vec<T>, key: F) {
    if items.len() < 2 {
        return;
    }
    let keys: Vec<&[u8]> = items.iter().map(&key).collect();
    let order = sorted_order(&keys);
    if order.iter().enumerate().all(|(i, &j)| i == j as usize) {
        return;
    }
    let sorted: Vec<T> = order.iter().map(|&i| items[i as usize]).collect();
    *items = sorted;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(words: &[&str]) {
        let keys: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        let order = sorted_order(&keys);
        let got: Vec<&str> = order.iter().map(|&i| words[i as usize]).collect();
        let mut want = words.to_vec();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn sorts_like_str_order() {
        check(&[]);
        check(&["a"]);
        check(&["b", "a", "c"]);
        check(&[
            "prefix/zz",
            "prefix/a",
            "prefix/",
            "prefix/a\u{0}",
            "prefix/ab",
        ]);
        check(&["x\u{0}", "x", "x\u{0}\u{0}", "x\u{1}"]);
        check(&["é", "e", "z", "\u{10000}", "\u{ffff}"]);
        check(&["same", "same", "sam"]);
    }

    #[test]
    fn long_common_prefix() {
        let words: Vec<String> = (0..1000)
            .map(|i| {
                format!(
                    "root://eos//store/mc/{:05}/{}.root",
                    (i * 7919) % 1000,
                    i % 3
                )
            })
            .collect();
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        check(&refs);
    }

    #[test]
    fn common_prefix_lengths() {
        assert_eq!(common_prefix_len(b"", b"abc"), 0);
        assert_eq!(common_prefix_len(b"abcdefghij", b"abcdefghij"), 10);
        assert_eq!(common_prefix_len(b"abcdefghij", b"abcdefgXij"), 7);
        assert_eq!(
            common_prefix_len(b"abcdefghijklmnop", b"abcdefghijklmnoQ"),
            15
        );
        assert_eq!(common_prefix_len(b"abcdefghi", b"abcdefgh"), 8);
        assert_eq!(common_prefix_len(b"Xbc", b"abc"), 0);
    }

    #[test]
    fn equal_keys_keep_input_order() {
        let keys: Vec<&[u8]> = vec![b"b", b"a", b"b", b"a"];
        assert_eq!(sorted_order(&keys), vec![1, 3, 0, 2]);
    }
}
