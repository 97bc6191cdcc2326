//! Compression codecs: how a `--compress` value is parsed and named (labels, file extensions,
//! MIME types), the streaming encoders the pipeline writes through, and the matching decoders.
//!
//! gzip with one thread is one gzip member (flate2 on zlib-rs). With more threads the input is
//! cut into 1 MiB blocks compressed in parallel into independent gzip members, written in order
//! (the format allows concatenated members; `gunzip`, `zcat` and every zlib reader accept them;
//! pgdrive decodes with `MultiGzDecoder`). Independent blocks lose the shared dictionary across
//! block boundaries, which costs well under 1 % of size at 1 MiB. zstd uses libzstd's own workers when given more than one thread (one compresses inline).
//! Memory stays bounded: at most `2 × threads` blocks are in flight.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use anyhow::Result;

use crate::error::config_error_hint;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Gzip(u32),
    Zstd(i32),
    None,
}

pub const DEFAULT: Codec = Codec::Gzip(6);

impl Codec {
    /// Parses `gzip`, `gzip:LEVEL` (1-9), `zstd`, `zstd:LEVEL` (1-19) or `none`.
    pub fn parse(s: &str) -> Result<Codec> {
        let (name, level) = match s.trim().split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (s.trim(), None),
        };
        let level_in = |range: std::ops::RangeInclusive<i64>, default: i64| -> Result<i64> {
            match level {
                None => Ok(default),
                Some(l) => match l.parse::<i64>() {
                    Ok(n) if range.contains(&n) => Ok(n),
                    _ => Err(config_error_hint(format!(
                        "{name} level {l:?} is not between {} and {}",
                        range.start(),
                        range.end()
                    ), "write the codec as gzip, gzip:1 to gzip:9, zstd, zstd:1 to zstd:19 or none")),
                },
            }
        };
        match name {
            "gzip" => Ok(Codec::Gzip(level_in(1..=9, 6)? as u32)),
            "zstd" => Ok(Codec::Zstd(level_in(1..=19, 3)? as i32)),
            "none" if level.is_none() => Ok(Codec::None),
            _ => Err(config_error_hint(
                format!("unsupported compression {s:?}"),
                "use gzip[:1-9], zstd[:1-19] or none",
            )),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Codec::Gzip(l) => format!("gzip:{l}"),
            Codec::Zstd(l) => format!("zstd:{l}"),
            Codec::None => "none".into(),
        }
    }

    /// Recognises a label written by [`Codec::label`] (as stored in a backup's properties).
    pub fn from_label(s: &str) -> Option<Codec> {
        Codec::parse(s).ok()
    }

    pub fn extension(&self) -> &'static str {
        match self {
            Codec::Gzip(_) => ".gz",
            Codec::Zstd(_) => ".zst",
            Codec::None => "",
        }
    }

    pub fn mime_type(&self) -> &'static str {
        match self {
            Codec::Gzip(_) => "application/gzip",
            Codec::Zstd(_) => "application/zstd",
            Codec::None => "application/octet-stream",
        }
    }

    /// A reader of the decompressed stream.
    pub fn decoder<'a, R: Read + 'a>(&self, input: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Codec::Gzip(_) => Box::new(flate2::read::MultiGzDecoder::new(
                io::BufReader::with_capacity(256 << 10, input),
            )),
            Codec::Zstd(_) => Box::new(zstd::stream::read::Decoder::new(input)?),
            Codec::None => Box::new(input),
        })
    }
}

/// The default for `--threads`: the cores available minus one (pg_dump and the server need
/// one), at least one.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .saturating_sub(1)
        .max(1)
}

/// A streaming encoder that hands back its sink when finished.
pub trait Encoder<W: Write>: Write {
    fn finish_into(self: Box<Self>) -> io::Result<W>;
}

struct Plain<W>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> Encoder<W> for Plain<W> {
    fn finish_into(self: Box<Self>) -> io::Result<W> {
        Ok(self.0)
    }
}

impl<W: Write> Encoder<W> for flate2::write::GzEncoder<W> {
    fn finish_into(self: Box<Self>) -> io::Result<W> {
        (*self).finish()
    }
}

impl<W: Write> Encoder<W> for zstd::stream::write::Encoder<'static, W> {
    fn finish_into(self: Box<Self>) -> io::Result<W> {
        (*self).finish()
    }
}

/// The encoder for `codec` writing into `sink`.
pub fn encoder<W: Write + Send + 'static>(
    codec: Codec,
    threads: usize,
    sink: W,
) -> io::Result<Box<dyn Encoder<W>>> {
    Ok(match codec {
        Codec::None => Box::new(Plain(sink)),
        Codec::Gzip(level) if threads <= 1 => Box::new(flate2::write::GzEncoder::new(
            sink,
            flate2::Compression::new(level),
        )),
        Codec::Gzip(level) => Box::new(ParallelGzip::new(sink, level, threads)),
        Codec::Zstd(level) => {
            let mut e = zstd::stream::write::Encoder::new(sink, level)?;
            // One thread compresses in the calling thread: the pipeline reads pg_dump on a
            // thread of its own, so nothing waits on the other. libzstd's single worker would
            // add its job hand-offs (locks on every block, overlap reloads) for no overlap
            // gained (issue 10, see benches/RESULTS.md).
            if threads > 1 {
                e.multithread(threads as u32)?;
                // libzstd sizes each worker's job from the window (16 MiB and more from level 9
                // up); smaller jobs keep the workers' buffers, and so the memory bound, small,
                // at a cost of about 1 % in ratio (measured at zstd:9).
                e.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
            }
            Box::new(e)
        }
    })
}

const BLOCK: usize = 1 << 20;
/// zstd's job size with several workers (its minimum is 512 KiB).
const ZSTD_JOB_SIZE: u32 = 2 << 20;

fn gzip_member(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 3 + 64),
        flate2::Compression::new(level),
    );
    e.write_all(data)?;
    e.finish()
}

/// Parallel gzip: blocks compressed by a pool of threads into independent members, written in
/// input order.
struct ParallelGzip<W> {
    sink: W,
    block: Vec<u8>,
    jobs: Option<SyncSender<(u64, Vec<u8>)>>,
    done: Receiver<(u64, io::Result<Vec<u8>>)>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_write: u64,
    ready: BTreeMap<u64, Vec<u8>>,
    in_flight: usize,
    max_in_flight: usize,
}

impl<W: Write> ParallelGzip<W> {
    fn new(sink: W, level: u32, threads: usize) -> Self {
        let (jobs_tx, jobs_rx) = sync_channel::<(u64, Vec<u8>)>(threads);
        let jobs_rx = std::sync::Arc::new(std::sync::Mutex::new(jobs_rx));
        let (done_tx, done) = sync_channel(2 * threads);
        let workers = (0..threads)
            .map(|i| {
                let jobs = jobs_rx.clone();
                let done = done_tx.clone();
                std::thread::Builder::new()
                    .name(format!("gzip-{i}"))
                    .spawn(move || loop {
                        let job = jobs.lock().map(|rx| rx.recv());
                        let Ok(Ok((seq, data))) = job else { return };
                        if done.send((seq, gzip_member(&data, level))).is_err() {
                            return;
                        }
                    })
                    .expect("spawning a compression thread")
            })
            .collect();
        ParallelGzip {
            sink,
            block: Vec::with_capacity(BLOCK),
            jobs: Some(jobs_tx),
            done,
            workers,
            next_seq: 0,
            next_write: 0,
            ready: BTreeMap::new(),
            in_flight: 0,
            max_in_flight: 2 * threads,
        }
    }

    fn submit(&mut self) -> io::Result<()> {
        while self.in_flight >= self.max_in_flight {
            self.collect_one()?;
        }
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let jobs = self.jobs.as_ref().expect("submit after finish");
        jobs.send((self.next_seq, data))
            .map_err(|_| io::Error::other("a compression thread died"))?;
        self.next_seq += 1;
        self.in_flight += 1;
        Ok(())
    }

    /// Waits for one compressed block and writes every block that is now next in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let (seq, member) = self
            .done
            .recv()
            .map_err(|_| io::Error::other("a compression thread died"))?;
        self.in_flight -= 1;
        self.ready.insert(seq, member?);
        while let Some(member) = self.ready.remove(&self.next_write) {
            self.sink.write_all(&member)?;
            self.next_write += 1;
        }
        Ok(())
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let take = (BLOCK - self.block.len()).min(buf.len());
            self.block.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.block.len() == BLOCK {
                self.submit()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Encoder<W> for ParallelGzip<W> {
    fn finish_into(mut self: Box<Self>) -> io::Result<W> {
        // the last partial block; an empty input still becomes one (empty) gzip member
        if !self.block.is_empty() || self.next_seq == 0 {
            self.submit()?;
        }
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        self.jobs = None; // closes the queue: the workers exit
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let mut this = *self;
        this.sink.flush()?;
        Ok(this.sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        let words = [
            "alpha",
            "beta",
            "gamma",
            "delta",
            "COPY",
            "\t",
            "\n",
            "1234",
            "2026-11-30",
            "\\N",
        ];
        let mut x: u64 = 7;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
        }
        out.truncate(n);
        out
    }

    fn roundtrip(codec: Codec, threads: usize, input: &[u8]) -> Vec<u8> {
        let mut e = encoder(codec, threads, Vec::new()).unwrap();
        for piece in input.chunks(100_003) {
            e.write_all(piece).unwrap();
        }
        let compressed = e.finish_into().unwrap();
        let mut out = Vec::new();
        codec
            .decoder(&compressed[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, input, "{codec:?} x{threads}");
        compressed
    }

    #[test]
    fn every_codec_round_trips() {
        let input = sample(3 << 20);
        for codec in [Codec::Gzip(1), Codec::Gzip(6), Codec::Zstd(3), Codec::None] {
            for threads in [1, 3] {
                roundtrip(codec, threads, &input);
            }
        }
        for codec in [Codec::Gzip(6), Codec::Zstd(3)] {
            for threads in [1, 2] {
                roundtrip(codec, threads, &[]);
            }
        }
    }

    #[test]
    fn parallel_gzip_is_standard_gzip_and_close_in_size() {
        let input = sample(3 << 20);
        let one = roundtrip(Codec::Gzip(6), 1, &input);
        let many = roundtrip(Codec::Gzip(6), 2, &input);
        assert!(
            (many.len() as f64) < one.len() as f64 * 1.02,
            "{} vs {}",
            many.len(),
            one.len()
        );
        // the gzip command reads concatenated members
        let dir = std::env::temp_dir().join(format!("pgdrive-codec-{}", std::process::id()));
        std::fs::write(&dir, &many).unwrap();
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&dir)
            .output()
            .unwrap();
        std::fs::remove_file(&dir).ok();
        assert!(out.status.success());
        assert_eq!(out.stdout, input);
    }

    #[test]
    fn specs() {
        assert_eq!(Codec::parse("gzip").unwrap(), Codec::Gzip(6));
        assert_eq!(Codec::parse("gzip:9").unwrap(), Codec::Gzip(9));
        assert_eq!(Codec::parse("zstd").unwrap(), Codec::Zstd(3));
        assert_eq!(Codec::parse("zstd:19").unwrap(), Codec::Zstd(19));
        assert_eq!(Codec::parse("none").unwrap(), Codec::None);
        for bad in ["gzip:0", "gzip:10", "zstd:0", "lz4", "none:1", "gzip:x"] {
            assert!(Codec::parse(bad).is_err(), "{bad}");
        }
        for c in [Codec::Gzip(9), Codec::Zstd(3), Codec::None] {
            assert_eq!(Codec::from_label(&c.label()), Some(c));
        }
    }
}
