//! A cheap, conservative pre-scan of YAML nesting depth, run before a document reaches the parser.
//!
//! The YAML parser behind `serde_yaml_ng` spends time proportional to the open flow depth on
//! every token, so a file of nothing but `[[[[…` costs quadratic time (a 200 KB file took about
//! 23 s of a core) before the deserializer's own recursion limit could refuse it. This scan is
//! linear and stops at the first level past the limit.
//!
//! # Conservative by construction
//! It computes a *lower bound* of the real depth, so it can only refuse documents that really
//! nest deeper than the limit:
//! - a level is counted only for a construct that certainly opens a collection: `[` or `{` where a
//!   node starts (never inside quotes, plain scalars or comments), a block sequence entry `- `,
//!   an explicit key `? `, or an implicit mapping key `key:` at a column deeper than the
//!   enclosing block collection;
//! - lines that may belong to a multi-line scalar (block scalars `|`/`>`, plain scalars continued
//!   on more-indented lines) are skipped, as are all lines more indented than a collection whose
//!   value was already complete on its line;
//! - anything it does not fully understand (tabs in indentation, directives, a key after a tag or
//!   anchor, text after a closing bracket…) ends the scan with the depth counted so far, and the
//!   parser decides as before.

/// Why the scan stopped early.
enum Stop {
    /// The depth went past the limit on this (0-based) line of the document.
    Deep(usize),
    /// A construct the scan does not model: stop counting (the lower bound so far stands).
    GaveUp,
}

/// The 0-based line of `text` where its nesting first exceeds `limit` levels, if it does.
pub(crate) fn nesting_exceeds(text: &str, limit: usize) -> Option<usize> {
    let mut scan = Scan {
        b: text.as_bytes(),
        i: 0,
        line: 0,
        stack: Vec::new(),
        flow: 0,
        limit,
    };
    match scan.document() {
        Err(Stop::Deep(line)) => Some(line),
        Ok(()) | Err(Stop::GaveUp) => None,
    }
}

struct Scan<'a> {
    b: &'a [u8],
    /// Position in `b`.
    i: usize,
    /// 0-based line of `i`.
    line: usize,
    /// Columns of the open block collections, innermost last (strictly increasing).
    stack: Vec<usize>,
    /// Open flow collections.
    flow: usize,
    limit: usize,
}

/// How a block line ended.
enum LineEnd {
    /// With an empty value (`key:`, `- `, a tag or anchor alone): what follows may nest deeper.
    Open,
    /// With a complete value: more-indented lines can only continue a scalar (or be an error).
    Leaf,
}

fn blank(c: Option<&u8>) -> bool {
    matches!(c, None | Some(b' ' | b'\t' | b'\n' | b'\r'))
}

fn flow_indicator(c: u8) -> bool {
    matches!(c, b',' | b'[' | b']' | b'{' | b'}')
}

impl Scan<'_> {
    fn at(&self, i: usize) -> Option<&u8> {
        self.b.get(i)
    }

    fn check(&self) -> Result<(), Stop> {
        if self.stack.len() + self.flow > self.limit {
            Err(Stop::Deep(self.line))
        } else {
            Ok(())
        }
    }

    /// Open a block collection at `col` unless the innermost one is already there.
    fn push_block(&mut self, col: usize) -> Result<(), Stop> {
        if self.stack.last().is_none_or(|top| *top < col) {
            self.stack.push(col);
        }
        self.check()
    }

    /// End of the current line (position of its `\n`, or of the text's end).
    fn line_end(&self) -> usize {
        self.b[self.i..]
            .iter()
            .position(|c| *c == b'\n')
            .map_or(self.b.len(), |p| self.i + p)
    }

    /// Move to the start of the next line.
    fn next_line(&mut self) {
        self.i = self.line_end();
        if self.i < self.b.len() {
            self.i += 1;
            self.line += 1;
        }
    }

    fn skip_spaces(&mut self) {
        while self.at(self.i) == Some(&b' ') {
            self.i += 1;
        }
    }

    /// After a value: nothing but blanks and a comment may follow on the line.
    fn rest_is_comment(&mut self) -> Result<(), Stop> {
        let start = self.i;
        while matches!(self.at(self.i), Some(b' ' | b'\t' | b'\r')) {
            self.i += 1;
        }
        match self.at(self.i) {
            None | Some(b'\n') => Ok(()),
            Some(b'#') if self.i > start => Ok(()),
            _ => Err(Stop::GaveUp),
        }
    }

    fn document(&mut self) -> Result<(), Stop> {
        // Lines more indented than this column are skipped (`None`: skip nothing).
        let mut skip_deeper: Option<isize> = None;
        while self.i < self.b.len() {
            let start = self.i;
            let indent = self.b[start..].iter().take_while(|c| **c == b' ').count();
            self.i = start + indent;
            let first = self.at(self.i).copied();
            if matches!(first, None | Some(b'\n' | b'\r' | b'#')) {
                self.next_line();
                continue;
            }
            if let Some(column) = skip_deeper {
                if indent as isize > column {
                    self.next_line();
                    continue;
                }
                skip_deeper = None;
            }
            while self.stack.last().is_some_and(|top| *top > indent) {
                self.stack.pop();
            }
            match self.block_line(start)? {
                LineEnd::Open => {}
                LineEnd::Leaf => {
                    skip_deeper = Some(self.stack.last().map_or(-1, |c| *c as isize));
                }
            }
            self.next_line();
        }
        Ok(())
    }

    /// One block-context line from its first non-space byte; `start` is where the line begins.
    /// Leaves `i` on the line where the value ended (a quoted or flow value may span lines).
    fn block_line(&mut self, start: usize) -> Result<LineEnd, Stop> {
        // A key was read on this line: its value may not be a block entry or another key.
        let mut after_key = false;
        // A tag or anchor was read: what follows may not be a key (its column is uncertain).
        let mut properties = false;
        loop {
            let col = self.i - start;
            let Some(&c) = self.at(self.i) else {
                return Ok(LineEnd::Open);
            };
            match c {
                b'\n' | b'\r' | b'#' => return Ok(LineEnd::Open),
                b'-' | b'?' if blank(self.at(self.i + 1)) => {
                    if after_key || properties {
                        return Err(Stop::GaveUp);
                    }
                    self.push_block(col)?;
                    self.i += 1;
                    self.skip_spaces();
                }
                b'[' | b'{' => {
                    let line = self.line;
                    self.flow_collection()?;
                    if self.line != line {
                        // The rest of a multi-line value cannot be a key.
                        self.rest_is_comment()?;
                        return Ok(LineEnd::Leaf);
                    }
                    self.skip_spaces();
                    if self.at(self.i) == Some(&b':') {
                        return Err(Stop::GaveUp); // a flow collection as a key
                    }
                    self.rest_is_comment()?;
                    return Ok(LineEnd::Leaf);
                }
                b'"' | b'\'' => {
                    let line = self.line;
                    self.quoted(c)?;
                    if self.line != line {
                        self.rest_is_comment()?;
                        return Ok(LineEnd::Leaf);
                    }
                    self.skip_spaces();
                    if self.at(self.i) == Some(&b':') && blank(self.at(self.i + 1)) {
                        if after_key || properties {
                            return Err(Stop::GaveUp);
                        }
                        self.push_block(col)?;
                        self.i += 1;
                        self.skip_spaces();
                        after_key = true;
                        continue;
                    }
                    self.rest_is_comment()?;
                    return Ok(LineEnd::Leaf);
                }
                // Block scalar: its content lines are more indented and skipped.
                b'|' | b'>' => return Ok(LineEnd::Leaf),
                b'!' | b'&' => {
                    while !blank(self.at(self.i)) {
                        self.i += 1;
                    }
                    self.skip_spaces();
                    properties = true;
                }
                b'*' => {
                    while !blank(self.at(self.i)) {
                        self.i += 1;
                    }
                    self.rest_is_comment()?;
                    return Ok(LineEnd::Leaf);
                }
                b'\t' | b'%' | b'@' | b'`' | b',' | b']' | b'}' | b':' | b'-' | b'?' => {
                    // `-`, `?` and `:` not followed by a blank start a plain scalar; the rest
                    // are errors or constructs not modelled here.
                    if matches!(c, b':' | b'-' | b'?') && !blank(self.at(self.i + 1)) {
                        if self.plain_key()? {
                            if after_key || properties {
                                return Err(Stop::GaveUp);
                            }
                            self.push_block(col)?;
                            after_key = true;
                            continue;
                        }
                        return Ok(LineEnd::Leaf);
                    }
                    return Err(Stop::GaveUp);
                }
                _ => {
                    if self.plain_key()? {
                        if after_key || properties {
                            return Err(Stop::GaveUp);
                        }
                        self.push_block(col)?;
                        after_key = true;
                        continue;
                    }
                    return Ok(LineEnd::Leaf);
                }
            }
        }
    }

    /// A plain scalar in block context from `i`: `true` (with `i` after the `:` and spaces) when
    /// it is an implicit key, `false` (with `i` at the line end) when it is a value.
    fn plain_key(&mut self) -> Result<bool, Stop> {
        let end = self.line_end();
        let mut j = self.i;
        while j < end {
            let c = self.b[j];
            if c == b':' && blank(self.at(j + 1)) {
                self.i = j + 1;
                self.skip_spaces();
                return Ok(true);
            }
            if c == b'#' && matches!(self.b[j - 1], b' ' | b'\t') {
                break;
            }
            j += 1;
        }
        self.i = end;
        Ok(false)
    }

    /// A quoted scalar starting at `i` (its quote `q`); `i` ends after the closing quote.
    fn quoted(&mut self, q: u8) -> Result<(), Stop> {
        self.i += 1;
        while let Some(&c) = self.at(self.i) {
            self.i += 1;
            match c {
                b'\n' => self.line += 1,
                b'\\' if q == b'"' => {
                    if self.at(self.i) == Some(&b'\n') {
                        self.line += 1;
                    }
                    self.i += 1;
                }
                _ if c == q => {
                    if q == b'\'' && self.at(self.i) == Some(&b'\'') {
                        self.i += 1; // `''` is an escaped quote
                    } else {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        Err(Stop::GaveUp) // unterminated: the parser reports it
    }

    /// A flow collection starting at `i` (on `[` or `{`); `i` ends after its closing bracket.
    fn flow_collection(&mut self) -> Result<(), Stop> {
        #[derive(PartialEq)]
        enum State {
            /// Where a node may start: after `[`, `{`, `,`, `: `, `? `.
            Node,
            /// Inside a plain scalar.
            Plain,
            /// After a complete node (quoted scalar, closed collection).
            After,
        }
        let base = self.flow;
        let mut state = State::Node;
        loop {
            let Some(&c) = self.at(self.i) else {
                return Err(Stop::GaveUp); // unclosed: the parser reports it
            };
            let prev_blank = self.i == 0 || blank(self.at(self.i - 1));
            match c {
                b'\n' => {
                    self.line += 1;
                    self.i += 1; // a plain scalar may continue on the next line
                    continue;
                }
                b' ' | b'\t' | b'\r' => {
                    self.i += 1;
                    continue;
                }
                b'#' if prev_blank => {
                    self.i = self.line_end();
                    if state == State::Plain {
                        state = State::After;
                    }
                    continue;
                }
                _ => {}
            }
            match state {
                State::Node => match c {
                    b'[' | b'{' => {
                        self.flow += 1;
                        self.check()?;
                        self.i += 1;
                    }
                    b']' | b'}' => {
                        self.close(base)?;
                        if self.flow == base {
                            return Ok(());
                        }
                        state = State::After;
                    }
                    b',' => self.i += 1,
                    b'"' | b'\'' => {
                        self.quoted(c)?;
                        state = State::After;
                    }
                    b'!' | b'&' => {
                        while !blank(self.at(self.i)) && !flow_indicator(self.b[self.i]) {
                            self.i += 1;
                        }
                    }
                    b'?' | b':' if blank(self.at(self.i + 1)) => self.i += 1,
                    b'-' if blank(self.at(self.i + 1)) => return Err(Stop::GaveUp),
                    b'|' | b'>' | b'%' | b'@' | b'`' | b'#' => return Err(Stop::GaveUp),
                    _ => {
                        self.i += 1;
                        state = State::Plain;
                    }
                },
                State::Plain => match c {
                    b',' => {
                        self.i += 1;
                        state = State::Node;
                    }
                    b']' | b'}' => {
                        self.close(base)?;
                        if self.flow == base {
                            return Ok(());
                        }
                        state = State::After;
                    }
                    // A bracket right after plain text is an error the parser reports at once.
                    b'[' | b'{' => return Err(Stop::GaveUp),
                    b':' => {
                        let next = self.at(self.i + 1);
                        if blank(next) {
                            self.i += 1;
                            state = State::Node;
                        } else if next.is_some_and(|n| flow_indicator(*n)) {
                            return Err(Stop::GaveUp);
                        } else {
                            self.i += 1; // `http://…`: part of the scalar
                        }
                    }
                    _ => self.i += 1,
                },
                State::After => match c {
                    b',' => {
                        self.i += 1;
                        state = State::Node;
                    }
                    b':' => {
                        self.i += 1;
                        state = State::Node;
                    }
                    b']' | b'}' => {
                        self.close(base)?;
                        if self.flow == base {
                            return Ok(());
                        }
                    }
                    _ => return Err(Stop::GaveUp),
                },
            }
        }
    }

    /// A closing bracket at `i`.
    fn close(&mut self, base: usize) -> Result<(), Stop> {
        if self.flow == base {
            return Err(Stop::GaveUp);
        }
        self.flow -= 1;
        self.i += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The depth the scan counts (its lower bound), by raising the limit until it passes.
    fn depth(text: &str) -> usize {
        (0..200)
            .find(|limit| nesting_exceeds(text, *limit).is_none())
            .expect("depth below 200")
    }

    #[test]
    fn counts_flow_and_block_nesting() {
        assert_eq!(depth("a: 1\n"), 1);
        assert_eq!(depth("[[1]]\n"), 2);
        assert_eq!(depth("a: {b: [c, {d: e}]}\n"), 4);
        assert_eq!(depth("a:\n  b:\n    c: 1\n  d: 2\n"), 3);
        assert_eq!(depth("- - - a\n"), 3);
        assert_eq!(depth("- a: 1\n  b:\n  - c\n"), 2);
        assert_eq!(
            depth("spec:\n  routes:\n    - {name: a, methods: [GET]}\n"),
            5
        );
        assert_eq!(depth("a: [\n  [1,\n   [2]],\n]\n"), 4);
        assert_eq!(depth("{\"a\":{\"b\":[1]}}\n"), 3);
        assert_eq!(depth("- \"k\": 'v'\n  b: [[[]]]\n"), 5);
    }

    #[test]
    fn brackets_in_scalars_and_comments_do_not_count() {
        let texts = [
            "a: '[[[[['\n",
            "a: \"[[[[[\\\"[[[\"\n",
            "a: 'it''s [[[['\n",
            "a: x[[[[[ {{{{\n",
            "a: 1 # [[[[[[\n",
            "# [[[[[[\n",
            "a: |\n  [[[[[[\n  {{{{{\n b: 1\n",
            "a: >-\n    [[[[[[\n\n    [[[[\n",
            "a: plain\n  [[[[[[ continued\n",
            "a:\n  plain\n  [[[[[[ continued\n",
            "a: \"multi\n[[[[[[ line\"\n",
            "a: 'multi\n  [[[[[[ line'\n",
            "a: [x, 'y]]]]', \"[[[[\", z#[[[[ ]\n",
            "a: {url: http://x/[a]}\n",
        ];
        for text in texts {
            assert!(depth(text) <= 3, "{text:?} counted {}", depth(text));
        }
    }

    #[test]
    fn deep_documents_are_refused_at_the_line_where_they_pass_the_limit() {
        let flow = format!("a: 1\nb: {}1{}\n", "[".repeat(100), "]".repeat(100));
        assert_eq!(nesting_exceeds(&flow, 64), Some(1));
        let maps = format!("{}1{}\n", "{a: ".repeat(100_000), "}".repeat(100_000));
        assert_eq!(nesting_exceeds(&maps, 64), Some(0));
        let unclosed = "[".repeat(200_000);
        assert_eq!(nesting_exceeds(&unclosed, 64), Some(0));
        let dashes = format!("{}a\n", "- ".repeat(100));
        assert_eq!(nesting_exceeds(&dashes, 64), Some(0));
        let mut block = String::new();
        for i in 0..80 {
            block.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        assert_eq!(nesting_exceeds(&block, 64), Some(64));
        assert_eq!(nesting_exceeds(&block, 80), None);
    }

    #[test]
    fn what_is_not_modelled_stops_counting_instead_of_guessing() {
        // A flow key, a tab, a directive: the scan stops with what it counted (the parser decides).
        for text in [
            "[a]: [[[[[[[[[[\n",
            "\t[[[[[[[[[[\n",
            "%YAML 1.2\n[[[[[[[[[[\n",
            "&x k: [[[[[[[[[[\n",
        ] {
            assert!(depth(text) <= 1, "{text:?} counted {}", depth(text));
        }
    }
}
