//! Request-body decoders: the chunked transfer coding (RFC 9112 7.1) as an explicit state
//! machine with one small step per state, and overflow-checked hex sizes.

use crate::h1::parse::hex_value;
use crate::limits::MAX_CHUNK_LINE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size,
    /// Optional whitespace after the size, before `;` or CR.
    SizeSpace,
    /// Skipping a chunk extension up to CR.
    Extension,
    /// Expecting the LF that ends the size line.
    SizeLf,
    /// Copying chunk data.
    Data,
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line, up to CR.
    TrailerLine,
    /// Expecting LF after a trailer field line.
    TrailerLineLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    BadChunkSize,
    ChunkSizeOverflow,
    BadLineEnding,
    LineTooLong,
}

#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes still to copy in the current chunk (or the size being accumulated).
    remaining: u64,
    /// Bytes seen on the current size, extension or trailer line.
    line_bytes: usize,
    digits: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder { state: State::Size, remaining: 0, line_bytes: 0, digits: 0 }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as possible, appending body bytes to `out`. Returns how many
    /// input bytes were consumed; stops right after the final CRLF so pipelined bytes stay put.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, DecodeError> {
        let mut position = 0;
        while position < input.len() && self.state != State::Done {
            if self.state == State::Data {
                let available = (input.len() - position) as u64;
                let take = available.min(self.remaining) as usize;
                out.extend_from_slice(&input[position..position + take]);
                position += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            self.step(input[position])?;
            position += 1;
        }
        Ok(position)
    }

    fn step(&mut self, byte: u8) -> Result<(), DecodeError> {
        if matches!(self.state, State::Size | State::SizeSpace | State::Extension | State::TrailerLine) {
            self.line_bytes += 1;
            if self.line_bytes > MAX_CHUNK_LINE {
                return Err(DecodeError::LineTooLong);
            }
        }
        self.state = match self.state {
            State::Size => self.size_digit(byte)?,
            State::SizeSpace => match byte {
                b' ' | b'\t' => State::SizeSpace,
                b';' => State::Extension,
                b'\r' => State::SizeLf,
                _ => return Err(DecodeError::BadChunkSize),
            },
            State::Extension => match byte {
                b'\r' => State::SizeLf,
                b'\n' => return Err(DecodeError::BadLineEnding),
                _ => State::Extension,
            },
            State::SizeLf => self.size_line_end(byte)?,
            State::DataCr => expect(byte, b'\r', State::DataLf)?,
            State::DataLf => {
                self.begin_line();
                expect(byte, b'\n', State::Size)?
            }
            State::TrailerStart => match byte {
                b'\r' => State::EndLf,
                b'\n' => return Err(DecodeError::BadLineEnding),
                _ => {
                    self.line_bytes = 1;
                    State::TrailerLine
                }
            },
            State::TrailerLine => match byte {
                b'\r' => State::TrailerLineLf,
                b'\n' => return Err(DecodeError::BadLineEnding),
                _ => State::TrailerLine,
            },
            State::TrailerLineLf => expect(byte, b'\n', State::TrailerStart)?,
            State::EndLf => expect(byte, b'\n', State::Done)?,
            State::Data | State::Done => unreachable_state(self.state)?,
        };
        Ok(())
    }

    fn begin_line(&mut self) {
        self.remaining = 0;
        self.digits = 0;
        self.line_bytes = 0;
    }

    fn size_digit(&mut self, byte: u8) -> Result<State, DecodeError> {
        if let Some(value) = hex_value(byte) {
            self.digits += 1;
            self.remaining = self
                .remaining
                .checked_mul(16)
                .and_then(|size| size.checked_add(u64::from(value)))
                .ok_or(DecodeError::ChunkSizeOverflow)?;
            return Ok(State::Size);
        }
        if self.digits == 0 {
            return Err(DecodeError::BadChunkSize);
        }
        match byte {
            b' ' | b'\t' => Ok(State::SizeSpace),
            b';' => Ok(State::Extension),
            b'\r' => Ok(State::SizeLf),
            _ => Err(DecodeError::BadChunkSize),
        }
    }

    fn size_line_end(&mut self, byte: u8) -> Result<State, DecodeError> {
        if byte != b'\n' {
            return Err(DecodeError::BadLineEnding);
        }
        self.line_bytes = 0;
        Ok(if self.remaining == 0 { State::TrailerStart } else { State::Data })
    }
}

fn expect(byte: u8, wanted: u8, next: State) -> Result<State, DecodeError> {
    if byte == wanted {
        Ok(next)
    } else {
        Err(DecodeError::BadLineEnding)
    }
}

/// Data and Done are handled before `step`; reaching here would be a logic error, reported as a
/// framing error rather than a panic.
fn unreachable_state(_state: State) -> Result<State, DecodeError> {
    Err(DecodeError::BadChunkSize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), DecodeError> {
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        let used = decoder.decode(input, &mut out)?;
        Ok((out, used, decoder.is_done()))
    }

    #[test]
    fn rfc9112_7_1_basic_chunks() {
        let input = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT";
        let (out, used, done) = decode_all(input).unwrap();
        assert_eq!(out, b"hello world");
        assert!(done);
        assert_eq!(&input[used..], b"NEXT");
    }

    #[test]
    fn byte_at_a_time_gives_the_same_result() {
        let input = b"A\r\n0123456789\r\n1 ; x\r\n!\r\n0\r\nTrailer: yes\r\n\r\n";
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        for byte in input.iter() {
            assert_eq!(decoder.decode(std::slice::from_ref(byte), &mut out).unwrap(), 1);
        }
        assert!(decoder.is_done());
        assert_eq!(out, b"0123456789!");
    }

    #[test]
    fn malformed_sizes_are_errors() {
        assert_eq!(decode_all(b"zz\r\n").unwrap_err(), DecodeError::BadChunkSize);
        assert_eq!(decode_all(b"\r\n").unwrap_err(), DecodeError::BadChunkSize);
        assert_eq!(decode_all(b"-1\r\n").unwrap_err(), DecodeError::BadChunkSize);
        assert_eq!(decode_all(b"5 x\r\n").unwrap_err(), DecodeError::BadChunkSize);
        assert_eq!(decode_all(b"fffffffffffffffff\r\n").unwrap_err(), DecodeError::ChunkSizeOverflow);
    }

    #[test]
    fn line_endings_are_strict() {
        assert_eq!(decode_all(b"5\nhello").unwrap_err(), DecodeError::BadChunkSize);
        assert_eq!(decode_all(b"5\r\nhelloXX").unwrap_err(), DecodeError::BadLineEnding);
        assert_eq!(decode_all(b"0\r\n\n").unwrap_err(), DecodeError::BadLineEnding);
    }

    #[test]
    fn endless_extension_is_bounded() {
        let mut input = b"1;".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_CHUNK_LINE + 10));
        assert_eq!(decode_all(&input).unwrap_err(), DecodeError::LineTooLong);
    }

    #[test]
    fn incomplete_input_is_not_done() {
        let (out, used, done) = decode_all(b"5\r\nhel").unwrap();
        assert_eq!(out, b"hel");
        assert_eq!(used, 6);
        assert!(!done);
    }
}
