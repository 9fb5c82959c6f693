//! Content codings a response body may come in (`Content-Encoding`), decoded
//! for checks and extractions, which must see the text a browser would.
//! Only bodies a step keeps are decoded; the rest are read and dropped as
//! they came. Output is capped at the kept-body limit, so a decompression
//! bomb costs at most that much memory.

use flate2::{Decompress, FlushDecompress, Status};

/// A response's `Content-Encoding`, as far as the agent decodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Coding {
    #[default]
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Zstd,
    /// A coding the agent does not decode (compress, several codings in a
    /// row, …): the body is kept as it came, and checks on it fail with
    /// error kind `decode`.
    Other,
}

impl Coding {
    /// From a `Content-Encoding` header's value.
    pub fn of(value: &[u8]) -> Coding {
        let v = value.trim_ascii();
        if v.eq_ignore_ascii_case(b"gzip") || v.eq_ignore_ascii_case(b"x-gzip") {
            Coding::Gzip
        } else if v.eq_ignore_ascii_case(b"deflate") {
            Coding::Deflate
        } else if v.eq_ignore_ascii_case(b"br") {
            Coding::Brotli
        } else if v.eq_ignore_ascii_case(b"zstd") {
            Coding::Zstd
        } else if v.is_empty() || v.eq_ignore_ascii_case(b"identity") {
            Coding::Identity
        } else {
            Coding::Other
        }
    }
}

/// One user's decoder: each inflater (raw DEFLATE, zlib) is made once, at
/// its first use, and reset per body.
#[derive(Default)]
pub struct BodyDecoder {
    raw: Option<Box<Decompress>>,
    zlib: Option<Box<Decompress>>,
}

impl BodyDecoder {
    /// Decodes `input` (all of a body that came with `coding`) into `out`,
    /// at most `limit` bytes of it (the rest is not decoded); `true` when
    /// the body had more. An error says why the body could not be read.
    pub fn decode(
        &mut self,
        coding: Coding,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<bool, String> {
        out.clear();
        match coding {
            Coding::Identity => {
                out.extend_from_slice(&input[..input.len().min(limit)]);
                Ok(input.len() > limit)
            }
            Coding::Gzip => {
                let at = gzip_header_len(input)?;
                self.inflate(false, &input[at..], out, limit)
            }
            // "deflate" is a zlib stream by the standard, raw DEFLATE from
            // some servers: try the first, then the second.
            Coding::Deflate => self
                .inflate(true, input, out, limit)
                .or_else(|_| self.inflate(false, input, out, limit)),
            Coding::Brotli => read_limited(
                brotli_decompressor::Decompressor::new(input, 16 << 10),
                out,
                limit,
            ),
            Coding::Zstd => {
                let mut input = input;
                let d = ruzstd::decoding::StreamingDecoder::new(&mut input)
                    .map_err(|e| format!("cannot decode the body: {e}"))?;
                read_limited(d, out, limit)
            }
            Coding::Other => Err("a content coding the agent does not decode".into()),
        }
    }

    fn inflate(
        &mut self,
        zlib: bool,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<bool, String> {
        out.clear();
        let slot = if zlib { &mut self.zlib } else { &mut self.raw };
        let d = slot.get_or_insert_with(|| Box::new(Decompress::new(zlib)));
        d.reset(zlib);
        loop {
            if out.len() >= limit {
                out.truncate(limit);
                return Ok(true);
            }
            if out.capacity() == out.len() {
                out.reserve((out.len().max(16 << 10)).min(limit - out.len()));
            }
            let consumed = d.total_in() as usize;
            let before = out.len();
            let status = d
                .decompress_vec(&input[consumed..], out, FlushDecompress::None)
                .map_err(|e| format!("cannot decode the body: {e}"))?;
            match status {
                Status::StreamEnd => return Ok(false),
                _ if out.len() == before && d.total_in() as usize == consumed => {
                    return Err("the compressed body ends early".into());
                }
                _ => {}
            }
        }
    }
}

/// Reads a decoder's output into `out`, at most `limit` bytes; `true` when
/// there was more.
fn read_limited(
    mut r: impl std::io::Read,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<bool, String> {
    let mut chunk = [0u8; 16 << 10];
    loop {
        let room = limit.saturating_sub(out.len());
        // At the limit, one byte more tells whether the body had more.
        let want = room.clamp(1, chunk.len());
        let n = match r.read(&mut chunk[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err("the compressed body ends early".into());
            }
            Err(e) => return Err(format!("cannot decode the body: {e}")),
        };
        if n == 0 {
            return Ok(false);
        }
        if room == 0 {
            return Ok(true);
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// The length of a gzip member's header (RFC 1952).
fn gzip_header_len(b: &[u8]) -> Result<usize, String> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let bad = || "not a gzip body".to_string();
    if b.len() < 10 || b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 {
        return Err(bad());
    }
    let flags = b[3];
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let n = usize::from(u16::from_le_bytes([
            *b.get(at).ok_or_else(bad)?,
            *b.get(at + 1).ok_or_else(bad)?,
        ]));
        at += 2 + n;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let end = b
                .get(at..)
                .ok_or_else(bad)?
                .iter()
                .position(|&c| c == 0)
                .ok_or_else(bad)?;
            at += end + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    if at > b.len() {
        return Err(bad());
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_and_deflate_decode_and_a_bomb_stops_at_the_limit() {
        let text = b"<html>sesskey=abc123 logintoken=T</html>".repeat(100);
        let mut d = BodyDecoder::default();
        let mut out = Vec::new();
        assert!(
            !d.decode(Coding::Gzip, &gzip(&text), &mut out, 1 << 20)
                .unwrap(),
            "all of it fits"
        );
        assert_eq!(out, text);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&text).unwrap();
        d.decode(Coding::Deflate, &z.finish().unwrap(), &mut out, 1 << 20)
            .unwrap();
        assert_eq!(out, text);
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&text).unwrap();
        d.decode(Coding::Deflate, &raw.finish().unwrap(), &mut out, 1 << 20)
            .unwrap();
        assert_eq!(out, text, "raw DEFLATE, as some servers send it");
        // 64 MiB of zeros compress to about 64 KB: decoding stops at the limit.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 100_000);
        assert!(
            d.decode(Coding::Gzip, &bomb, &mut out, 1 << 20).unwrap(),
            "cut at the limit, and said"
        );
        assert_eq!(out.len(), 1 << 20);
        assert!(d.decode(Coding::Identity, &text, &mut out, 100).unwrap());
        assert_eq!(out.len(), 100);
        assert!(out.capacity() <= 2 << 20, "{}", out.capacity());
        // Broken input is an error, not a panic.
        assert!(
            d.decode(Coding::Gzip, b"\x1f\x8b\x08\x00garbage", &mut out, 1 << 20)
                .is_err()
        );
        assert!(
            d.decode(Coding::Gzip, &gzip(&text)[..40], &mut out, 1 << 20)
                .is_err()
        );
        assert_eq!(Coding::of(b" GZIP "), Coding::Gzip);
        assert_eq!(Coding::of(b"BR"), Coding::Brotli);
        assert_eq!(Coding::of(b"compress"), Coding::Other);
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
        w.write_all(data).unwrap();
        w.into_inner()
    }

    #[test]
    fn brotli_and_zstd_decode_stop_at_the_limit_and_refuse_a_cut_body() {
        let text = b"<html>sesskey=abc123 logintoken=T</html>".repeat(100);
        let mut d = BodyDecoder::default();
        let mut out = Vec::new();
        let zstd = |data: &[u8]| {
            ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
        };
        for (coding, encode) in [
            (Coding::Brotli, &brotli as &dyn Fn(&[u8]) -> Vec<u8>),
            (Coding::Zstd, &zstd),
        ] {
            let body = encode(&text);
            assert!(
                !d.decode(coding, &body, &mut out, 1 << 20).unwrap(),
                "{coding:?}"
            );
            assert_eq!(out, text, "{coding:?}");
            // Exactly at the limit: all of it, nothing more.
            assert!(!d.decode(coding, &body, &mut out, text.len()).unwrap());
            assert!(
                d.decode(coding, &body, &mut out, 100).unwrap(),
                "{coding:?}"
            );
            assert_eq!(out.len(), 100);
            let bomb = encode(&vec![0u8; 16 << 20]);
            assert!(bomb.len() < 1 << 20, "{coding:?}: {}", bomb.len());
            assert!(d.decode(coding, &bomb, &mut out, 1 << 20).unwrap());
            assert_eq!(out.len(), 1 << 20);
            assert!(
                d.decode(coding, &body[..body.len() / 2], &mut out, 1 << 20)
                    .is_err(),
                "{coding:?}: half a body is an error"
            );
            assert!(d.decode(coding, b"garbage!", &mut out, 1 << 20).is_err());
        }
    }
}
