//! Streaming gzip inflation with a bound on the inflated size.
//!
//! Compressed input is fed in slices of at most [`SLICE`] bytes and the output size checked
//! after each, so one frame of a decompression bomb cannot allocate more than the bound plus
//! about a megabyte (deflate expands at most ~1032:1).

use std::io::Write;

use flate2::write::MultiGzDecoder;

use super::RewriteError;

/// Compressed bytes fed to the decoder between two size checks.
const SLICE: usize = 1024;

/// A gzip decoder (multi-member) that refuses to produce more than `limit` bytes in total.
#[derive(Debug)]
pub struct Inflater {
    decoder: MultiGzDecoder<Vec<u8>>,
    produced: u64,
    limit: u64,
    fed: bool,
    finished: bool,
}

impl Inflater {
    /// A decoder for one body, bounded to `limit` inflated bytes.
    pub fn new(limit: u64) -> Inflater {
        Inflater {
            decoder: MultiGzDecoder::new(Vec::new()),
            produced: 0,
            limit,
            fed: false,
            finished: false,
        }
    }

    /// Inflate the next compressed chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, RewriteError> {
        if self.finished {
            return Err(RewriteError::Gzip);
        }
        let mut out = Vec::new();
        for slice in chunk.chunks(SLICE) {
            self.fed = true;
            self.decoder
                .write_all(slice)
                .and_then(|()| self.decoder.flush())
                .map_err(|_| RewriteError::Gzip)?;
            self.take(&mut out)?;
        }
        Ok(out)
    }

    /// The compressed body ended: check the trailer and return the last inflated bytes.
    pub fn finish(&mut self) -> Result<Vec<u8>, RewriteError> {
        let mut out = Vec::new();
        if self.finished || !self.fed {
            // An empty body is an empty text (some servers label empty bodies gzip).
            self.finished = true;
            return Ok(out);
        }
        self.finished = true;
        self.decoder.try_finish().map_err(|_| RewriteError::Gzip)?;
        self.take(&mut out)?;
        Ok(out)
    }

    fn take(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let produced = std::mem::take(self.decoder.get_mut());
        self.produced += produced.len() as u64;
        if self.produced > self.limit {
            return Err(RewriteError::TooLarge { limit: self.limit });
        }
        out.extend_from_slice(&produced);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn inflate_in(pieces: usize, data: &[u8], limit: u64) -> Result<Vec<u8>, RewriteError> {
        let mut inf = Inflater::new(limit);
        let mut out = Vec::new();
        for c in data.chunks(data.len().div_ceil(pieces).max(1)) {
            out.extend(inf.push(c)?);
        }
        out.extend(inf.finish()?);
        Ok(out)
    }

    #[test]
    fn inflates_in_pieces_and_multiple_members() {
        let text = b"hello http://weather-api.internal/x ".repeat(200);
        let z = gzip(&text);
        for pieces in [1, 2, 7, z.len()] {
            assert_eq!(inflate_in(pieces, &z, 1 << 20).unwrap(), text);
        }
        let mut two = gzip(b"one ");
        two.extend(gzip(b"two"));
        assert_eq!(inflate_in(3, &two, 1 << 20).unwrap(), b"one two");
        assert_eq!(inflate_in(1, b"", 10).unwrap(), b"");
    }

    #[test]
    fn truncated_or_corrupt_input_fails() {
        let z = gzip(&b"some text".repeat(50));
        assert!(matches!(
            inflate_in(2, &z[..z.len() - 4], 1 << 20),
            Err(RewriteError::Gzip)
        ));
        assert!(matches!(
            inflate_in(1, b"not gzip at all", 1 << 20),
            Err(RewriteError::Gzip)
        ));
    }

    #[test]
    fn output_beyond_the_bound_fails() {
        let z = gzip(&vec![b'a'; 200_000]);
        assert!(matches!(
            inflate_in(1, &z, 100_000),
            Err(RewriteError::TooLarge { limit: 100_000 })
        ));
        assert_eq!(inflate_in(1, &z, 200_000).unwrap().len(), 200_000);
    }
}
