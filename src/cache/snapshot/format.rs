//! The snapshot file's bytes: a header, framed records each with its checksum, an end marker; anything else
//! is a [`Doubt`].
//!
//! ```text
//! magic "CEDGSNAP" | format version u16 | header length u32 | header (postcard) | xxh3-64 of the header
//! record: 0x01 | meta length u32 | body length u64 | meta (postcard) | body | xxh3-64 of all five before it
//! ...
//! end:    0x00 | record count u64 | xxh3-64 of the tag and the count
//! ```
//!
//! Integers are little-endian. A record's body is written as it is, not through serde, so a large body is
//! copied once from the cache to the file and once from the file to the cache. The end marker makes a file
//! cut at a record boundary a doubt too, and nothing may follow it.

use std::io::{self, Read, Write};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// The file's first bytes.
pub const MAGIC: [u8; 8] = *b"CEDGSNAP";
/// The framing above; bumped when it changes.
pub const FORMAT_VERSION: u16 = 1;
/// The layout and meaning of [`Header`] and the record metadata; bumped when a field is added, removed or
/// read differently, so that a build never reads a record it would misread.
pub const SCHEMA_VERSION: u32 = 1;

/// The largest record metadata a reader accepts (a response head is a few KiB; this is far beyond any).
const MAX_META: u32 = 16 << 20;
/// The largest header a reader accepts.
const MAX_HEADER: u32 = 1 << 20;
const TAG_RECORD: u8 = 1;
const TAG_END: u8 = 0;

/// The build a snapshot is for: this crate's version and [`SCHEMA_VERSION`]. A file of another build is a
/// doubt: what it holds was admitted and keyed by code this build cannot vouch for.
pub fn build_hash() -> u64 {
    let build = format!(
        "{} {} schema {SCHEMA_VERSION}",
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION")
    );
    xxh3_64(build.as_bytes())
}

/// What the file says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`build_hash`] of the writer.
    pub build: u64,
    /// The writer's fingerprint of what the entries depend on besides the build (the cache rules); the
    /// reader compares it with its own.
    pub context: u64,
    /// Wall-clock time of writing, since the Unix epoch.
    pub written_at: Duration,
    /// The last invalidation stream id the writer had applied, when clustered: the reader replays what came
    /// after it.
    pub stream_id: Option<String>,
}

/// A record's metadata: the key and everything to rebuild the entry but its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// The store key.
    pub key: String,
    /// Wall-clock time it was stored, since the Unix epoch (the writer's clock at writing, less the time it
    /// had been resident).
    pub stored_at: Duration,
    /// Wall-clock time the store would have dropped it, since the Unix epoch.
    pub expires_at: Duration,
    /// The stored response but its body.
    pub response: ResponseMeta,
}

/// A stored response's status, fields, validators and freshness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseMeta {
    /// Status code.
    pub status: u16,
    /// Header fields in order, names and value bytes.
    pub fields: Vec<(String, Vec<u8>)>,
    /// xxh3-128 of the body.
    pub body_hash: u128,
    /// The `ETag` among `fields` was minted by this cache.
    pub etag_minted: bool,
    /// The nominated request fields and their values, when the response varies.
    pub vary: Option<(Vec<String>, String)>,
    /// Freshness left when it was stored.
    pub fresh_for: Duration,
    /// Age when it was stored.
    pub initial_age: Duration,
    /// `stale-while-revalidate` window.
    pub stale_while_revalidate: Duration,
    /// `stale-if-error` window.
    pub stale_if_error: Duration,
    /// It has a validator.
    pub revalidatable: bool,
}

/// Why a snapshot file is not trusted; the reason in the log line that discards it.
#[derive(Debug, thiserror::Error)]
pub enum Doubt {
    /// Reading failed.
    #[error("cannot read it: {0}")]
    Io(#[source] io::Error),
    /// Not a snapshot.
    #[error("wrong magic bytes: not a snapshot file")]
    Magic,
    /// A framing this build does not read.
    #[error("format version {found}, this build reads {FORMAT_VERSION}")]
    Version {
        /// The file's version.
        found: u16,
    },
    /// Written by another build or schema.
    #[error("written by another build or schema (hash {found:016x}, this build {expected:016x})")]
    Build {
        /// The file's build hash.
        found: u64,
        /// This build's.
        expected: u64,
    },
    /// Written under other cache rules.
    #[error("written under other cache rules")]
    Context,
    /// The header's checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// A record's checksum does not match.
    #[error("checksum mismatch in record {0}")]
    Checksum(u64),
    /// The file ends before its end marker.
    #[error("truncated in record {0}")]
    Truncated(u64),
    /// A length, tag or field that cannot be right.
    #[error("malformed record {record}: {why}")]
    Malformed {
        /// Index of the record (or of the header, as 0).
        record: u64,
        /// What is wrong.
        why: String,
    },
    /// Bytes after the end marker.
    #[error("trailing bytes after the end marker")]
    Trailing,
    /// Written later than the reader's wall clock says it is now: the time down cannot be known.
    #[error("written {0:?} in the future by this machine's clock")]
    Future(Duration),
}

/// Writes a snapshot record by record into `inner` (buffer it: many small writes).
pub struct Writer<W: Write> {
    inner: W,
    records: u64,
    bytes: u64,
}

impl<W: Write> Writer<W> {
    /// Writes the magic, the version and `header`.
    pub fn new(mut inner: W, header: &Header) -> io::Result<Self> {
        let header = postcard::to_stdvec(header).map_err(io::Error::other)?;
        let length = u32::try_from(header.len()).map_err(io::Error::other)?;
        inner.write_all(&MAGIC)?;
        inner.write_all(&FORMAT_VERSION.to_le_bytes())?;
        inner.write_all(&length.to_le_bytes())?;
        inner.write_all(&header)?;
        inner.write_all(&xxh3_64(&header).to_le_bytes())?;
        Ok(Self {
            inner,
            records: 0,
            bytes: (MAGIC.len() + 2 + 4 + header.len() + 8) as u64,
        })
    }

    /// Writes one record: `meta`, then `body` as it is.
    pub fn record(&mut self, meta: &RecordMeta, body: &[u8]) -> io::Result<()> {
        let meta = postcard::to_stdvec(meta).map_err(io::Error::other)?;
        let meta_length = u32::try_from(meta.len()).map_err(io::Error::other)?;
        let mut hasher = Xxh3::new();
        let mut frame = |part: &[u8], inner: &mut W| {
            hasher.update(part);
            inner.write_all(part)
        };
        frame(&[TAG_RECORD], &mut self.inner)?;
        frame(&meta_length.to_le_bytes(), &mut self.inner)?;
        frame(&(body.len() as u64).to_le_bytes(), &mut self.inner)?;
        frame(&meta, &mut self.inner)?;
        frame(body, &mut self.inner)?;
        self.inner.write_all(&hasher.digest().to_le_bytes())?;
        self.records += 1;
        self.bytes += (1 + 4 + 8 + meta.len() + body.len() + 8) as u64;
        Ok(())
    }

    /// Writes the end marker; returns the writer, the records written and the bytes of the file.
    pub fn finish(mut self) -> io::Result<(W, u64, u64)> {
        let mut end = [0; 9];
        end[0] = TAG_END;
        end[1..].copy_from_slice(&self.records.to_le_bytes());
        self.inner.write_all(&end)?;
        self.inner.write_all(&xxh3_64(&end).to_le_bytes())?;
        self.inner.flush()?;
        Ok((self.inner, self.records, self.bytes + 9 + 8))
    }
}

/// Reads a snapshot record by record, checking every byte.
pub struct Reader<R: Read> {
    inner: R,
    /// Bytes of the file not read yet: no length read from it may pass this.
    remaining: u64,
    /// Records read so far.
    records: u64,
    /// The end marker was read.
    ended: bool,
    /// The file's header.
    header: Header,
}

impl<R: Read> Reader<R> {
    /// Reads and checks the magic, the version and the header of a file of `length` bytes.
    pub fn open(inner: R, length: u64) -> Result<Self, Doubt> {
        let mut reader = Self {
            inner,
            remaining: length,
            records: 0,
            ended: false,
            header: Header {
                build: 0,
                context: 0,
                written_at: Duration::ZERO,
                stream_id: None,
            },
        };
        if reader.array::<8>()? != MAGIC {
            return Err(Doubt::Magic);
        }
        let version = u16::from_le_bytes(reader.array()?);
        if version != FORMAT_VERSION {
            return Err(Doubt::Version { found: version });
        }
        let header_length = u32::from_le_bytes(reader.array()?);
        if header_length > MAX_HEADER {
            return Err(malformed(0, "header length"));
        }
        let header = reader.bytes(u64::from(header_length))?;
        if xxh3_64(&header) != u64::from_le_bytes(reader.array()?) {
            return Err(Doubt::HeaderChecksum);
        }
        reader.header = postcard::from_bytes(&header).map_err(|e| malformed(0, e))?;
        Ok(reader)
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next record's metadata and body, or `None` after the end marker (with nothing after it).
    pub fn next_record(&mut self) -> Result<Option<(RecordMeta, Bytes)>, Doubt> {
        if self.ended {
            return Ok(None);
        }
        let index = self.records;
        match self.array::<1>()?[0] {
            TAG_RECORD => {}
            TAG_END => return self.end().map(|()| None),
            tag => return Err(malformed(index, format!("tag {tag}"))),
        }
        let meta_length = self.array::<4>()?;
        let body_length = self.array::<8>()?;
        let meta_size = u32::from_le_bytes(meta_length);
        let body_size = u64::from_le_bytes(body_length);
        if meta_size > MAX_META {
            return Err(malformed(index, "metadata length"));
        }
        let meta = self.bytes(u64::from(meta_size))?;
        let body = self.bytes(body_size)?;
        let mut hasher = Xxh3::new();
        for part in [&[TAG_RECORD][..], &meta_length, &body_length, &meta, &body] {
            hasher.update(part);
        }
        if hasher.digest() != u64::from_le_bytes(self.array()?) {
            return Err(Doubt::Checksum(index));
        }
        let meta = postcard::from_bytes(&meta).map_err(|e| malformed(index, e))?;
        self.records += 1;
        Ok(Some((meta, Bytes::from(body))))
    }

    /// After the end tag: the count and its checksum, then nothing.
    fn end(&mut self) -> Result<(), Doubt> {
        let count = self.array::<8>()?;
        let mut end = [0; 9];
        end[0] = TAG_END;
        end[1..].copy_from_slice(&count);
        if xxh3_64(&end) != u64::from_le_bytes(self.array()?) {
            return Err(Doubt::Checksum(self.records));
        }
        if u64::from_le_bytes(count) != self.records {
            return Err(malformed(self.records, "record count at the end marker"));
        }
        if self.remaining != 0 {
            return Err(Doubt::Trailing);
        }
        // The length given may be stale; the file itself must end here too.
        match self.inner.read(&mut [0]) {
            Ok(0) => {}
            Ok(_) => return Err(Doubt::Trailing),
            Err(err) => return Err(Doubt::Io(err)),
        }
        self.ended = true;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Doubt> {
        let mut buf = [0; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    /// `length` bytes, refused before any allocation when the file has fewer left.
    fn bytes(&mut self, length: u64) -> Result<Vec<u8>, Doubt> {
        if length > self.remaining {
            return Err(Doubt::Truncated(self.records));
        }
        let mut buf = vec![0; usize::try_from(length).map_err(|e| malformed(self.records, e))?];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), Doubt> {
        if buf.len() as u64 > self.remaining {
            return Err(Doubt::Truncated(self.records));
        }
        self.inner.read_exact(buf).map_err(|err| match err.kind() {
            io::ErrorKind::UnexpectedEof => Doubt::Truncated(self.records),
            _ => Doubt::Io(err),
        })?;
        self.remaining -= buf.len() as u64;
        Ok(())
    }
}

fn malformed(record: u64, why: impl std::fmt::Display) -> Doubt {
    Doubt::Malformed {
        record,
        why: why.to_string(),
    }
}
