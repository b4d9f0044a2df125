//! The canonical form of a chunk, written straight into SHA-256.
//!
//! A [`ChunkPlan`] is a list of pieces, gathered from Python objects while the GIL is held; it holds
//! borrowed `&str`s (whose owners are kept alive by the caller) and pre-encoded JSON for rare
//! subtrees. [`digest`] needs no GIL: it sorts the file lists and streams the JSON text through a
//! small buffer into the hasher, so the whole document never exists in memory.

use sha2::{Digest, Sha256};

use crate::escape::write_json_str;
use crate::prefetch::{prefetch, AHEAD};
use crate::sort::sort_by_path;

/// One `[path, value]` pair of a dataset's `files` list.
#[derive(Clone, Copy, Debug)]
pub struct FileEntry<'a> {
    pub path: &'a str,
    pub value: Value,
}

/// The value of a file entry: a tree name, a preprocessed entry, or JSON `null`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    /// Index into [`FastFiles::values`] (tree names repeat: each is escaped once).
    Str(u32),
    /// `FastFiles::json[start..start + len]`: the value's canonical JSON text, encoded already.
    Json(u32, u32),
}

/// A dataset's files, gathered: plain `str` paths and values the core encodes itself.
#[derive(Debug, Default)]
pub struct FastFiles<'a> {
    pub entries: Vec<FileEntry<'a>>,
    /// Distinct tree-name strings, referenced by index from the entries.
    pub values: Vec<&'a str>,
    /// The canonical JSON text of the other values (preprocessed entries), one after another.
    pub json: Vec<u8>,
}

/// A piece of the canonical JSON text.
#[derive(Debug)]
pub enum Piece<'a> {
    /// Literal JSON punctuation or keys.
    Lit(&'static str),
    /// Already-encoded JSON (from Python's `json` for rare values).
    Raw(Vec<u8>),
    /// A string to be written as a JSON string.
    Str(&'a str),
    /// A `files` list to be sorted by path and written as `[[path,value],...]`.
    Files(FastFiles<'a>),
}

/// The canonical JSON of one chunk, as pieces in output order.
#[derive(Debug, Default)]
pub struct ChunkPlan<'a> {
    pub pieces: Vec<Piece<'a>>,
}

impl<'a> ChunkPlan<'a> {
    pub fn lit(&mut self, s: &'static str) {
        self.pieces.push(Piece::Lit(s));
    }
    pub fn raw(&mut self, b: Vec<u8>) {
        self.pieces.push(Piece::Raw(b));
    }
    pub fn string(&mut self, s: &'a str) {
        self.pieces.push(Piece::Str(s));
    }
    pub fn files(&mut self, f: FastFiles<'a>) {
        self.pieces.push(Piece::Files(f));
    }
    /// How many file entries the plan holds (for batching).
    pub fn n_entries(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Files(f) => f.entries.len(),
                _ => 0,
            })
            .sum()
    }

    /// How many bytes of encoded text the plan holds (for batching).
    pub fn n_bytes(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Files(f) => f.json.len(),
                Piece::Raw(b) => b.len(),
                _ => 0,
            })
            .sum()
    }
}

const FLUSH_AT: usize = 1 << 16;

/// Something canonical JSON text is written into, through a buffer that is drained when full.
pub trait Sink {
    /// Buffered bytes at which [`Sink::drain`] is called.
    const LIMIT: usize;
    /// The buffer text is appended to.
    fn buffer(&mut self) -> &mut Vec<u8>;
    /// Take the buffered text away (hash it, or hand it to another thread).
    fn drain(&mut self);

    /// Append raw JSON text.
    #[inline]
    fn bytes(&mut self, b: &[u8]) {
        self.buffer().extend_from_slice(b);
        self.drain_if_full();
    }

    /// Append `s` as a JSON string.
    #[inline]
    fn string(&mut self, s: &str) {
        write_json_str(self.buffer(), s);
        self.drain_if_full();
    }

    #[inline]
    fn drain_if_full(&mut self) {
        if self.buffer().len() >= Self::LIMIT {
            self.drain();
        }
    }
}

/// A buffered writer of canonical JSON text that feeds SHA-256 in large blocks.
pub struct HashSink {
    buf: Vec<u8>,
    hasher: Sha256,
}

impl Default for HashSink {
    fn default() -> Self {
        Self::new()
    }
}

impl HashSink {
    pub fn new() -> Self {
        HashSink {
            buf: Vec::with_capacity(FLUSH_AT + 4096),
            hasher: Sha256::new(),
        }
    }

    /// Hash a large block of text without copying it into the buffer.
    pub fn block(&mut self, b: &[u8]) {
        self.hasher.update(&self.buf);
        self.buf.clear();
        self.hasher.update(b);
    }

    pub fn finish(mut self) -> [u8; 32] {
        self.hasher.update(&self.buf);
        self.hasher.finalize().into()
    }
}

impl Sink for HashSink {
    const LIMIT: usize = FLUSH_AT;

    #[inline]
    fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    fn drain(&mut self) {
        self.hasher.update(&self.buf);
        self.buf.clear();
    }
}

fn write_files<S: Sink>(sink: &mut S, files: &FastFiles<'_>) {
    // Tree names repeat: escape each distinct one once.
    let encoded: Vec<Vec<u8>> = files
        .values
        .iter()
        .map(|v| {
            let mut out = Vec::with_capacity(v.len() + 2);
            write_json_str(&mut out, v);
            out
        })
        .collect();
    sink.bytes(b"[");
    for (i, e) in files.entries.iter().enumerate() {
        if let Some(ahead) = files.entries.get(i + AHEAD) {
            prefetch(ahead.path.as_bytes());
        }
        sink.bytes(if i == 0 { b"[" } else { b",[" });
        sink.string(e.path);
        sink.bytes(b",");
        match e.value {
            Value::Null => sink.bytes(b"null]"),
            Value::Str(i) => {
                sink.bytes(&encoded[i as usize]);
                sink.bytes(b"]");
            }
            Value::Json(start, len) => {
                let start = start as usize;
                sink.bytes(&files.json[start..start + len as usize]);
                sink.bytes(b"]");
            }
        }
    }
    sink.bytes(b"]");
}

/// Sort the plan's file lists by path.
pub fn sort_plan(plan: &mut ChunkPlan<'_>) {
    for piece in plan.pieces.iter_mut() {
        if let Piece::Files(f) = piece {
            sort_by_path(&mut f.entries, |e| e.path.as_bytes());
        }
    }
}

/// Write the canonical JSON text of a sorted plan into `sink`.
pub fn write_plan<S: Sink>(sink: &mut S, plan: &ChunkPlan<'_>) {
    for piece in plan.pieces.iter() {
        match piece {
            Piece::Lit(s) => sink.bytes(s.as_bytes()),
            Piece::Raw(b) => sink.bytes(b),
            Piece::Str(s) => sink.string(s),
            Piece::Files(f) => write_files(sink, f),
        }
    }
}

/// Sort the plan's file lists and return the SHA-256 of its canonical JSON text.
pub fn digest(plan: &mut ChunkPlan<'_>) -> [u8; 32] {
    sort_plan(plan);
    let mut sink = HashSink::new();
    write_plan(&mut sink, plan);
    sink.finish()
}

/// Lowercase hex, as `hashlib`'s `hexdigest()` writes it.
pub fn hex(d: &[u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in d {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha_hex(text: &str) -> String {
        hex(&Sha256::digest(text.as_bytes()).into())
    }

    #[test]
    fn empty_chunk() {
        let mut plan = ChunkPlan::default();
        plan.lit("{}");
        assert_eq!(hex(&digest(&mut plan)), sha_hex("{}"));
    }

    #[test]
    fn files_are_sorted_and_values_shared() {
        let mut plan = ChunkPlan::default();
        plan.lit("{");
        plan.string("ds");
        plan.lit(":{\"files\":");
        plan.files(FastFiles {
            entries: vec![
                FileEntry {
                    path: "b.root",
                    value: Value::Str(0),
                },
                FileEntry {
                    path: "a.root",
                    value: Value::Null,
                },
                FileEntry {
                    path: "é.root",
                    value: Value::Str(0),
                },
                FileEntry {
                    path: "c.root",
                    value: Value::Json(3, 7),
                },
            ],
            values: vec!["Events"],
            json: b"xx,{\"n\":1}yy".to_vec(),
        });
        plan.lit(",\"metadata\":");
        plan.raw(b"{\"x\":1}".to_vec());
        plan.lit("}}");
        let text = r#"{"ds":{"files":[["a.root",null],["b.root","Events"],["c.root",{"n":1}],["\u00e9.root","Events"]],"metadata":{"x":1}}}"#;
        assert_eq!(hex(&digest(&mut plan)), sha_hex(text));
    }

    #[test]
    fn long_input_crosses_flush_boundaries() {
        let paths: Vec<String> = (0..20_000).map(|i| format!("/store/{i:08}.root")).collect();
        let mut plan = ChunkPlan::default();
        plan.lit("{\"d\":{\"files\":");
        plan.files(FastFiles {
            entries: paths
                .iter()
                .rev()
                .map(|p| FileEntry {
                    path: p,
                    value: Value::Str(0),
                })
                .collect(),
            values: vec!["Events"],
            json: Vec::new(),
        });
        plan.lit("}}");
        let mut text = String::from("{\"d\":{\"files\":[");
        for (i, p) in paths.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!("[\"{p}\",\"Events\"]"));
        }
        text.push_str("]}}");
        assert_eq!(hex(&digest(&mut plan)), sha_hex(&text));
    }
}
