//! Literal find-and-replace over a byte stream with a bounded carry-over.
//!
//! # Semantics
//! One left-to-right scan. At each position the first rule, in policy order, whose `from`
//! starts there is replaced by its `to`, and the scan continues after the match: matches never
//! overlap, and replaced text is never scanned again (so one rule's output is never another's
//! input). Where no rule matches, the byte is copied. Patterns are compared byte for byte (UTF-8
//! text as written in the policy; no case folding, no unescaping of JSON or HTML).
//!
//! Streaming gives exactly the result of scanning the whole body at once: a position is decided
//! only when the longest pattern fits in the bytes at hand (or the body has ended), so at most
//! `longest − 1` bytes are carried from one chunk to the next.

use tollgate_crds::table::RewriteEntry;

/// One rule: `from` → `to`, as bytes.
type Rule = (Box<[u8]>, Box<[u8]>);

/// The compiled rules of a product, in policy order.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    longest: usize,
    /// Whether some rule starts with this byte (skips most positions cheaply).
    first: Box<[bool]>,
}

impl Rules {
    /// Rules from policy entries; an empty `from` (the compiler refuses it) is skipped.
    pub fn new<'a>(entries: impl IntoIterator<Item = &'a RewriteEntry>) -> Rules {
        let mut first = vec![false; 256];
        let rules: Vec<Rule> = entries
            .into_iter()
            .filter(|e| !e.from.is_empty())
            .map(|e| {
                (
                    e.from.as_bytes().to_vec().into_boxed_slice(),
                    e.to.as_bytes().to_vec().into_boxed_slice(),
                )
            })
            .collect();
        for (from, _) in &rules {
            if let Some(&b) = from.first() {
                first[usize::from(b)] = true;
            }
        }
        let longest = rules.iter().map(|(f, _)| f.len()).max().unwrap_or(0);
        Rules {
            rules,
            longest,
            first: first.into_boxed_slice(),
        }
    }

    /// The rules of a product's attached policies, in order; `None` when there are none.
    pub fn attached(
        policies: &[&tollgate_crds::table::PolicyEntry],
    ) -> Option<std::sync::Arc<Rules>> {
        let rules = Rules::new(policies.iter().flat_map(|p| p.response_rewrite.iter()));
        (!rules.is_empty()).then(|| std::sync::Arc::new(rules))
    }

    /// Whether there is nothing to replace.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Length of the longest `from`.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// Replace in a whole body.
    pub fn replace_all(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        self.scan(input, true, &mut out);
        out
    }

    /// Scan `input`, appending the result to `out`; returns how many bytes were decided. Without
    /// `at_end`, positions closer than `longest` to the end are left for more input.
    fn scan(&self, input: &[u8], at_end: bool, out: &mut Vec<u8>) -> usize {
        let mut pos = 0;
        let mut copied = 0;
        while pos < input.len() {
            if !at_end && input.len() - pos < self.longest {
                break;
            }
            let starts_a_rule = self.first.get(usize::from(input[pos])) == Some(&true);
            let hit = if starts_a_rule {
                let rest = &input[pos..];
                self.rules.iter().find(|(from, _)| rest.starts_with(from))
            } else {
                None
            };
            match hit {
                Some((from, to)) => {
                    out.extend_from_slice(&input[copied..pos]);
                    out.extend_from_slice(to);
                    pos += from.len();
                    copied = pos;
                }
                None => pos += 1,
            }
        }
        out.extend_from_slice(&input[copied..pos]);
        pos
    }
}

/// Streaming state: the rules and the undecided tail of the input so far.
#[derive(Debug)]
pub struct Replacer {
    rules: std::sync::Arc<Rules>,
    carry: Vec<u8>,
}

impl Replacer {
    /// A replacer at the start of a body.
    pub fn new(rules: std::sync::Arc<Rules>) -> Replacer {
        Replacer {
            rules,
            carry: Vec::new(),
        }
    }

    /// Feed the next chunk; appends what can be decided to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.carry.is_empty() {
            let done = self.rules.scan(chunk, false, out);
            self.carry.extend_from_slice(&chunk[done..]);
        } else {
            self.carry.extend_from_slice(chunk);
            let done = self.rules.scan(&self.carry, false, out);
            self.carry.drain(..done);
        }
    }

    /// The body ended: decide the carried tail.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.rules.scan(&self.carry, true, out);
        self.carry.clear();
    }

    /// Bytes currently held back (at most `longest − 1`).
    #[cfg(test)]
    pub fn carried(&self) -> usize {
        self.carry.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn rules(pairs: &[(&str, &str)]) -> Rules {
        let entries: Vec<RewriteEntry> = pairs
            .iter()
            .map(|(f, t)| RewriteEntry {
                from: f.to_string(),
                to: t.to_string(),
            })
            .collect();
        Rules::new(&entries)
    }

    fn streamed(r: &Arc<Rules>, pieces: &[&[u8]]) -> Vec<u8> {
        let mut s = Replacer::new(r.clone());
        let mut out = Vec::new();
        for p in pieces {
            s.push(p, &mut out);
            assert!(s.carried() < r.longest().max(1), "carry bound");
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn replaces_left_to_right_without_rescanning() {
        let r = rules(&[("a", "b"), ("b", "c")]);
        // "a" becomes "b" and that "b" is not turned into "c".
        assert_eq!(r.replace_all(b"ab"), b"bc");
        let r = rules(&[("aa", "X")]);
        assert_eq!(
            r.replace_all(b"aaa"),
            b"Xa",
            "non-overlapping, leftmost first"
        );
    }

    #[test]
    fn earlier_rule_wins_at_the_same_position() {
        let r = rules(&[("http://svc", "A"), ("http://svc.internal", "B")]);
        assert_eq!(r.replace_all(b"http://svc.internal/x"), b"A.internal/x");
        let r = rules(&[("http://svc.internal", "B"), ("http://svc", "A")]);
        assert_eq!(r.replace_all(b"http://svc.internal/x"), b"B/x");
    }

    #[test]
    fn match_split_across_chunks_is_found() {
        let r = Arc::new(rules(&[(
            "http://weather-api.internal",
            "https://api.example.com",
        )]));
        let out = streamed(
            &r,
            &[b"{\"next\":\"http", b"://weather-api.inter", b"nal/x\"}"],
        );
        assert_eq!(out, b"{\"next\":\"https://api.example.com/x\"}");
        // Byte by byte too.
        let body = b"..http://weather-api.internal..http://weather-api.internal";
        let pieces: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(
            streamed(&r, &pieces),
            b"..https://api.example.com..https://api.example.com"
        );
    }

    #[test]
    fn a_prefix_at_the_very_end_is_kept() {
        let r = Arc::new(rules(&[("internal", "x")]));
        assert_eq!(streamed(&r, &[b"abc inter", b"n"]), b"abc intern");
    }

    proptest! {
        #[test]
        fn streaming_equals_whole_body(
            body in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'c')], 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..8),
        ) {
            let r = Arc::new(rules(&[("abc", "X"), ("ab", "YY"), ("ca", ""), ("bb", "b")]));
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts {
                pieces.push(&body[last..c]);
                last = c;
            }
            pieces.push(&body[last..]);
            prop_assert_eq!(streamed(&r, &pieces), r.replace_all(&body));
        }
    }
}
