//! Counting callers: per-subscription rate limits ([`rate`], GCRA), per-IP limits for anonymous
//! calls ([`anonymous`]), calendar quotas in memory ([`quota`]) or shared through Redis
//! ([`shared`]).

pub mod anonymous;
pub mod quota;
pub mod rate;
pub mod shared;
