//! A one-line download progress display on stderr (bytes, rate, ETA from the recorded size),
//! redrawn with `\r` at most four times a second, and only when stderr is a terminal: under cron
//! nothing is printed. A reader wrapper, so it counts exactly what the consumer pulled.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

pub fn stderr_is_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDERR_FILENO) == 1 }
}

pub fn stdin_is_terminal() -> bool {
    // SAFETY: as above.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

pub struct Progress<R> {
    inner: R,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_draw: Option<Instant>,
    enabled: bool,
}

impl<R: Read> Progress<R> {
    /// Shows progress only if `enabled` (pass [`stderr_is_terminal`] unless quiet).
    pub fn new(inner: R, total: Option<u64>, enabled: bool) -> Progress<R> {
        Progress {
            inner,
            total,
            done: 0,
            started: Instant::now(),
            last_draw: None,
            enabled,
        }
    }

    fn draw(&mut self, force: bool) {
        if !self.enabled
            || (!force
                && self
                    .last_draw
                    .is_some_and(|t| t.elapsed() < Duration::from_millis(250)))
        {
            return;
        }
        self.last_draw = Some(Instant::now());
        let _ = write!(
            io::stderr().lock(),
            "\r{}\x1b[K",
            line(self.done, self.total, self.started.elapsed())
        );
    }

    /// Ends the line (call once the stream is done or abandoned).
    pub fn clear(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            self.draw(true);
            let _ = writeln!(io::stderr().lock());
            self.last_draw = None;
        }
    }
}

/// `12.3 MB / 45.6 MB (27%)  3.1 MB/s  ETA 0:11`
pub fn line(done: u64, total: Option<u64>, elapsed: Duration) -> String {
    use crate::units::human_bytes;
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let mut s = human_bytes(done);
    if let Some(t) = total.filter(|t| *t > 0) {
        s.push_str(&format!(
            " / {} ({}%)",
            human_bytes(t),
            (done.min(t) * 100 / t)
        ));
    }
    s.push_str(&format!("  {}/s", human_bytes(rate as u64)));
    if let Some(t) = total {
        if rate > 0.0 && done <= t {
            let eta = ((t - done) as f64 / rate) as u64;
            s.push_str(&format!("  ETA {}:{:02}", eta / 60, eta % 60));
        }
    }
    s
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        self.draw(false);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_reads_well() {
        assert_eq!(
            line(2_000_000, Some(4_000_000), Duration::from_secs(2)),
            "2.0 MB / 4.0 MB (50%)  1.0 MB/s  ETA 0:02"
        );
        assert_eq!(line(10, None, Duration::from_secs(1)), "10 B  10 B/s");
    }
}
