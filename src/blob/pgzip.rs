//! Parallel gzip: a layer's tar stream compressed in fixed 1 MiB blocks on
//! all cores, written out in order as one standard gzip member.
//!
//! Each block is deflated by a fresh compressor and ends with a full
//! flush (byte-aligned, no history carried over); the last one ends the
//! stream. The output depends only on the input and the level, never on
//! the number of threads or their timing, so layers stay reproducible.
//! Any gzip reader (gunzip, Go's compress/gzip, containerd) reads it.
//! Compression costs a little ratio at block edges (no shared window).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Input bytes per independently compressed block.
pub const BLOCK: usize = 1 << 20;

/// The gzip header flate2 writes by default: no name, mtime 0, OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Deflates `data` as one piece of a larger raw deflate stream.
fn deflate_block(data: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut compress = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Full
    };
    loop {
        let consumed = compress.total_in() as usize;
        if out.capacity() - out.len() < 64 * 1024 {
            out.reserve(256 * 1024);
        }
        let status = compress
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_input = compress.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => break,
            // A full flush is complete when all input is in and there was
            // room left over in the output.
            Status::Ok | Status::BufError if !last && done_input && out.capacity() > out.len() => {
                break
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A `Write` that gzips what it is given on rayon's pool.
pub struct ParallelGzip<W: Write> {
    inner: W,
    level: u32,
    block: Vec<u8>,
    crc: crc32fast::Hasher,
    size: u64,
    in_flight: VecDeque<mpsc::Receiver<io::Result<Vec<u8>>>>,
    header_written: bool,
}

impl<W: Write> ParallelGzip<W> {
    /// Compresses into `inner` at `level` (0–9).
    pub fn new(inner: W, level: u32) -> ParallelGzip<W> {
        ParallelGzip {
            inner,
            level,
            block: Vec::with_capacity(BLOCK),
            crc: crc32fast::Hasher::new(),
            size: 0,
            in_flight: VecDeque::new(),
            header_written: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.inner.write_all(&HEADER)?;
            self.header_written = true;
        }
        Ok(())
    }

    /// Writes out finished blocks, waiting for the oldest while more than
    /// `keep` are in flight.
    fn drain(&mut self, keep: usize) -> io::Result<()> {
        self.header()?;
        while self.in_flight.len() > keep {
            let receiver = self.in_flight.pop_front().expect("non-empty");
            let compressed = receiver
                .recv()
                .map_err(|_| io::Error::other("a compression worker stopped"))??;
            self.inner.write_all(&compressed)?;
        }
        Ok(())
    }

    fn dispatch(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let (sender, receiver) = mpsc::sync_channel(1);
        let level = self.level;
        rayon::spawn(move || {
            let _ = sender.send(deflate_block(&data, level, false));
        });
        self.in_flight.push_back(receiver);
        self.drain(2 * rayon::current_num_threads())
    }

    /// Ends the stream (last block, CRC and size) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.drain(0)?;
        let last = deflate_block(&self.block, self.level, true)?;
        self.inner.write_all(&last)?;
        let crc = self.crc.clone().finalize();
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.write_all(&(self.size as u32).to_le_bytes())?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.block.len();
        let n = buf.len().min(room);
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.size += n as u64;
        if self.block.len() == BLOCK {
            self.dispatch()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = ParallelGzip::new(Vec::new(), 6);
        // Odd-sized writes cross block edges.
        for chunk in data.chunks(777_777) {
            gz.write_all(chunk).unwrap();
        }
        gz.finish().unwrap()
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        let mut data = Vec::new();
        let mut x: u32 = 1;
        for i in 0..(3 * BLOCK + 12345) {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            // Half compressible, half noise.
            data.push(if i % 2 == 0 { (x >> 24) as u8 } else { b'a' });
        }
        for input in [&b""[..], &b"tiny"[..], &data[..BLOCK], &data[..]] {
            let compressed = gzip(input);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&compressed[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, input);
            assert_eq!(compressed, gzip(input), "same input, same bytes");
        }
        // gunzip (the reference implementation) agrees.
        let path = std::env::temp_dir().join(format!("pgzip-{}.gz", std::process::id()));
        std::fs::write(&path, gzip(&data)).unwrap();
        let out = std::process::Command::new("gzip")
            .args(["-dc"])
            .arg(&path)
            .output()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }
}
