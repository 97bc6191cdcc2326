//! The streaming pipeline between pg_dump and the storage targets: pg_dump's stdout → row counts
//! (reader thread) → compression (see `codec`) → fixed-size chunks handed to the main thread over a rendezvous
//! channel. The main thread hashes what it receives (SHA-256, MD5, size) and hands each chunk to
//! every target at once (`crate::fanout`: one upload thread per target), so checksums do not
//! slow the compressor. Memory is bounded by the chunk being filled, the one handed over, and
//! each target's bounded queue (chunks are shared `Bytes`: no copy per target), whatever the
//! database size; nothing touches the disk.
//!
//! pg_dump's output is read (and its rows counted) on a thread of its own, through a pool of a
//! few read buffers, so that reading overlaps compression even with one compression thread.
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

fn compress<R: Read + Send + 'static>(
    input: R,
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
    let (raw, free) = spawn_reader(input, options.plain)?;
    let (raw_bytes, dump_complete, row_counts) = loop {
        match raw.recv() {
            Ok(Raw::Data(buf, n)) => {
                encoder
                    .write_all(&buf[..n])
                    .map_err(|e| anyhow::Error::new(e).context("compressing"))?;
                // the reader may be gone after its last piece: then the buffer is not needed
                let _ = free.send(buf);
            }
            Ok(Raw::End {
                raw_bytes,
                dump_complete,
                row_counts,
            }) => break (raw_bytes, dump_complete, row_counts),
            Ok(Raw::Failed(e)) => return Err(e),
            Err(_) => anyhow::bail!("the reader of pg_dump's output stopped unexpectedly"),
        }
    };
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

    let _ = tx.send(Piece::End {
        tail: sink.buf,
        raw_bytes,
        dump_complete,
        row_counts,
        plain_sha256,
    });
    Ok(())
}

/// What the reader thread sends the compressor.
enum Raw {
    /// A buffer from the pool and how many of its bytes were read.
    Data(Vec<u8>, usize),
    /// pg_dump's output ended (EOF): what was learnt reading it.
    End {
        raw_bytes: u64,
        dump_complete: bool,
        row_counts: BTreeMap<String, u64>,
    },
    Failed(anyhow::Error),
}

/// Reads until `buf` is full or the input ended: the compressor is woken once per buffer, not
/// once per pg_dump write (a few KiB each).
fn fill(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Bytes asked of each read of pg_dump's output.
const READ_BYTES: usize = 256 << 10;
/// Read buffers shared by the reader and the compressor: the reader runs at most this far ahead.
const READ_BUFFERS: usize = 4;

/// Starts the thread that reads pg_dump's output, counts its rows and watches for the closing
/// comment, so that reading overlaps compression (the compressor is the slowest stage; it then
/// never waits on a read, and pg_dump never waits on row counting). Returns the data and the
/// channel on which buffers go back to the reader. A compressor that stops drops both ends,
/// which stops the reader at its next buffer; a reader blocked on a read ends when pg_dump is
/// killed (the caller's abandon path).
fn spawn_reader<R: Read + Send + 'static>(
    mut input: R,
    plain: bool,
) -> Result<(Receiver<Raw>, SyncSender<Vec<u8>>)> {
    let (data_tx, data_rx) = std::sync::mpsc::channel();
    let (free_tx, free_rx) = sync_channel(READ_BUFFERS);
    for _ in 0..READ_BUFFERS {
        let _ = free_tx.send(vec![0u8; READ_BYTES]);
    }
    std::thread::Builder::new()
        .name("dump-reader".into())
        .spawn(move || {
            let mut raw_bytes = 0u64;
            let mut raw_tail: Vec<u8> = Vec::with_capacity(2 * RAW_TAIL_KEEP);
            let mut rows = crate::rowcount::DumpRows::new(plain);
            // the pool is bounded: a buffer comes back only once it was compressed
            while let Ok(mut buf) = free_rx.recv() {
                let n = match fill(&mut input, &mut buf) {
                    Ok(0) => {
                        // a custom-format archive has no closing marker; pg_dump's exit status
                        // is the check there
                        let dump_complete = !plain
                            || raw_tail
                                .windows(DUMP_COMPLETE_MARKER.len())
                                .any(|w| w == DUMP_COMPLETE_MARKER);
                        let _ = data_tx.send(Raw::End {
                            raw_bytes,
                            dump_complete,
                            row_counts: rows.finish(),
                        });
                        return;
                    }
                    Ok(n) => n,
                    Err(e) => {
                        let e = anyhow::Error::new(e).context("reading pg_dump's output");
                        let _ = data_tx.send(Raw::Failed(e));
                        return;
                    }
                };
                raw_bytes += n as u64;
                crate::signals::progress();
                if plain {
                    raw_tail.extend_from_slice(&buf[n.saturating_sub(RAW_TAIL_KEEP)..n]);
                    if raw_tail.len() > RAW_TAIL_KEEP {
                        raw_tail.drain(..raw_tail.len() - RAW_TAIL_KEEP);
                    }
                }
                rows.feed(&buf[..n]);
                if data_tx.send(Raw::Data(buf, n)).is_err() {
                    return;
                }
            }
        })?;
    Ok((data_rx, free_tx))
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
