//! Stable splitting (`split_fileset(..., stable=True)`): content-defined chunk boundaries.
//!
//! Positional splitting cuts a dataset's sorted files every N files, so one file added early
//! moves every later boundary and changes every later chunk's hash. Here a file ends a chunk
//! when its own hash says so, as rsync, restic and FastCDC place boundaries in a byte stream, so
//! a file added or removed changes only the chunks next to it.
//!
//! **This rule is part of chunkwise's format**: a cache keyed by the chunks it makes stays valid
//! only while every platform, Python and chunkwise version cuts the same chunks. It is written
//! down in the README ("Stable splitting: the rule"); a change to it is a new format, with a new
//! [`TAG`]. Everything is exact integer arithmetic on a SHA-256 digest: nothing seeded, nothing
//! in floating point, nothing that depends on the platform.
//!
//! ## The rule, for one dataset
//!
//! Files `f_0 .. f_{n-1}` in split_fileset's sorted path order; `S` the size asked for
//! (`files_per_chunk`, or `events_per_chunk`), at most [`MAX_SIZE`]; each file's weight `w_i` is 1
//! (files) or `min(num_entries, M)` (events). With `m = max(1, S / 4)`, `M = 4 S` and
//! `D = S - m + 1`:
//!
//! 1. `h_i` is the first 8 bytes, big-endian, of
//!    `SHA-256(TAG || u64be(len(dataset)) || dataset || path)` (UTF-8; see [`boundary_hash`]).
//! 2. `f_i` is a *candidate* when `h_i * D < w_i * 2^64`: probability `min(1, w_i / D)`.
//! 3. A candidate `f_i` with `i < n - 1` is a *cut* when the weight of the files after the
//!    previous candidate (or after the dataset's start) up to and including `f_i` is at least `m`.
//! 4. Cuts split the dataset into *stretches*. A stretch of weight `W <= M` is one chunk; a
//!    heavier one is cut into `k = ceil(W / M)` pieces, after each file `f_i` at which
//!    `floor(k C_i / W)` (with `C_i` the stretch's weight up to and including `f_i`) goes up.
//!
//! Rule 3 counts from the previous *candidate*, not from the chunk's start as FastCDC does, so
//! whether a file is a cut depends only on the files back to the previous candidate: that is
//! what bounds the effect of a change to two stretches (the README proves it).

use sha2::{Digest, Sha256};

use crate::sort::common_prefix_len;

/// The first bytes of every message hashed for a boundary: the rule's name and version.
pub const TAG: &[u8] = b"chunkwise-stable-split/1";

/// Sizes above this (2^60) behave as this, so that every product below fits in a `u128`.
pub const MAX_SIZE: u128 = 1 << 60;

/// Paths hashed together: a block shares the SHA-256 state of its common prefix.
const BLOCK: usize = 2048;

/// The three numbers the rule derives from the size asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `m`: no cut until the files since the previous candidate weigh this much.
    pub min: u128,
    /// `M`: a stretch heavier than this is cut into pieces.
    pub max: u128,
    /// `D`: a file of weight `w` is a candidate with probability `min(1, w / D)`.
    pub divisor: u128,
}

impl Rule {
    /// The rule for chunks of about `size` files (or events); `size` is at least 1.
    pub fn new(size: u128) -> Rule {
        let s = size.clamp(1, MAX_SIZE);
        let min = (s / 4).max(1);
        Rule {
            min,
            max: 4 * s,
            divisor: s - min + 1,
        }
    }

    /// A file's weight: its events, counted up to `M` (a file of more behaves the same).
    #[inline]
    pub fn weight(&self, events: u128) -> u128 {
        events.min(self.max)
    }

    /// Whether a file of boundary hash `h` and weight `w` (at most `M`) is a candidate:
    /// `h * D < w * 2^64`. With `w < D <= 2^60` neither side reaches 2^124.
    #[inline]
    pub fn candidate(&self, h: u64, w: u128) -> bool {
        w >= self.divisor || u128::from(h) * self.divisor < (w << 64)
    }

    /// The chunks of one dataset, as `[start, end)` ranges of its sorted files, from the files'
    /// boundary hashes and weights (`None`: every file weighs 1).
    pub fn ranges(&self, hashes: &[u64], events: Option<&[u128]>) -> Vec<(usize, usize)> {
        let n = hashes.len();
        let weight = |i: usize| events.map_or(1, |e| self.weight(e[i]));
        let mut out = Vec::with_capacity(n / self.min.min(n as u128).max(1) as usize + 1);
        let mut start = 0;
        // The weight of the files after the previous candidate, up to this one. At most
        // 2^32 files of 2^62 each: it fits.
        let mut since = 0u128;
        for (i, &h) in hashes.iter().enumerate() {
            let w = weight(i);
            since += w;
            if self.candidate(h, w) {
                if since >= self.min && i + 1 < n {
                    self.stretch(start, i + 1, &weight, &mut out);
                    start = i + 1;
                }
                since = 0;
            }
        }
        if start < n {
            self.stretch(start, n, &weight, &mut out);
        }
        out
    }

    /// The chunks of the stretch `[start, end)`: itself, or pieces of about equal weight.
    fn stretch(
        &self,
        start: usize,
        end: usize,
        weight: &impl Fn(usize) -> u128,
        out: &mut Vec<(usize, usize)>,
    ) {
        let total: u128 = (start..end).map(weight).sum();
        if total <= self.max {
            out.push((start, end));
            return;
        }
        // k <= files + 1 <= 2^32 and C <= 2^94: k * C < 2^127.
        let k = total.div_ceil(self.max);
        let (mut piece, mut before) = (start, 0u128);
        for i in start..end - 1 {
            let after = before + weight(i);
            if k * after / total > k * before / total {
                out.push((piece, i + 1));
                piece = i + 1;
            }
            before = after;
        }
        out.push((piece, end));
    }
}

/// The message hashed for a file's boundary, before its path: `TAG || u64be(len) || dataset`.
pub fn header(dataset: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(TAG.len() + 8 + dataset.len());
    h.extend_from_slice(TAG);
    h.extend_from_slice(&(dataset.len() as u64).to_be_bytes());
    h.extend_from_slice(dataset);
    h
}

/// A file's boundary hash: the first 8 bytes, big-endian, of
/// `SHA-256(TAG || u64be(len(dataset)) || dataset || path)`, where `dataset` and `path` are the
/// UTF-8 bytes of the dataset's name and the file's path. The path needs no length: it is the
/// rest of the message.
pub fn boundary_hash(dataset: &[u8], path: &[u8]) -> u64 {
    let digest = Sha256::new()
        .chain_update(header(dataset))
        .chain_update(path)
        .finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 in blocks, for [`hash_block`]: the same digest as [`Sha256`], without its buffering,
/// from a state that has compressed the messages' shared first blocks.
struct Blocks {
    /// The state after the shared blocks.
    state: [u32; 8],
    /// How many bytes of every message those blocks hold (a multiple of 64).
    done: usize,
    /// The tail being padded: the message's last bytes, `0x80`, zeros and its length in bits.
    tail: Vec<[u8; 64]>,
}

impl Blocks {
    /// The state after the first `done` bytes of `parts` (`done` a multiple of 64).
    fn new(parts: [&[u8]; 2], done: usize) -> Blocks {
        let mut state = IV;
        let mut shared = vec![[0u8; 64]; done / 64];
        let in_first = done.min(parts[0].len());
        let k = put(&mut shared, 0, &parts[0][..in_first]);
        put(&mut shared, k, &parts[1][..done - in_first]);
        sha2::block_api::compress256(&mut state, &shared);
        Blocks {
            state,
            done,
            tail: Vec::with_capacity(4),
        }
    }

    /// The first 8 bytes of SHA-256 of the message `parts[0] || parts[1]`, whose first `done`
    /// bytes are the shared ones.
    fn first_u64(&mut self, parts: [&[u8]; 2]) -> u64 {
        let len = parts[0].len() + parts[1].len();
        let n_blocks = (len - self.done + 9).div_ceil(64);
        self.tail.clear();
        self.tail.resize(n_blocks, [0u8; 64]);
        let (mut k, mut offset) = (0, 0);
        for part in parts {
            let from = self.done.saturating_sub(offset).min(part.len());
            k = put(&mut self.tail, k, &part[from..]);
            offset += part.len();
        }
        put(&mut self.tail, k, &[0x80]);
        let bits = (len as u64) * 8;
        self.tail[n_blocks - 1][56..].copy_from_slice(&bits.to_be_bytes());
        let mut state = self.state;
        sha2::block_api::compress256(&mut state, &self.tail);
        (u64::from(state[0]) << 32) | u64::from(state[1])
    }
}

/// Write `bytes` into `blocks` from byte `k` on; returns where they end.
#[inline]
fn put(blocks: &mut [[u8; 64]], mut k: usize, mut bytes: &[u8]) -> usize {
    while !bytes.is_empty() {
        let (block, at) = (k / 64, k % 64);
        let n = (64 - at).min(bytes.len());
        blocks[block][at..at + n].copy_from_slice(&bytes[..n]);
        bytes = &bytes[n..];
        k += n;
    }
    k
}

/// The boundary hashes of one block of paths. The whole 64-byte blocks that every message of
/// the block shares (the header and the paths' common prefix) are compressed once.
fn hash_block(header: &[u8], paths: &[&[u8]]) -> Vec<u64> {
    let (Some(first), Some(last)) = (paths.first(), paths.last()) else {
        return Vec::new();
    };
    // The common prefix of the first and last paths, which every path is checked against.
    let common = common_prefix_len(first, last);
    let shared = (header.len() + common) / 64 * 64;
    let in_path = shared.saturating_sub(header.len());
    let prefix = &first[..in_path];
    let mut blocks = Blocks::new([header, first], shared);
    let mut plain = Blocks::new([header, first], 0);
    paths
        .iter()
        .map(|p| {
            if p.starts_with(prefix) {
                blocks.first_u64([header, p])
            } else {
                plain.first_u64([header, p])
            }
        })
        .collect()
}

/// The boundary hashes of a dataset's paths (its name's UTF-8 bytes), in the order given, on
/// this thread. Equal to `boundary_hash(dataset, p)` for each path.
pub fn hashes(dataset: &[u8], paths: &[&[u8]]) -> Vec<u64> {
    let header = header(dataset);
    let mut out = Vec::with_capacity(paths.len());
    for block in paths.chunks(BLOCK) {
        out.extend(hash_block(&header, block));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_ranges(size: u128, hashes: &[u64]) -> Vec<(usize, usize)> {
        Rule::new(size).ranges(hashes, None)
    }

    #[test]
    fn the_rule_derives_min_max_and_divisor_from_the_size() {
        assert_eq!(
            Rule::new(50),
            Rule {
                min: 12,
                max: 200,
                divisor: 39
            }
        );
        assert_eq!(
            Rule::new(1),
            Rule {
                min: 1,
                max: 4,
                divisor: 1
            }
        );
        assert_eq!(
            Rule::new(7),
            Rule {
                min: 1,
                max: 28,
                divisor: 7
            }
        );
        assert_eq!(Rule::new(1 << 100), Rule::new(MAX_SIZE));
        assert_eq!(Rule::new(0), Rule::new(1));
    }

    #[test]
    fn the_boundary_hash_is_sha256_of_the_specified_bytes() {
        // SHA-256 of "chunkwise-stable-split/1", the u64 2 big-endian, "DY", "a.root".
        let mut message = b"chunkwise-stable-split/1".to_vec();
        message.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
        message.extend_from_slice(b"DYa.root");
        let digest = Sha256::digest(&message);
        let want = u64::from_be_bytes(digest[..8].try_into().unwrap());
        assert_eq!(boundary_hash(b"DY", b"a.root"), want);
        // The dataset is length-prefixed, so moving bytes between it and the path changes it.
        assert_ne!(boundary_hash(b"DYa", b".root"), want);
        assert_ne!(boundary_hash(b"", b"DYa.root"), want);
    }

    #[test]
    fn block_hashing_equals_hashing_each_message() {
        let long = "root://cmsxrootd.fnal.gov//store/mc/RunIISummer20UL16NanoAODv9/GluGluHToWW/\
                    NANOAODSIM/106X_mcRun2_asymptotic_v17-v2/";
        let mut paths: Vec<String> = (0..5000)
            .map(|i| format!("{long}{}/{:08X}.root", 10000 + (i * 7919) % 90000, i))
            .collect();
        paths.push(String::new());
        paths.push(long.to_string());
        for n in 0..300 {
            paths.push("x".repeat(n));
            paths.push(format!("{long}{}", "y".repeat(n)));
        }
        for dataset in ["", "DY", &"D".repeat(70), &"é".repeat(40)] {
            let refs: Vec<&[u8]> = paths.iter().map(|p| p.as_bytes()).collect();
            let want: Vec<u64> = refs
                .iter()
                .map(|p| boundary_hash(dataset.as_bytes(), p))
                .collect();
            assert_eq!(hashes(dataset.as_bytes(), &refs), want);
            let header = header(dataset.as_bytes());
            for size in [1, 2, 37, 300] {
                for (block, want) in refs.chunks(size).zip(want.chunks(size)) {
                    assert_eq!(hash_block(&header, block), want);
                }
            }
            // Paths that share a long prefix, but not with the first and last: checked.
            let mut odd = refs.clone();
            odd.swap(0, 5000);
            odd.swap(1, 7);
            let want: Vec<u64> = odd
                .iter()
                .map(|p| boundary_hash(dataset.as_bytes(), p))
                .collect();
            assert_eq!(hash_block(&header, &odd), want);
        }
        assert_eq!(hashes(b"DY", &[]), Vec::<u64>::new());
    }

    #[test]
    fn candidates_have_probability_weight_over_divisor() {
        let rule = Rule::new(50); // D = 39
        let edge = u64::MAX / 39; // h * 39 < 2^64  <=>  h <= floor((2^64 - 1) / 39)
        assert!(rule.candidate(0, 1));
        assert!(rule.candidate(edge, 1));
        assert!(!rule.candidate(edge + 1, 1));
        assert!(!rule.candidate(0, 0)); // an empty file is never a candidate
        assert!(rule.candidate(u64::MAX, 39)); // weight >= D: always
        assert!(rule.candidate(u64::MAX / 2, 20)); // 20/39 > 1/2
        assert!(!rule.candidate(u64::MAX / 2 + 1, 19)); // 19/39 < 1/2
        let big = Rule::new(MAX_SIZE);
        assert!(big.candidate(u64::MAX, big.max));
        assert!(!big.candidate(u64::MAX, big.divisor - 1));
        assert!(big.candidate(0, 1));
    }

    /// Hashes that make candidates exactly where `marks` has a 'c' (size 8: D = 7).
    fn marked(marks: &str) -> Vec<u64> {
        marks
            .chars()
            .map(|c| if c == 'c' { 0 } else { u64::MAX })
            .collect()
    }

    #[test]
    fn cuts_need_the_minimum_since_the_previous_candidate() {
        // size 8: m = 2, M = 32. A candidate cuts when it is at least 2 files past the
        // previous candidate (or the start), and never as the last file.
        assert_eq!(files_ranges(8, &marked("")), vec![]);
        assert_eq!(files_ranges(8, &marked("c")), vec![(0, 1)]);
        assert_eq!(files_ranges(8, &marked("c...")), vec![(0, 4)]);
        assert_eq!(files_ranges(8, &marked(".c..")), vec![(0, 2), (2, 4)]);
        assert_eq!(files_ranges(8, &marked(".cc..")), vec![(0, 2), (2, 5)]);
        // The third candidate is 1 past the second (which did not cut): no cut either.
        assert_eq!(
            files_ranges(8, &marked(".ccc.c.")),
            vec![(0, 2), (2, 6), (6, 7)]
        );
        // A candidate as the last file ends the dataset anyway.
        assert_eq!(files_ranges(8, &marked("...c")), vec![(0, 4)]);
        // Size 1: every file is a candidate and a chunk.
        assert_eq!(
            files_ranges(1, &[u64::MAX; 3]),
            vec![(0, 1), (1, 2), (2, 3)]
        );
    }

    #[test]
    fn long_stretches_are_cut_into_equal_pieces() {
        // size 2: m = 1, M = 8, D = 2. No candidates in 20 files: k = 3 pieces of 7, 7, 6.
        assert_eq!(
            files_ranges(2, &[u64::MAX; 20]),
            vec![(0, 7), (7, 14), (14, 20)]
        );
        assert_eq!(files_ranges(2, &[u64::MAX; 8]), vec![(0, 8)]);
        assert_eq!(files_ranges(2, &[u64::MAX; 9]), vec![(0, 5), (5, 9)]);
        for n in 0..200usize {
            let r = files_ranges(2, &vec![u64::MAX; n]);
            assert!(r.iter().all(|&(a, b)| (4..=8).contains(&(b - a)) || n < 4));
            assert_eq!(r.iter().map(|&(a, b)| b - a).sum::<usize>(), n);
        }
    }

    #[test]
    fn events_weigh_files() {
        let rule = Rule::new(100); // m = 25, M = 400, D = 76
        let never = u64::MAX;
        // A file of D events or more is always a candidate; it cuts once 25 events are past.
        assert_eq!(
            rule.ranges(&[never, never, never], Some(&[10, 76, 10])),
            vec![(0, 2), (2, 3)]
        );
        assert_eq!(
            rule.ranges(&[never, never, never], Some(&[0, 24, 10])),
            vec![(0, 3)]
        );
        // Empty files are never candidates. 1000 files of 1 event, no candidates: W = 1000,
        // k = 3 pieces of 334, 333, 333 events.
        let r = rule.ranges(&vec![never; 1000], Some(&vec![1u128; 1000]));
        assert_eq!(r, vec![(0, 334), (334, 667), (667, 1000)]);
        // A huge last file in a long stretch: counted as M; the others are cut by weight.
        let mut events = vec![50u128; 10];
        events.push(u128::MAX);
        let mut hs = vec![never; 10];
        hs.push(never);
        // W = 500 + 400 = 900 > 400: k = 3, levels at 300 and 600: cuts after 300 (file 5).
        assert_eq!(rule.ranges(&hs, Some(&events)), vec![(0, 6), (6, 11)]);
    }

    #[test]
    fn a_change_touches_at_most_two_stretches() {
        // A deterministic pseudo-random sweep: insert and remove every position of many
        // sequences, and check that a chunk changes only in the stretch of the change and the
        // next one.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for size in [1u128, 2, 3, 5, 8, 13] {
            let rule = Rule::new(size);
            for _ in 0..40 {
                let n = (next() % 60) as usize;
                let hs: Vec<u64> = (0..n).map(|_| next()).collect();
                let old = rule.ranges(&hs, None);
                let stretch_of = stretches(&rule, &hs);
                for pos in 0..=n {
                    // Insert a file at `pos`, then remove the file at `pos`.
                    let mut ins = hs.clone();
                    ins.insert(pos, next());
                    check(&rule, &hs, &old, &stretch_of, &ins, pos);
                    if pos < n {
                        let mut del = hs.clone();
                        del.remove(pos);
                        check(&rule, &hs, &old, &stretch_of, &del, pos);
                    }
                }
            }
        }
    }

    /// Each file's stretch number.
    fn stretches(rule: &Rule, hs: &[u64]) -> Vec<usize> {
        let (mut s, mut since, mut out) = (0, 0u128, Vec::new());
        for (i, &h) in hs.iter().enumerate() {
            out.push(s);
            since += 1;
            if rule.candidate(h, 1) {
                if since >= rule.min && i + 1 < hs.len() {
                    s += 1;
                }
                since = 0;
            }
        }
        out
    }

    fn check(
        rule: &Rule,
        old_hs: &[u64],
        old: &[(usize, usize)],
        stretch_of: &[usize],
        new_hs: &[u64],
        pos: usize,
    ) {
        // Chunks as the hashes of their files (the files' identities).
        let as_files = |hs: &[u64], r: &[(usize, usize)]| -> Vec<Vec<u64>> {
            r.iter().map(|&(a, b)| hs[a..b].to_vec()).collect()
        };
        let new = as_files(new_hs, &rule.ranges(new_hs, None));
        let n = old_hs.len();
        // The stretch of the change: of the file removed, or of the file after the one added.
        let s0 = if n == 0 {
            0
        } else {
            stretch_of[pos.min(n - 1)]
        };
        for (chunk, &(a, _)) in as_files(old_hs, old).iter().zip(old) {
            let s = stretch_of[a];
            if s != s0 && s != s0 + 1 {
                assert!(
                    new.contains(chunk),
                    "chunk of stretch {s} changed (s0 {s0})"
                );
            }
        }
    }
}
