//! What one stream entry says, and where an entry lies in the stream. Pure.
//!
//! An entry's fields, version 1: `v` = `1`; `op` = `key`, `target`, `prefix` or `all`; `arg` = the key,
//! target or prefix (absent for `all`); `origin` = the instance that performed it (its readers skip their
//! own); `why` = `gap` on the `all` an instance appends after it could not append some of its own (the
//! others count it as a resync). A reader that meets a version or an `op` it does not know cannot tell what
//! the event dropped, so it drops everything ([`Unreadable`]).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use redis::Value;

use crate::cache::Invalidation;

/// The version this build writes, and the only one it reads.
const VERSION: &str = "1";

/// A stream entry id, `<milliseconds>-<sequence>` (Redis orders entries by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamPos {
    /// Redis's clock when the entry was appended, in Unix milliseconds.
    pub millis: u64,
    /// Entries appended within the same millisecond.
    pub seq: u64,
}

impl StreamPos {
    /// Before every entry: the position of a reader that has seen nothing (a stream that did not exist).
    pub const ZERO: Self = Self { millis: 0, seq: 0 };
}

impl fmt::Display for StreamPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.millis, self.seq)
    }
}

impl FromStr for StreamPos {
    type Err = String;

    /// `ms-seq`, or `ms` alone (sequence 0), as Redis accepts them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (millis, seq) = text.split_once('-').unwrap_or((text, "0"));
        let number = |part: &str| {
            (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| format!("{text:?} is not a stream id (ms-seq)"))
        };
        Ok(Self {
            millis: number(millis)?,
            seq: number(seq)?,
        })
    }
}

/// One invalidation as the stream carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What to drop.
    pub what: Invalidation,
    /// The instance that performed it.
    pub origin: String,
    /// An `all` standing for invalidations its origin could not append.
    pub gap: bool,
}

/// An entry this build cannot read: what it dropped is unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// The instance that wrote it, when that much could be read.
    pub origin: Option<String>,
    /// What is wrong with it.
    pub problem: String,
}

impl Event {
    /// The entry's fields, for `XADD`.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        let (op, arg) = match &self.what {
            Invalidation::Key(key) => ("key", Some(key.as_str())),
            Invalidation::Target(target) => ("target", Some(target.as_str())),
            Invalidation::Prefix(prefix) => ("prefix", Some(prefix.as_str())),
            Invalidation::All => ("all", None),
        };
        let mut fields = vec![("v", VERSION), ("op", op)];
        fields.extend(arg.map(|arg| ("arg", arg)));
        fields.push(("origin", self.origin.as_str()));
        if self.gap {
            fields.push(("why", "gap"));
        }
        fields
    }

    /// Reads an entry's fields.
    pub fn decode(map: &HashMap<String, Value>) -> Result<Self, Unreadable> {
        let field = |name: &str| map.get(name).and_then(text);
        let origin = field("origin");
        let unreadable = |problem: String| Unreadable {
            origin: origin.map(str::to_owned),
            problem,
        };
        if field("v") != Some(VERSION) {
            return Err(unreadable(format!("version {:?}", field("v"))));
        }
        let Some(origin) = origin else {
            return Err(unreadable("no origin".to_owned()));
        };
        let arg = || {
            field("arg")
                .map(str::to_owned)
                .ok_or_else(|| unreadable("no arg".to_owned()))
        };
        let what = match field("op") {
            Some("key") => Invalidation::Key(arg()?),
            Some("target") => Invalidation::Target(arg()?),
            Some("prefix") => Invalidation::Prefix(arg()?),
            Some("all") => Invalidation::All,
            op => return Err(unreadable(format!("op {op:?}"))),
        };
        Ok(Self {
            what,
            origin: origin.to_owned(),
            gap: field("why") == Some("gap"),
        })
    }
}

/// A field's value as text (Redis hands stream field values back as bulk strings).
fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_read(fields: &[(&str, &str)]) -> HashMap<String, Value> {
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::BulkString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn every_invalidation_reads_back_as_written() {
        for what in [
            Invalidation::Key("lpua".into()),
            Invalidation::Target("/assets/a.js?v=1".into()),
            Invalidation::Prefix("/assets/".into()),
            Invalidation::All,
        ] {
            for gap in [false, true] {
                let event = Event {
                    what: what.clone(),
                    origin: "edge-a".into(),
                    gap,
                };
                assert_eq!(Event::decode(&as_read(&event.fields())), Ok(event));
            }
        }
    }

    #[test]
    fn an_entry_from_another_version_or_op_is_unreadable_but_names_its_origin() {
        let future = as_read(&[("v", "2"), ("op", "key"), ("arg", "x"), ("origin", "b")]);
        let err = Event::decode(&future).unwrap_err();
        assert_eq!(err.origin.as_deref(), Some("b"));
        for fields in [
            &[("v", "1"), ("op", "tags"), ("arg", "x"), ("origin", "b")][..],
            &[("v", "1"), ("op", "key"), ("origin", "b")],
            &[("v", "1"), ("op", "all")],
            &[],
        ] {
            assert!(Event::decode(&as_read(fields)).is_err(), "{fields:?}");
        }
    }

    #[test]
    fn stream_ids_parse_compare_and_print_as_redis_does() {
        let id: StreamPos = "1764000000000-3".parse().unwrap();
        assert_eq!(id.to_string(), "1764000000000-3");
        assert_eq!(
            "1764000000000".parse(),
            Ok(StreamPos {
                millis: 1_764_000_000_000,
                seq: 0
            })
        );
        assert!(id < "1764000000001-0".parse().unwrap());
        assert!(id > "1764000000000-2".parse().unwrap());
        assert!(StreamPos::ZERO < id);
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "a-1",
            "1-2-3",
            "+1-2",
            "99999999999999999999-0",
        ] {
            assert!(bad.parse::<StreamPos>().is_err(), "{bad}");
        }
    }
}
