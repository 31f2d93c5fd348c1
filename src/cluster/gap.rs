//! What a reader may have missed while away, from what `XINFO STREAM` says of the stream now.

use std::collections::HashMap;

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::event::StreamPos;
use super::read::ReadError;

/// The stream as `XINFO STREAM` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StreamState {
    /// The id of the last entry ever appended (trimmed or not).
    pub last_generated: StreamPos,
    /// The first entry still held, if any.
    first: Option<StreamPos>,
    /// The highest id removed by `XDEL` (Redis 7; `XTRIM` does not move it).
    max_deleted: Option<StreamPos>,
    /// Entries held now.
    length: u64,
    /// Entries ever appended (Redis 7): equal to `length` when nothing was ever removed.
    pub entries_added: Option<u64>,
}

/// What the reader may have missed since `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Missed {
    /// Nothing: every entry after `last` is still in the stream.
    Nothing,
    /// History is lost, for this reason (the `reason` label of the resync counter).
    Lost(&'static str),
}

/// What was missed since `last`, given the stream now (`None`: it does not exist). `count`, when known, is
/// how many entries the stream had had appended up to `last` (Redis 7's `entries-added` then, plus one per
/// entry read since). Trimming (`XTRIM`, `MINID` on append) removes the oldest entries only, so while the
/// stream still holds an entry at or before `last`, nothing after it was removed; Redis 7's `XTRIM` leaves no
/// other trace (`max-deleted-entry-id` moves only with `XDEL`). When it holds none, every entry it holds came
/// after `last`, and they are all there when their number is what was appended since (`entries-added` now
/// less `count`): a reader whose own entry was trimmed while it was away (older than `cluster.retention`)
/// loses nothing for that.
pub(super) fn missed(last: StreamPos, count: Option<u64>, stream: Option<&StreamState>) -> Missed {
    let Some(stream) = stream else {
        // Nothing seen yet, and nothing there: nothing to miss. Otherwise the history is gone.
        return if last == StreamPos::ZERO {
            Missed::Nothing
        } else {
            Missed::Lost("missing")
        };
    };
    if stream.last_generated < last {
        return Missed::Lost("backwards");
    }
    if stream.max_deleted.is_some_and(|deleted| deleted > last) {
        return Missed::Lost("deleted");
    }
    let appended_since = stream.last_generated > last;
    let holds_ours = stream.first.is_some_and(|first| first <= last);
    if !appended_since || holds_ours {
        return Missed::Nothing;
    }
    let all_held = match (count, stream.entries_added) {
        (Some(count), Some(added)) => added.checked_sub(count) == Some(stream.length),
        // Without the count (a position from a snapshot, Redis before 7): whole only if nothing was ever
        // removed from the stream.
        (None, added) => added == Some(stream.length),
        (Some(_), None) => false,
    };
    if all_held {
        Missed::Nothing
    } else {
        Missed::Lost("trimmed")
    }
}

/// `XINFO STREAM`, or `None` when the key does not exist; an error when it holds something else.
pub(super) async fn stream_state(
    redis: &mut MultiplexedConnection,
    key: &str,
) -> Result<Option<StreamState>, ReadError> {
    let kind: String = redis::cmd("TYPE").arg(key).query_async(redis).await?;
    match kind.as_str() {
        "none" => return Ok(None),
        "stream" => {}
        other => {
            return Err(ReadError::Stream(format!(
                "the key {key:?} holds a {other}, not a stream (cluster.stream)"
            )));
        }
    }
    let info: HashMap<String, Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(key)
        .query_async(redis)
        .await?;
    parse_info(&info).map(Some).map_err(ReadError::Stream)
}

/// The fields of `XINFO STREAM` the reader needs.
fn parse_info(info: &HashMap<String, Value>) -> Result<StreamState, String> {
    let id = |value: &Value| match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(text) => text.parse().ok(),
        _ => None,
    };
    let number = |name: &str| match info.get(name) {
        Some(Value::Int(n)) => u64::try_from(*n).ok(),
        _ => None,
    };
    let last_generated = info
        .get("last-generated-id")
        .and_then(id)
        .ok_or("XINFO STREAM has no last-generated-id")?;
    let first = match info.get("first-entry") {
        Some(Value::Array(entry)) => entry.first().and_then(id),
        _ => None,
    };
    Ok(StreamState {
        last_generated,
        first,
        max_deleted: info.get("max-deleted-entry-id").and_then(id),
        length: number("length").ok_or("XINFO STREAM has no length")?,
        entries_added: number("entries-added"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(millis: u64) -> StreamPos {
        StreamPos { millis, seq: 0 }
    }

    fn stream(last: u64, first: Option<u64>, length: u64, added: u64) -> StreamState {
        StreamState {
            last_generated: pos(last),
            first: first.map(pos),
            max_deleted: None,
            length,
            entries_added: Some(added),
        }
    }

    #[test]
    fn nothing_is_missed_while_our_entry_or_an_earlier_one_is_still_held() {
        // Caught up; new entries since; the oldest trimmed but not past us.
        assert_eq!(
            missed(pos(5), None, Some(&stream(5, Some(1), 5, 5))),
            Missed::Nothing
        );
        assert_eq!(
            missed(pos(5), None, Some(&stream(9, Some(5), 5, 9))),
            Missed::Nothing
        );
        assert_eq!(
            missed(pos(5), None, Some(&stream(9, Some(3), 7, 9))),
            Missed::Nothing
        );
        // Started on an empty stream; entries appended since, none ever removed.
        assert_eq!(
            missed(StreamPos::ZERO, None, Some(&stream(9, Some(7), 2, 2))),
            Missed::Nothing
        );
        assert_eq!(missed(StreamPos::ZERO, None, None), Missed::Nothing);
    }

    #[test]
    fn a_reader_that_knows_its_count_tells_a_trim_of_its_own_entry_from_a_loss() {
        // Our entry (the 10th appended) was trimmed as old while we were away; the one appended since is held.
        assert_eq!(
            missed(pos(5), Some(10), Some(&stream(9, Some(9), 1, 11))),
            Missed::Nothing
        );
        // Two appended since, one held: the other was trimmed before we read it.
        assert_eq!(
            missed(pos(5), Some(10), Some(&stream(9, Some(9), 1, 12))),
            Missed::Lost("trimmed")
        );
        // A count from another stream's life (more than it ever had) cannot vouch for anything.
        assert_eq!(
            missed(pos(5), Some(20), Some(&stream(9, Some(9), 1, 11))),
            Missed::Lost("trimmed")
        );
    }

    #[test]
    fn a_stream_trimmed_past_us_gone_or_gone_backwards_is_lost_history() {
        assert_eq!(
            missed(pos(5), None, Some(&stream(9, Some(8), 1, 9))),
            Missed::Lost("trimmed")
        );
        assert_eq!(
            missed(pos(5), None, Some(&stream(9, None, 0, 9))),
            Missed::Lost("trimmed")
        );
        assert_eq!(
            missed(StreamPos::ZERO, None, Some(&stream(9, Some(8), 1, 3))),
            Missed::Lost("trimmed")
        );
        assert_eq!(missed(pos(5), None, None), Missed::Lost("missing"));
        assert_eq!(
            missed(pos(5), None, Some(&stream(3, Some(1), 3, 3))),
            Missed::Lost("backwards")
        );
        let deleted = StreamState {
            max_deleted: Some(pos(7)),
            ..stream(9, Some(1), 8, 9)
        };
        assert_eq!(
            missed(pos(5), None, Some(&deleted)),
            Missed::Lost("deleted")
        );
        // Without entries-added (before Redis 7), a stream that no longer holds our entry is distrusted.
        let old_redis = StreamState {
            entries_added: None,
            ..stream(9, Some(7), 2, 0)
        };
        assert_eq!(
            missed(StreamPos::ZERO, None, Some(&old_redis)),
            Missed::Lost("trimmed")
        );
    }

    #[test]
    fn xinfo_fields_are_read_from_redis_values() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let info: HashMap<String, Value> = [
            ("length", Value::Int(2)),
            ("last-generated-id", bulk("1764000000005-1")),
            ("max-deleted-entry-id", bulk("0-0")),
            ("entries-added", Value::Int(4)),
            (
                "first-entry",
                Value::Array(vec![bulk("1764000000001-0"), Value::Array(vec![])]),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let state = parse_info(&info).unwrap();
        assert_eq!(state.last_generated, "1764000000005-1".parse().unwrap());
        assert_eq!(state.first, Some(pos(1_764_000_000_001)));
        assert_eq!((state.length, state.entries_added), (2, Some(4)));
        let mut empty = info;
        empty.insert("first-entry".into(), Value::Nil);
        assert_eq!(parse_info(&empty).unwrap().first, None);
        empty.remove("last-generated-id");
        assert!(parse_info(&empty).is_err());
    }
}
