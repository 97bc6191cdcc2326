//! The streaming pipeline between pg_dump and the storage targets: pg_dump's stdout → row counts
//! and compression (see `codec`) → fixed-size chunks handed to the main thread over a rendezvous
//! channel. The main thread hashes what it receives (SHA-256, MD5, size) and hands each chunk to
//! every target at once (`crate::fanout`: one upload thread per target), so checksums do not
//! slow the compressor. Memory is bounded by the chunk being filled, the one handed over, and
//! each target's bounded queue (chunks are shared `Bytes`: no copy per target), whatever the
//! database size; nothing touches the disk.
//!
//! The compressor runs on its own thread so that compression and network I/O overlap; the main
//! thread owns pg_dump and the uploads, and learns pg_dump's exit status only after the
//! compressor reported the end of the stream ([`Piece::End`]).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use anyhow::Result;

/// What the compressor thread sends.
pub enum Piece {
    /// A full chunk of compressed bytes (shared by every target it is fanned out to).
    Chunk(bytes::Bytes),
    /// The end of the stream: the remaining bytes (gzip trailer included) and the totals.
    End {
        tail: Vec<u8>,
        raw_bytes: u64,
        dump_complete: bool,
        row_counts: BTreeMap<String, u64>,
        /// With encryption: the SHA-256 of the plaintext (the compressed stream) that was sealed.
        plain_sha256: Option<String>,
    },
    /// Reading or compressing failed.
    Failed(anyhow::Error),
}

/// pg_dump's plain format ends with this comment; its absence means the output was cut short.
const DUMP_COMPLETE_MARKER: &[u8] = b"-- PostgreSQL database dump complete";
const RAW_TAIL_KEEP: usize = 256;

/// Receives compressed bytes and cuts them into chunks.
struct ChunkSink {
    buf: Vec<u8>,
    chunk_size: usize,
    tx: SyncSender<Piece>,
}

impl Write for ChunkSink {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let written = data.len();
        while !data.is_empty() {
            let room = self.chunk_size - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.chunk_size {
                let full = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk_size));
                self.tx.send(Piece::Chunk(full.into())).map_err(|_| {
                    io::Error::new(io::ErrorKind::BrokenPipe, "the uploader stopped")
                })?;
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Starts the compressor thread reading `input`. The channel holds no chunk of its own: the
/// thread blocks (and pg_dump with it) while the uploader is behind: back-pressure, not buffering.
pub fn spawn_compressor<R: Read + Send + 'static>(
    input: R,
    options: StreamOptions,
    encryption: Option<std::sync::Arc<crate::encrypt::Encryption>>,
) -> Result<(Receiver<Piece>, JoinHandle<()>)> {
    let (tx, rx) = sync_channel(0);
    let handle = std::thread::Builder::new()
        .name("compressor".into())
        .spawn(move || {
            let failure_tx = tx.clone();
            if let Err(e) = compress(input, options, encryption.as_deref(), tx) {
                let _ = failure_tx.send(Piece::Failed(e));
            }
        })?;
    Ok((rx, handle))
}

/// How the compressor thread works.
#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    pub codec: crate::codec::Codec,
    pub threads: usize,
    pub chunk_size: usize,
    /// The input is a plain-format dump (look for the closing comment), else a custom archive;
    /// rows are counted in both.
    pub plain: bool,
}

/// Where the compressor writes: the chunks, or the age stage in front of them.
enum Stage {
    Plain(ChunkSink),
    Sealed(crate::encrypt::Sealed<ChunkSink>),
}

impl Write for Stage {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Stage::Plain(s) => s.write(data),
            Stage::Sealed(s) => s.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn compress<R: Read>(
    mut input: R,
    options: StreamOptions,
    encryption: Option<&crate::encrypt::Encryption>,
    tx: SyncSender<Piece>,
) -> Result<()> {
    let chunk_size = options.chunk_size;
    let sink = ChunkSink {
        buf: Vec::with_capacity(chunk_size),
        chunk_size,
        tx: tx.clone(),
    };
    let stage = match encryption {
        None => Stage::Plain(sink),
        Some(e) => Stage::Sealed(
            e.wrap(sink)
                .map_err(|e| anyhow::Error::new(e).context("starting the age encryption"))?,
        ),
    };
    let mut encoder = crate::codec::encoder(options.codec, options.threads, stage)?;
    let mut buf = vec![0u8; 256 << 10];
    let mut raw_bytes = 0u64;
    let mut raw_tail: Vec<u8> = Vec::with_capacity(2 * RAW_TAIL_KEEP);
    let mut rows = crate::rowcount::DumpRows::new(options.plain);
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(anyhow::Error::new(e).context("reading pg_dump's output")),
        };
        raw_bytes += n as u64;
        crate::signals::progress();
        if options.plain {
            raw_tail.extend_from_slice(&buf[n.saturating_sub(RAW_TAIL_KEEP)..n]);
            if raw_tail.len() > RAW_TAIL_KEEP {
                raw_tail.drain(..raw_tail.len() - RAW_TAIL_KEEP);
            }
        }
        rows.feed(&buf[..n]);
        encoder
            .write_all(&buf[..n])
            .map_err(|e| anyhow::Error::new(e).context("compressing"))?;
    }
    let stage = encoder
        .finish_into()
        .map_err(|e| anyhow::Error::new(e).context("finishing the compressed stream"))?;
    let (sink, plain_sha256) = match stage {
        Stage::Plain(sink) => (sink, None),
        Stage::Sealed(sealed) => {
            let (sink, plain) = sealed
                .finish()
                .map_err(|e| anyhow::Error::new(e).context("finishing the age stream"))?;
            (sink, Some(plain))
        }
    };

    // a custom-format archive has no closing marker; pg_dump's exit status is the check there
    let dump_complete = !options.plain
        || raw_tail
            .windows(DUMP_COMPLETE_MARKER.len())
            .any(|w| w == DUMP_COMPLETE_MARKER);
    let _ = tx.send(Piece::End {
        tail: sink.buf,
        raw_bytes,
        dump_complete,
        row_counts: rows.finish(),
        plain_sha256,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn run(input: Vec<u8>, chunk: usize) -> (Vec<bytes::Bytes>, Vec<u8>, u64, bool) {
        let options = StreamOptions {
            codec: crate::codec::Codec::Gzip(6),
            threads: 1,
            chunk_size: chunk,
            plain: true,
        };
        let (rx, handle) = spawn_compressor(io::Cursor::new(input), options, None).unwrap();
        let mut chunks = Vec::new();
        loop {
            match rx.recv().unwrap() {
                Piece::Chunk(c) => chunks.push(c),
                Piece::End {
                    tail,
                    raw_bytes,
                    dump_complete,
                    ..
                } => {
                    handle.join().unwrap();
                    return (chunks, tail, raw_bytes, dump_complete);
                }
                Piece::Failed(e) => panic!("{e:#}"),
            }
        }
    }

    #[test]
    fn chunks_are_exact_and_the_stream_is_valid_gzip() {
        // incompressible-ish input so that several chunks come out
        let mut input = Vec::new();
        let mut x: u64 = 42;
        for _ in 0..400_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            input.extend_from_slice(&x.to_le_bytes()[..3]);
        }
        input.extend_from_slice(b"\n--\n-- PostgreSQL database dump complete\n--\n\n");
        let (chunks, tail, raw, complete) = run(input.clone(), 256 << 10);
        assert!(chunks.len() >= 3, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() == 256 << 10));
        assert!(tail.len() < 256 << 10);
        assert_eq!(raw, input.len() as u64);
        assert!(complete);
        let all: Vec<u8> = chunks.concat().into_iter().chain(tail).collect();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&all[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, input);
    }

    #[test]
    fn a_cut_short_dump_is_noticed() {
        let (_, _, _, complete) = run(
            b"CREATE TABLE t (a int);\nCOPY t FROM stdin;\n1\n".to_vec(),
            256 << 10,
        );
        assert!(!complete);
    }

    #[test]
    fn empty_input_is_still_a_gzip_stream() {
        let (chunks, tail, raw, _) = run(Vec::new(), 256 << 10);
        assert!(chunks.is_empty());
        assert_eq!(raw, 0);
        assert!(tail.len() >= 18, "a gzip header and trailer");
    }
}
