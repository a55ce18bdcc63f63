//! An incremental JSON scanner: checks syntax and structural limits on a body fed in chunks of
//! any size, split anywhere (inside strings, escapes, `\uXXXX`, numbers, literals).
//!
//! # Guarantees
//! - Memory is O(`max_depth`): the only growing state is a stack of one counter per open
//!   container, and a container beyond `max_depth` is refused before it is pushed. Nothing of
//!   the document is kept (no keys, no values).
//! - The first violation is final: once [`Scanner::feed`] has returned an error it returns the
//!   same error for every later call, so a caller may stop reading at once.
//! - Strings are counted in bytes as written (an escape such as `\n` counts 2, `\u00e9` counts
//!   6), and the limit trips on the byte that crosses it, so a 50 MB string is refused after
//!   `max_string_length + 1` bytes.
//! - Validity agrees with `serde_json::from_slice::<Value>` (RFC 8259: UTF-8 in strings,
//!   escaped control characters, paired surrogates in `\u` escapes, no leading zeros), except
//!   that numbers are not range-checked (`1e400` passes here; serde_json refuses it).

use std::fmt;

use tollgate_crds::table::JsonLimitsEntry;

/// Which structural limit a document exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Nesting of objects and arrays.
    Depth,
    /// Members in one object.
    ObjectMembers,
    /// Elements in one array.
    ArrayLength,
    /// Bytes in one string (key or value), as written.
    StringLength,
}

impl LimitKind {
    /// The CRD field that sets this limit (what a rejection names).
    pub fn field(self) -> &'static str {
        match self {
            LimitKind::Depth => "maxDepth",
            LimitKind::ObjectMembers => "maxObjectMembers",
            LimitKind::ArrayLength => "maxArrayLength",
            LimitKind::StringLength => "maxStringLength",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::Depth => "nesting depth (maxDepth)",
            LimitKind::ObjectMembers => "members per object (maxObjectMembers)",
            LimitKind::ArrayLength => "elements per array (maxArrayLength)",
            LimitKind::StringLength => "string length in bytes (maxStringLength)",
        })
    }
}

/// Why a document was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// A structural limit was exceeded.
    #[error("the JSON body exceeds the {kind} limit of {limit}")]
    Limit {
        /// Which limit.
        kind: LimitKind,
        /// Its configured value.
        limit: u32,
    },
    /// Not JSON: an unexpected byte at `offset` (0-based), or the body ended early (`offset` is
    /// then the body length).
    #[error("the body is not valid JSON (at byte {offset})")]
    Syntax {
        /// Byte offset of the problem.
        offset: u64,
    },
}

/// Structural limits; see [`JsonLimitsEntry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Deepest nesting of objects and arrays.
    pub max_depth: u32,
    /// Most members in one object.
    pub max_object_members: u32,
    /// Most elements in one array.
    pub max_array_length: u32,
    /// Longest string in bytes as written.
    pub max_string_length: u32,
}

impl JsonLimits {
    /// Syntax only, with serde_json's own nesting limit so that a body this scanner accepts
    /// can always be parsed for a schema check: serde_json refuses the 128th nested container
    /// (its recursion budget of 128 runs out there), so 127 is the deepest it parses.
    pub const SYNTAX_ONLY: JsonLimits = JsonLimits {
        max_depth: 127,
        max_object_members: u32::MAX,
        max_array_length: u32::MAX,
        max_string_length: u32::MAX,
    };

    /// The tighter of two limits, field by field (every policy on a route must pass).
    pub fn min(self, other: JsonLimits) -> JsonLimits {
        JsonLimits {
            max_depth: self.max_depth.min(other.max_depth),
            max_object_members: self.max_object_members.min(other.max_object_members),
            max_array_length: self.max_array_length.min(other.max_array_length),
            max_string_length: self.max_string_length.min(other.max_string_length),
        }
    }
}

impl From<&JsonLimitsEntry> for JsonLimits {
    fn from(e: &JsonLimitsEntry) -> Self {
        JsonLimits {
            max_depth: e.max_depth,
            max_object_members: e.max_object_members,
            max_array_length: e.max_array_length,
            max_string_length: e.max_string_length,
        }
    }
}

/// One open container.
#[derive(Debug, Clone, Copy)]
struct Frame {
    object: bool,
    /// Members (object) or elements (array) seen so far.
    count: u32,
}

/// Where in a number we are (RFC 8259 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    /// After `-`: a digit must follow.
    Minus,
    /// A lone leading `0`: no more integer digits may follow.
    Zero,
    /// Integer digits.
    Int,
    /// After `.`: a digit must follow.
    Dot,
    /// Fraction digits.
    Frac,
    /// After `e`/`E`: sign or digit.
    Exp,
    /// After the exponent sign: a digit must follow.
    ExpSign,
    /// Exponent digits.
    ExpDigits,
}

impl Num {
    /// Whether a number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits)
    }
}

/// The literals `true`, `false`, `null`.
const LITERALS: [&[u8]; 3] = [b"true", b"false", b"null"];

#[derive(Debug, Clone, Copy)]
enum State {
    /// A value must come (document start, after `:`, after `,` in an array).
    Value,
    /// After `[`: a value or `]`.
    ArrayFirst,
    /// After `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value inside a container: `,` or the closing bracket.
    After,
    /// The top-level value is complete: only whitespace may follow.
    End,
    /// Inside a string.
    Str { key: bool },
    /// After `\` in a string.
    Escape { key: bool },
    /// Reading the 4 hex digits of `\u`; `low` when this escape must be a low surrogate.
    Hex {
        key: bool,
        low: bool,
        n: u8,
        acc: u16,
    },
    /// After a high-surrogate escape: `\` of the low surrogate must follow.
    LowBackslash { key: bool },
    /// After that `\`: `u` must follow.
    LowU { key: bool },
    /// Inside a multi-byte UTF-8 sequence: `need` continuation bytes, the next in `lo..=hi`.
    Utf8 { key: bool, need: u8, lo: u8, hi: u8 },
    /// Inside `true`/`false`/`null`: `word` indexes [`LITERALS`], `at` bytes matched.
    Literal { word: u8, at: u8 },
    /// Inside a number.
    Number(Num),
}

/// The incremental scanner. Feed chunks with [`Scanner::feed`], then call [`Scanner::finish`].
#[derive(Debug, Clone)]
pub struct Scanner {
    limits: JsonLimits,
    stack: Vec<Frame>,
    state: State,
    /// Bytes consumed so far (for error offsets).
    offset: u64,
    /// Bytes of the current string so far.
    str_len: u32,
    error: Option<ScanError>,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn hex_val(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some(u16::from(b - b'0')),
        b'a'..=b'f' => Some(u16::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u16::from(b - b'A' + 10)),
        _ => None,
    }
}

/// What one byte did.
enum Step {
    /// Consumed; go on with the next byte.
    Next,
    /// Not consumed (a number ended on it): look at the same byte again in the new state.
    Again,
}

impl Scanner {
    /// A scanner for one document.
    pub fn new(limits: JsonLimits) -> Scanner {
        Scanner {
            limits,
            // Small documents never reallocate; deep ones grow up to max_depth frames.
            stack: Vec::with_capacity(8),
            state: State::Value,
            offset: 0,
            str_len: 0,
            error: None,
        }
    }

    /// Open containers right now (the stack never holds more than `max_depth`).
    #[cfg(test)]
    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    /// Scan the next chunk. After the first error, every call returns that error.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ScanError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut i = 0;
        while let Some(&b) = chunk.get(i) {
            match self.step(b) {
                Ok(Step::Next) => {
                    i += 1;
                    self.offset += 1;
                }
                Ok(Step::Again) => {}
                Err(e) => {
                    self.error = Some(e);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The body has ended: `Ok` when it was exactly one complete JSON value.
    pub fn finish(&mut self) -> Result<(), ScanError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        // A top-level number ends with the body.
        if let State::Number(n) = self.state {
            if n.complete() && self.stack.is_empty() {
                self.state = State::End;
            }
        }
        match self.state {
            State::End => Ok(()),
            _ => {
                let e = self.syntax();
                self.error = Some(e);
                Err(e)
            }
        }
    }

    fn syntax(&self) -> ScanError {
        ScanError::Syntax {
            offset: self.offset,
        }
    }

    fn limit(kind: LimitKind, limit: u32) -> ScanError {
        ScanError::Limit { kind, limit }
    }

    /// A value is about to start: count it as an array element when inside an array.
    fn begin_value(&mut self) -> Result<(), ScanError> {
        if let Some(top) = self.stack.last_mut() {
            if !top.object {
                top.count = top.count.saturating_add(1);
                if top.count > self.limits.max_array_length {
                    return Err(Self::limit(
                        LimitKind::ArrayLength,
                        self.limits.max_array_length,
                    ));
                }
            }
        }
        Ok(())
    }

    /// A value just ended.
    fn end_value(&mut self) {
        self.state = if self.stack.is_empty() {
            State::End
        } else {
            State::After
        };
    }

    fn push(&mut self, object: bool) -> Result<(), ScanError> {
        if self.stack.len() >= self.limits.max_depth as usize {
            return Err(Self::limit(LimitKind::Depth, self.limits.max_depth));
        }
        self.stack.push(Frame { object, count: 0 });
        self.state = if object {
            State::ObjectFirst
        } else {
            State::ArrayFirst
        };
        Ok(())
    }

    fn pop(&mut self, object: bool) -> Result<(), ScanError> {
        match self.stack.pop() {
            Some(f) if f.object == object => {
                self.end_value();
                Ok(())
            }
            _ => Err(self.syntax()),
        }
    }

    /// Start a value on byte `b` (state is `Value` or `ArrayFirst`).
    fn start_value(&mut self, b: u8) -> Result<Step, ScanError> {
        match b {
            b'{' | b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9' => self.begin_value()?,
            _ => return Err(self.syntax()),
        }
        match b {
            b'{' => self.push(true)?,
            b'[' => self.push(false)?,
            b'"' => self.start_string(false),
            b't' => self.state = State::Literal { word: 0, at: 1 },
            b'f' => self.state = State::Literal { word: 1, at: 1 },
            b'n' => self.state = State::Literal { word: 2, at: 1 },
            b'-' => self.state = State::Number(Num::Minus),
            b'0' => self.state = State::Number(Num::Zero),
            _ => self.state = State::Number(Num::Int),
        }
        Ok(Step::Next)
    }

    fn start_string(&mut self, key: bool) {
        self.str_len = 0;
        self.state = State::Str { key };
    }

    /// Count one byte of string content against the limit.
    fn string_byte(&mut self) -> Result<(), ScanError> {
        self.str_len = self.str_len.saturating_add(1);
        if self.str_len > self.limits.max_string_length {
            return Err(Self::limit(
                LimitKind::StringLength,
                self.limits.max_string_length,
            ));
        }
        Ok(())
    }

    /// A key is about to start: count the member.
    fn begin_key(&mut self) -> Result<(), ScanError> {
        if let Some(top) = self.stack.last_mut() {
            top.count = top.count.saturating_add(1);
            if top.count > self.limits.max_object_members {
                return Err(Self::limit(
                    LimitKind::ObjectMembers,
                    self.limits.max_object_members,
                ));
            }
        }
        self.start_string(true);
        Ok(())
    }

    fn step(&mut self, b: u8) -> Result<Step, ScanError> {
        match self.state {
            State::Value => {
                if is_ws(b) {
                    return Ok(Step::Next);
                }
                self.start_value(b)
            }
            State::ArrayFirst => match b {
                _ if is_ws(b) => Ok(Step::Next),
                b']' => self.pop(false).map(|()| Step::Next),
                _ => self.start_value(b),
            },
            State::ObjectFirst => match b {
                _ if is_ws(b) => Ok(Step::Next),
                b'}' => self.pop(true).map(|()| Step::Next),
                b'"' => self.begin_key().map(|()| Step::Next),
                _ => Err(self.syntax()),
            },
            State::Key => match b {
                _ if is_ws(b) => Ok(Step::Next),
                b'"' => self.begin_key().map(|()| Step::Next),
                _ => Err(self.syntax()),
            },
            State::Colon => match b {
                _ if is_ws(b) => Ok(Step::Next),
                b':' => {
                    self.state = State::Value;
                    Ok(Step::Next)
                }
                _ => Err(self.syntax()),
            },
            State::After => {
                let object = self.stack.last().is_some_and(|f| f.object);
                match b {
                    _ if is_ws(b) => Ok(Step::Next),
                    b',' => {
                        self.state = if object { State::Key } else { State::Value };
                        Ok(Step::Next)
                    }
                    b'}' if object => self.pop(true).map(|()| Step::Next),
                    b']' if !object => self.pop(false).map(|()| Step::Next),
                    _ => Err(self.syntax()),
                }
            }
            State::End => {
                if is_ws(b) {
                    Ok(Step::Next)
                } else {
                    Err(self.syntax())
                }
            }
            State::Str { key } => self.string(b, key),
            State::Escape { key } => {
                self.string_byte()?;
                self.state = match b {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => State::Str { key },
                    b'u' => State::Hex {
                        key,
                        low: false,
                        n: 0,
                        acc: 0,
                    },
                    _ => return Err(self.syntax()),
                };
                Ok(Step::Next)
            }
            State::Hex { key, low, n, acc } => {
                self.string_byte()?;
                let Some(v) = hex_val(b) else {
                    return Err(self.syntax());
                };
                let acc = (acc << 4) | v;
                if n < 3 {
                    self.state = State::Hex {
                        key,
                        low,
                        n: n + 1,
                        acc,
                    };
                    return Ok(Step::Next);
                }
                self.state = match (low, acc) {
                    (false, 0xD800..=0xDBFF) => State::LowBackslash { key },
                    (false, 0xDC00..=0xDFFF) => return Err(self.syntax()),
                    (false, _) => State::Str { key },
                    (true, 0xDC00..=0xDFFF) => State::Str { key },
                    (true, _) => return Err(self.syntax()),
                };
                Ok(Step::Next)
            }
            State::LowBackslash { key } => {
                self.string_byte()?;
                if b != b'\\' {
                    return Err(self.syntax());
                }
                self.state = State::LowU { key };
                Ok(Step::Next)
            }
            State::LowU { key } => {
                self.string_byte()?;
                if b != b'u' {
                    return Err(self.syntax());
                }
                self.state = State::Hex {
                    key,
                    low: true,
                    n: 0,
                    acc: 0,
                };
                Ok(Step::Next)
            }
            State::Utf8 { key, need, lo, hi } => {
                self.string_byte()?;
                if !(lo..=hi).contains(&b) {
                    return Err(self.syntax());
                }
                self.state = if need > 1 {
                    State::Utf8 {
                        key,
                        need: need - 1,
                        lo: 0x80,
                        hi: 0xBF,
                    }
                } else {
                    State::Str { key }
                };
                Ok(Step::Next)
            }
            State::Literal { word, at } => {
                let lit = LITERALS.get(usize::from(word)).copied().unwrap_or(b"");
                if lit.get(usize::from(at)) != Some(&b) {
                    return Err(self.syntax());
                }
                if usize::from(at) + 1 == lit.len() {
                    self.end_value();
                } else {
                    self.state = State::Literal { word, at: at + 1 };
                }
                Ok(Step::Next)
            }
            State::Number(n) => self.number(n, b),
        }
    }

    fn string(&mut self, b: u8, key: bool) -> Result<Step, ScanError> {
        if b == b'"' {
            if key {
                self.state = State::Colon;
            } else {
                self.end_value();
            }
            return Ok(Step::Next);
        }
        self.string_byte()?;
        // RFC 3629 well-formed sequences (no overlongs, surrogates or code points > U+10FFFF).
        let (need, lo, hi) = match b {
            b'\\' => {
                self.state = State::Escape { key };
                return Ok(Step::Next);
            }
            0x00..=0x1F => return Err(self.syntax()),
            0x20..=0x7F => return Ok(Step::Next),
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return Err(self.syntax()),
        };
        self.state = State::Utf8 { key, need, lo, hi };
        Ok(Step::Next)
    }

    fn number(&mut self, n: Num, b: u8) -> Result<Step, ScanError> {
        let next = match (n, b) {
            (Num::Minus, b'0') => Num::Zero,
            (Num::Minus, b'1'..=b'9') => Num::Int,
            (Num::Int, b'0'..=b'9') => Num::Int,
            (Num::Zero | Num::Int, b'.') => Num::Dot,
            (Num::Dot | Num::Frac, b'0'..=b'9') => Num::Frac,
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::Exp,
            (Num::Exp, b'+' | b'-') => Num::ExpSign,
            (Num::Exp | Num::ExpSign | Num::ExpDigits, b'0'..=b'9') => Num::ExpDigits,
            _ if n.complete() && !b.is_ascii_digit() => {
                // The number ended on a byte that belongs to what follows it.
                self.end_value();
                return Ok(Step::Again);
            }
            _ => return Err(self.syntax()),
        };
        self.state = State::Number(next);
        Ok(Step::Next)
    }
}

/// Scan a whole document at once (tests).
#[cfg(test)]
pub fn scan(doc: &[u8], limits: JsonLimits) -> Result<(), ScanError> {
    let mut s = Scanner::new(limits);
    s.feed(doc)?;
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LOOSE: JsonLimits = JsonLimits::SYNTAX_ONLY;

    fn limits(depth: u32, members: u32, array: u32, string: u32) -> JsonLimits {
        JsonLimits {
            max_depth: depth,
            max_object_members: members,
            max_array_length: array,
            max_string_length: string,
        }
    }

    fn serde_ok(doc: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(doc).is_ok()
    }

    #[test]
    fn valid_documents() {
        for doc in [
            "0",
            "-0",
            "1.5e+10",
            " -12.0E-3 ",
            "true",
            "false",
            "null",
            "\"\"",
            "\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\"",
            "\"\\ud83d\\ude00\"",
            "\"héllo 😀\"",
            "[]",
            "{}",
            "[1,[2,[3]],{\"a\":{\"b\":null}}]",
            "{ \"a\" : 1 , \"b\" : [ true , false ] }\n",
        ] {
            assert_eq!(scan(doc.as_bytes(), LOOSE), Ok(()), "{doc}");
            assert!(serde_ok(doc.as_bytes()), "serde disagrees on {doc}");
        }
    }

    #[test]
    fn invalid_documents() {
        for doc in [
            "",
            " ",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "tru",
            "nul",
            "truex",
            "[1,]",
            "[,1]",
            "{,}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{1:2}",
            "[1 2]",
            "1 2",
            "[}",
            "{]",
            "[",
            "{",
            "\"abc",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12g4\"",
            "\"\t\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\ud800x\"",
            "NaN",
            "[1]]",
            "{}}",
        ] {
            assert!(
                matches!(scan(doc.as_bytes(), LOOSE), Err(ScanError::Syntax { .. })),
                "{doc:?} should be invalid"
            );
            assert!(!serde_ok(doc.as_bytes()), "serde accepts {doc:?}");
        }
        // Bad UTF-8 inside a string: overlong, surrogate, truncated, beyond U+10FFFF.
        for doc in [
            &b"\"\xC0\xAF\""[..],
            b"\"\xED\xA0\x80\"",
            b"\"\xE2\x82\"",
            b"\"\xF4\x90\x80\x80\"",
            b"\"\xFF\"",
            b"\xEF\xBB\xBF{}",
        ] {
            assert!(scan(doc, LOOSE).is_err(), "{doc:?}");
            assert!(!serde_ok(doc), "serde accepts {doc:?}");
        }
    }

    #[test]
    fn error_offsets_point_at_the_bad_byte() {
        assert_eq!(scan(b"[1, x]", LOOSE), Err(ScanError::Syntax { offset: 4 }));
        assert_eq!(scan(b"[1", LOOSE), Err(ScanError::Syntax { offset: 2 }));
    }

    #[test]
    fn each_limit_trips_exactly_past_its_value() {
        let l = limits(2, 2, 3, 4);
        assert_eq!(scan(b"[[1]]", l), Ok(()));
        assert_eq!(
            scan(b"[[[1]]]", l),
            Err(ScanError::Limit {
                kind: LimitKind::Depth,
                limit: 2
            })
        );
        assert_eq!(scan(br#"{"a":1,"b":2}"#, l), Ok(()));
        assert_eq!(
            scan(br#"{"a":1,"b":2,"c":3}"#, l),
            Err(ScanError::Limit {
                kind: LimitKind::ObjectMembers,
                limit: 2
            })
        );
        assert_eq!(scan(b"[1,2,3]", l), Ok(()));
        assert_eq!(
            scan(b"[1,2,3,4]", l),
            Err(ScanError::Limit {
                kind: LimitKind::ArrayLength,
                limit: 3
            })
        );
        assert_eq!(scan(br#""abcd""#, l), Ok(()));
        let too_long = Err(ScanError::Limit {
            kind: LimitKind::StringLength,
            limit: 4,
        });
        assert_eq!(scan(br#""abcde""#, l), too_long);
        // Keys count too, and escapes count as written.
        assert_eq!(scan(br#"{"abcde":1}"#, l), too_long);
        assert_eq!(scan(br#""\n\n""#, l), Ok(()));
        assert_eq!(scan(br#""\n\n\n""#, l), too_long);
        assert_eq!(scan(br#""\u00e9""#, l), too_long);
        // Multi-byte UTF-8 counts its bytes.
        assert_eq!(scan("\"éé\"".as_bytes(), l), Ok(()));
        assert_eq!(scan("\"ééé\"".as_bytes(), l), too_long);
    }

    #[test]
    fn syntax_only_passes_exactly_the_nesting_serde_json_parses() {
        // Found by the json_scan fuzz target: serde_json refuses the 128th nested container, so
        // a 128-deep body passed the scanner and then failed the schema parse as invalid JSON.
        let nested = |n: usize| [vec![b'['; n], vec![b']'; n]].concat();
        let deepest = nested(JsonLimits::SYNTAX_ONLY.max_depth as usize);
        assert_eq!(scan(&deepest, LOOSE), Ok(()));
        assert!(
            serde_ok(&deepest),
            "serde_json parses what the scanner passes"
        );
        let deeper = nested(JsonLimits::SYNTAX_ONLY.max_depth as usize + 1);
        assert!(
            !serde_ok(&deeper),
            "the bound is serde_json's, not below it"
        );
        assert_eq!(
            scan(&deeper, LOOSE),
            Err(ScanError::Limit {
                kind: LimitKind::Depth,
                limit: JsonLimits::SYNTAX_ONLY.max_depth
            })
        );
    }

    #[test]
    fn a_limit_error_is_reported_before_the_document_ends() {
        // 10k-deep nesting: refused after max_depth + 1 bytes, stack never past max_depth.
        let mut s = Scanner::new(limits(32, 10, 10, 10));
        let bomb = vec![b'['; 10_000];
        let e = s.feed(&bomb);
        assert_eq!(
            e,
            Err(ScanError::Limit {
                kind: LimitKind::Depth,
                limit: 32
            })
        );
        assert_eq!(s.depth(), 32);
        // Sticky: the same error again, whatever comes next.
        assert_eq!(s.feed(b"]"), e);
        assert_eq!(s.finish(), e);
    }

    #[test]
    fn memory_stays_at_the_depth_bound_for_a_huge_valid_stream() {
        // A 1M-element array fed in 4 KiB chunks with generous limits: state stays tiny.
        let mut s = Scanner::new(limits(4, 10, 2_000_000, 10));
        s.feed(b"[").expect("open");
        let chunk: Vec<u8> = b"1234,".repeat(800);
        for _ in 0..250 {
            s.feed(&chunk).expect("elements");
        }
        s.feed(b"0]").expect("close");
        s.finish().expect("valid");
        assert!(s.stack.capacity() <= 8);
    }

    /// Feed `doc` split at the given (sorted, in-range) points.
    fn scan_split(doc: &[u8], cuts: &[usize], l: JsonLimits) -> Result<(), ScanError> {
        let mut s = Scanner::new(l);
        let mut start = 0;
        for &c in cuts {
            let c = c.clamp(start, doc.len());
            if s.feed(&doc[start..c]).is_err() {
                break;
            }
            start = c;
        }
        let _ = s.feed(&doc[start..]);
        s.finish()
    }

    #[test]
    fn splitting_at_every_point_changes_nothing() {
        let docs: [&[u8]; 6] = [
            br#"{"a":[1,-2.5e+3,true,false,null],"b\u00e9\ud83d\ude00":"x\"y"}"#,
            "[\"héllo 😀\", 0, {\"k\": {}}]".as_bytes(),
            br#"{"a":1,"b":2,"c":3}"#,
            br#"[1.0E-5 , 12 ,0]"#,
            br#""\ud800\u0041""#,
            br#"[1,2,3,4,5,6,7,8,9,10,11]"#,
        ];
        let l = limits(4, 2, 10, 8);
        for doc in docs {
            let whole = scan(doc, l);
            for cut in 0..=doc.len() {
                assert_eq!(scan_split(doc, &[cut], l), whole, "{doc:?} cut at {cut}");
            }
            // One byte at a time.
            let all: Vec<usize> = (0..=doc.len()).collect();
            assert_eq!(scan_split(doc, &all, l), whole);
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1.0e6f64..1.0e6).prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
            proptest::collection::vec(any::<char>(), 0..6)
                .prop_map(|cs| Value::String(cs.into_iter().collect())),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("\\PC{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A JSON text, sometimes damaged (a byte replaced, inserted or the text truncated).
    fn json_text() -> impl Strategy<Value = Vec<u8>> {
        (
            json_value(),
            any::<bool>(),
            0u8..4,
            any::<prop::sample::Index>(),
            any::<u8>(),
        )
            .prop_map(|(v, pretty, damage, at, byte)| {
                let mut text = if pretty {
                    serde_json::to_vec_pretty(&v).unwrap_or_default()
                } else {
                    serde_json::to_vec(&v).unwrap_or_default()
                };
                if !text.is_empty() {
                    let i = at.index(text.len());
                    // Damage with JSON-ish bytes most of the time, so the scanner is tested
                    // near its edges rather than on obvious garbage.
                    const DAMAGE: &[u8] = b"{}[]:,\"\\ 0-.eEtfnu1\xC3\xA9";
                    let b = DAMAGE[usize::from(byte) % DAMAGE.len()];
                    match damage {
                        1 => text[i] = b,
                        2 => text.insert(i, b),
                        3 => text.truncate(i),
                        _ => {}
                    }
                }
                text
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn agrees_with_serde_json_on_validity(text in json_text()) {
            // The one documented difference: serde_json range-checks numbers.
            let serde = serde_json::from_slice::<serde_json::Value>(&text);
            prop_assume!(!serde.is_err_and(|e| e.to_string().contains("out of range")));
            prop_assert_eq!(scan(&text, LOOSE).is_ok(), serde_ok(&text), "{:?}", String::from_utf8_lossy(&text));
        }

        #[test]
        fn random_splits_give_the_same_verdict(
            text in json_text(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            l in (1u32..6, 1u32..6, 1u32..6, 1u32..12),
        ) {
            let l = limits(l.0, l.1, l.2, l.3);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).collect();
            points.sort_unstable();
            prop_assert_eq!(scan_split(&text, &points, l), scan(&text, l));
        }

        #[test]
        fn limits_match_a_reference_count(v in json_value()) {
            // The scanner's depth/members/array/string verdicts against a tree walk.
            fn walk(v: &serde_json::Value, depth: u32, m: &mut (u32, u32, u32, usize)) {
                use serde_json::Value;
                match v {
                    Value::Array(a) => {
                        m.0 = m.0.max(depth + 1);
                        m.2 = m.2.max(a.len() as u32);
                        a.iter().for_each(|x| walk(x, depth + 1, m));
                    }
                    Value::Object(o) => {
                        m.0 = m.0.max(depth + 1);
                        m.1 = m.1.max(o.len() as u32);
                        for (k, x) in o {
                            m.3 = m.3.max(serde_json::to_string(k).map_or(0, |s| s.len() - 2));
                            walk(x, depth + 1, m);
                        }
                    }
                    Value::String(s) => {
                        m.3 = m.3.max(serde_json::to_string(s).map_or(0, |s| s.len() - 2));
                    }
                    _ => {}
                }
            }
            let mut m = (0, 0, 0, 0);
            walk(&v, 0, &mut m);
            let text = serde_json::to_vec(&v).unwrap_or_default();
            let exact = limits(m.0.max(1), m.1.max(1), m.2.max(1), (m.3 as u32).max(1));
            prop_assert_eq!(scan(&text, exact), Ok(()));
            if m.0 > 1 {
                let l = JsonLimits { max_depth: m.0 - 1, ..exact };
                let is_depth = matches!(scan(&text, l), Err(ScanError::Limit { kind: LimitKind::Depth, .. }));
                prop_assert!(is_depth);
            }
            if m.3 > 1 {
                let l = JsonLimits { max_string_length: m.3 as u32 - 1, ..exact };
                prop_assert!(scan(&text, l).is_err());
            }
        }
    }
}
