//! Cache policy, pure: the cache key, what may be stored, and for how long (RFC 9111). A facade over its
//! pieces, one concern each, so callers name `cache::policy::X` whichever file `X` lives in:
//!
//! - `key`: the cache key (a security invariant, derived in one documented place per rule kind).
//! - `rule`: a rule's kind and limits, the cache's own parameter types (`config` re-exports them).
//! - `admission`: whether a response may be stored (RFC 9111 §3), with `avatar` (what the avatar rule
//!   holds), `freshness` (lifetime, heuristics, age: §4.2), `stale` (stale windows: RFC 5861) and
//!   `not_stored` (why not).
//! - `revalidation`: validators, conditional fields, 304 and `HEAD` merging (§4.3).
//! - `invalidation`: what an unsafe method invalidates (§4.4).
//!
//! Everything is decided once, when a response arrives: the hit path only compares a stored deadline.

mod admission;
mod avatar;
#[cfg(test)]
mod fixtures;
mod freshness;
mod invalidation;
mod key;
mod not_stored;
mod revalidation;
mod rule;
mod stale;

pub use admission::{admit, fits, request_forbids_storing};
pub use avatar::describes_avatar;
pub use freshness::{Exchange, Freshness};
pub use invalidation::invalidated_by_unsafe;
pub use key::{AvatarKey, http_key, key_path_starts_with, key_target};
pub use not_stored::NotStored;
pub use revalidation::{Validators, head_invalidates, merge_not_modified, revalidation_headers};
pub use rule::{Limits, RuleKind};
