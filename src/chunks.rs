//! Reading large line-oriented files (tables, alert files) in chunks that end at a newline, on a
//! thread of their own, so that the copy from the page cache overlaps parsing on the other cores.

use std::io::Read;
use std::path::Path;

/// Bytes read per chunk.
pub const CHUNK: usize = 2 << 20;

/// A run of whole lines from a file, with the number of its first line (0 from a reader that does
/// not count lines: see [`read_in_background`]).
#[derive(Debug)]
pub struct Chunk {
    pub bytes: Vec<u8>,
    pub first_line: u64,
}

/// Asks the kernel to back a freshly allocated buffer with transparent huge pages. Table rows stay
/// in these buffers, and on the virtual machines measured, filling them 4 KiB page by page (each page
/// zeroed on its own fault) cost more than parsing them; 2 MiB pages cut the copy by about three.
/// Only the 2 MiB-aligned interior of the allocation can be advised.
pub fn advise_huge_pages(buf: &mut Vec<u8>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buf.as_mut_ptr() as usize;
        let end = start + buf.capacity();
        let (a, b) = ((start + HUGE - 1) & !(HUGE - 1), end & !(HUGE - 1));
        if b > a {
            // SAFETY: madvise with MADV_HUGEPAGE only changes how the kernel backs pages of this live
            // allocation; it neither reads nor writes the memory, and the range lies inside it.
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// Reads a whole file into a buffer backed by huge pages where the kernel allows it.
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
    let mut buf = Vec::with_capacity(size + 1);
    advise_huge_pages(&mut buf);
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Splits what a reader yields into chunks of about `CHUNK` bytes that end at a newline. A line
/// longer than a chunk makes its chunk longer; the last chunk may lack the final newline.
pub struct ChunkReader<R> {
    r: R,
    carry: Vec<u8>,
    /// The next chunk's first line; `None` where the consumer numbers the lines itself.
    line: Option<u64>,
    done: bool,
    size: usize,
}

impl<R: Read> ChunkReader<R> {
    pub fn new(r: R) -> Self {
        Self::with_chunk_size(r, CHUNK)
    }

    pub fn with_chunk_size(r: R, size: usize) -> Self {
        ChunkReader { r, carry: Vec::new(), line: Some(1), done: false, size: size.max(1) }
    }

    /// A reader whose chunks are not numbered (`first_line` 0): counting a chunk's lines is a pass
    /// over it, which a consumer that numbers them as it splits them (`lines_from`) need not pay.
    pub fn unnumbered(r: R, size: usize) -> Self {
        ChunkReader { line: None, ..Self::with_chunk_size(r, size) }
    }

    /// The next chunk, read into `reuse` where given (a buffer the consumer is done with: its pages
    /// are already faulted in, which a fresh allocation's are not).
    pub fn next_chunk(&mut self, reuse: Option<Vec<u8>>) -> std::io::Result<Option<Chunk>> {
        if self.done {
            return Ok(None);
        }
        let mut buf = match reuse {
            Some(mut b) => {
                b.clear();
                b.reserve(self.carry.len() + self.size);
                b
            }
            None => {
                let mut b = Vec::with_capacity(self.carry.len() + self.size);
                advise_huge_pages(&mut b);
                b
            }
        };
        buf.append(&mut self.carry);
        let mut want = buf.len() + self.size;
        loop {
            let room = (want - buf.len()) as u64;
            let n = self.r.by_ref().take(room).read_to_end(&mut buf)?;
            if n == 0 {
                self.done = true;
                break;
            }
            if buf.len() < want {
                continue;
            }
            match memchr::memrchr(b'\n', &buf) {
                Some(p) => {
                    self.carry = buf[p + 1..].to_vec();
                    buf.truncate(p + 1);
                    break;
                }
                None => want += self.size,
            }
        }
        if buf.is_empty() {
            return Ok(None);
        }
        let first_line = self.line.unwrap_or(0);
        if let Some(line) = &mut self.line {
            *line += memchr::memchr_iter(b'\n', &buf).count() as u64;
        }
        Ok(Some(Chunk { bytes: buf, first_line }))
    }
}

/// Hands a chunk's buffer back to the reader for the next chunk.
pub type Recycle<'a> = &'a (dyn Fn(Vec<u8>) + Sync);

/// Buffers a background reader fills: one being consumed, one being read or waiting. Fresh buffers
/// cost a page fault a page on the machines measured, and reading a chunk takes a fraction of the
/// time parsing it does, so a third (tried) only added faults at the start of every load.
const READ_BUFFERS: usize = 2;

/// Runs `consume` over the chunks of `source`, read on a thread of its own one chunk ahead. The
/// chunks come unnumbered (`first_line` 0): the one consumer takes them in order and numbers their
/// lines as it splits them (`lines_from`).
/// `consume` gives buffers back through its `Recycle` once done with a chunk, and must give one back
/// before it takes the chunk after next: the reader keeps at most `READ_BUFFERS`. When it returns
/// early the reader stops too.
/// `size_hint` is the source's size where known (0 if not).
pub fn read_in_background<R, T>(
    source: R,
    chunk_size: usize,
    size_hint: u64,
    consume: impl FnOnce(&mut dyn Iterator<Item = std::io::Result<Chunk>>, Recycle<'_>) -> T,
) -> T
where
    R: Read + Send,
{
    // Until the first chunk is read, the consuming thread has nothing to do: it faults in the
    // reader's second buffer meanwhile (when there will be a second chunk), work that would
    // otherwise fall in the parse of the first chunk, when every core is busy.
    let prefault = size_hint > chunk_size as u64;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (give_back, returned) = std::sync::mpsc::channel::<Vec<u8>>();
        scope.spawn(move || {
            let mut reader = ChunkReader::unnumbered(source, chunk_size);
            // Past `READ_BUFFERS` the reader waits for one back, or for the consumer to be gone.
            // The buffer the consuming thread faults in counts as one.
            let mut buffers = usize::from(prefault);
            loop {
                // A consumer that is gone takes no more chunks: stop rather than read another.
                let back = if buffers >= READ_BUFFERS {
                    match returned.recv() {
                        Ok(b) => Some(b),
                        Err(_) => break,
                    }
                } else {
                    match returned.try_recv() {
                        Ok(b) => Some(b),
                        Err(std::sync::mpsc::TryRecvError::Empty) => None,
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                    }
                };
                buffers += usize::from(back.is_none());
                let item = reader.next_chunk(back);
                let stop = !matches!(item, Ok(Some(_)));
                if tx.send(item).is_err() || stop {
                    break;
                }
            }
        });
        if prefault {
            let _ = give_back.send(faulted_in(chunk_size + chunk_size / 16));
        }
        let mut chunks = rx.into_iter().map_while(|item| item.transpose());
        let recycle = move |b: Vec<u8>| {
            // The reader may have finished; then the buffer is simply dropped.
            let _ = give_back.send(b);
        };
        consume(&mut chunks, &recycle)
    })
}

/// An empty buffer of `capacity` bytes whose pages are all in memory already.
fn faulted_in(capacity: usize) -> Vec<u8> {
    let mut b: Vec<u8> = Vec::with_capacity(capacity);
    advise_huge_pages(&mut b);
    // A byte written a page is enough; the buffer stays empty.
    for byte in b.spare_capacity_mut().iter_mut().step_by(4096) {
        byte.write(0);
    }
    b
}

/// Runs `work` over the chunks of `source` on rayon's threads, each chunk whole, taken by whichever
/// thread is free (splitting each chunk among the threads instead leaves one idle at the end of every
/// chunk). The calling thread reads, at most `ahead` chunks ahead of the work, into buffers the work
/// gives back; it starts no thread of its own. What the chunks gave comes back in file order. The
/// chunks come unnumbered (`first_line` 0): a consumer that wants line numbers numbers each chunk's
/// lines from 1 (`lines_from`) and adds the lines of the chunks before it once all are done.
pub fn map_chunks<R, T>(
    source: R,
    chunk_size: usize,
    ahead: usize,
    work: impl Fn(&Chunk) -> T + Sync,
) -> std::io::Result<Vec<T>>
where
    R: Read,
    T: Send,
{
    let ahead = ahead.max(1);
    let (give_back, returned) = std::sync::mpsc::channel::<Vec<u8>>();
    let done = std::sync::Mutex::new(Vec::new());
    let mut reader = ChunkReader::unnumbered(source, chunk_size);
    rayon::in_place_scope(|scope| -> std::io::Result<()> {
        let (done, work) = (&done, &work);
        // Buffers handed to the work and not yet taken back.
        let mut out = 0;
        for at in 0.. {
            let back = if out >= ahead { returned.recv().ok() } else { returned.try_recv().ok() };
            out -= usize::from(back.is_some());
            let Some(chunk) = reader.next_chunk(back)? else { return Ok(()) };
            out += 1;
            let give_back = give_back.clone();
            scope.spawn(move |_| {
                let t = work(&chunk);
                // The reading may have stopped; then the buffer is simply dropped.
                let _ = give_back.send(chunk.bytes);
                done.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((at, t));
            });
        }
        Ok(())
    })?;
    let mut all = done.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    all.sort_unstable_by_key(|(at, _)| *at);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// The non-blank lines of a chunk, trimmed, each with its line number.
pub fn lines(chunk: &Chunk) -> Vec<(u64, &[u8])> {
    lines_from(&chunk.bytes, chunk.first_line).0
}

/// The non-blank lines of `bytes`, trimmed, numbered from `first_line`; and the number of the line
/// after them (the next chunk's first).
pub fn lines_from(bytes: &[u8], first_line: u64) -> (Vec<(u64, &[u8])>, u64) {
    let mut out = Vec::with_capacity(bytes.len() / 256 + 1);
    let (mut n, mut start) = (first_line, 0usize);
    for end in memchr::memchr_iter(b'\n', bytes).chain(std::iter::once(bytes.len())) {
        if let Some(line) = bytes.get(start..end).map(<[u8]>::trim_ascii).filter(|l| !l.is_empty()) {
            out.push((n, line));
        }
        n += 1;
        start = end + 1;
    }
    // The last piece (after the last newline, perhaps empty) does not end a line.
    (out, n - 1)
}

/// A run of consecutive lines of one chunk, checked as UTF-8 in one pass: a newline cannot split a
/// character, so each line of a run of text is text itself, and one check of the run costs less
/// than one per line.
pub struct TextRun<'a> {
    text: &'a str,
    /// The address of the run's first byte.
    start: usize,
}

impl<'a> TextRun<'a> {
    /// The run from the first to the last of `lines` (as `lines` split them from `chunk`); `None`
    /// where it is not all UTF-8 (its lines are then checked one by one, which says where).
    pub fn check(chunk: &'a [u8], lines: &[(u64, &'a [u8])]) -> Option<TextRun<'a>> {
        let at = |l: &[u8]| (l.as_ptr() as usize).checked_sub(chunk.as_ptr() as usize);
        let (first, last) = (lines.first()?.1, lines.last()?.1);
        let (from, to) = (at(first)?, at(last)? + last.len());
        let text = simdutf8::basic::from_utf8(chunk.get(from..to)?).ok()?;
        Some(TextRun { text, start: text.as_ptr() as usize })
    }

    /// `line` (one of the run's lines) as text.
    pub fn line(&self, line: &[u8]) -> Option<&'a str> {
        let from = (line.as_ptr() as usize).checked_sub(self.start)?;
        self.text.get(from..from + line.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], size: usize) -> Vec<(u64, String)> {
        let mut r = ChunkReader::with_chunk_size(input, size);
        let mut out = Vec::new();
        let mut spare = None;
        while let Some(c) = r.next_chunk(spare.take()).unwrap() {
            assert!(c.bytes.ends_with(b"\n") || r.done, "a chunk ends at a newline unless it is the last");
            out.extend(lines(&c).into_iter().map(|(n, l)| (n, String::from_utf8(l.to_vec()).unwrap())));
            spare = Some(c.bytes);
        }
        out
    }

    #[test]
    fn lines_keep_their_numbers_across_chunks() {
        let mut input = Vec::new();
        for i in 1..=400_000u64 {
            input.extend_from_slice(if i % 7 == 0 { b"\n" as &[u8] } else { b"row row row\n" });
        }
        input.extend_from_slice(b"last, no newline");
        // 1,000-byte chunks: several thousand boundaries, falling anywhere in a line.
        let got = all(&input, 1000);
        assert_eq!(got, all(&input, CHUNK), "the chunk size changes nothing");
        assert_eq!(got.len(), 400_000 - 400_000 / 7 + 1);
        assert_eq!(got[5], (6, "row row row".into()));
        assert_eq!(got.last(), Some(&(400_001, "last, no newline".into())));
    }

    #[test]
    fn a_reader_whose_consumer_is_gone_reads_no_further_chunk() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        // An endless source of 16-byte lines (a pipe, say) that counts what it gives.
        struct Endless(Arc<AtomicUsize>);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let at = self.0.load(Ordering::SeqCst);
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = if (at + i) % 16 == 15 { b'\n' } else { b'x' };
                }
                self.0.fetch_add(buf.len(), Ordering::SeqCst);
                Ok(buf.len())
            }
        }
        let given = Arc::new(AtomicUsize::new(0));
        let first = read_in_background(Endless(given.clone()), 256, 0, |chunks, _| {
            // Keeps the first chunk, and leaves once the reader has read the second and waits.
            let first = chunks.next().map(|c| c.unwrap().bytes.len());
            let started = std::time::Instant::now();
            while given.load(Ordering::SeqCst) < 512 && started.elapsed() < std::time::Duration::from_secs(5) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            first
        });
        assert_eq!(first, Some(256));
        assert_eq!(given.load(Ordering::SeqCst), 512, "the reader read a chunk nobody would take");
    }

    #[test]
    fn lines_from_numbers_across_pieces_as_one_pass_over_the_whole() {
        let text = b"a\n\n  b \nc\n\nd";
        let whole = lines_from(text, 1).0;
        // Chunks end at a newline.
        for cut in [2, 3, 8, 10, 11] {
            let (first, next) = lines_from(&text[..cut], 1);
            let (second, end) = lines_from(&text[cut..], next);
            assert_eq!([first, second].concat(), whole, "cut after byte {cut}");
            assert_eq!(end, 6, "cut after byte {cut}");
        }
        assert_eq!(whole.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 3, 4, 6]);
    }

    #[test]
    fn chunks_shared_among_workers_come_back_in_file_order() {
        // Blank lines too: they count in the numbering but give no line.
        let input: String =
            (1..=50_000).map(|i| if i % 7 == 0 { "\n".into() } else { format!("line {i}\n") }).collect();
        let one_by_one = all(input.as_bytes(), 997);
        for ahead in [1, 2, 5] {
            let got = map_chunks(input.as_bytes(), 997, ahead, |c| {
                assert_eq!(c.first_line, 0, "unnumbered: the consumer numbers the lines");
                // Uneven work, so that the workers finish their chunks out of order.
                if c.bytes.len() % 3 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                let (lines, next) = lines_from(&c.bytes, 1);
                let lines: Vec<_> =
                    lines.into_iter().map(|(n, l)| (n, String::from_utf8(l.to_vec()).unwrap())).collect();
                (lines, next - 1)
            })
            .unwrap();
            assert!(got.len() > 400, "{} chunks", got.len());
            // Numbered within the file: each chunk's numbers plus the lines of the chunks before it.
            let mut before = 0;
            let mut renumbered = Vec::new();
            for (lines, count) in got {
                renumbered.extend(lines.into_iter().map(|(n, l)| (n + before, l)));
                before += count;
            }
            assert_eq!(renumbered, one_by_one, "{ahead} chunks ahead");
        }
    }

    #[test]
    fn a_read_error_reaches_the_caller_of_map_chunks() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk on fire"));
                }
                self.0 -= 1;
                let n = buf.len().min(6);
                buf[..n].copy_from_slice(&b"a row\n"[..n]);
                Ok(n)
            }
        }
        let err = map_chunks(Failing(1_000), 64, 2, |c| c.bytes.len()).unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
    }

    #[test]
    fn a_line_longer_than_a_chunk_stays_whole() {
        let long = "x".repeat(2500);
        let input = format!("a\n{long}\nb\n");
        let got = all(input.as_bytes(), 1000);
        assert_eq!(got, vec![(1, "a".into()), (2, long), (3, "b".into())]);
    }

    #[test]
    fn a_run_of_text_gives_each_line_and_a_run_with_a_bad_byte_gives_none() {
        let c = Chunk { bytes: "  \u{e9}t\u{e9}\n\nna\u{ef}ve \nlast".as_bytes().to_vec(), first_line: 1 };
        let ls = lines(&c);
        let run = TextRun::check(&c.bytes, &ls).unwrap();
        let texts: Vec<&str> = ls.iter().map(|(_, l)| run.line(l).unwrap()).collect();
        assert_eq!(texts, ["\u{e9}t\u{e9}", "na\u{ef}ve", "last"]);
        assert!(run.line(b"not one of its lines").is_none());
        let mut bad = c.bytes.clone();
        bad[2] = 0xff;
        let bad = Chunk { bytes: bad, first_line: 1 };
        assert!(TextRun::check(&bad.bytes, &lines(&bad)).is_none());
    }

    #[test]
    fn a_background_read_gives_every_line_in_order_from_two_buffers_and_stops_early() {
        // Sixteen lines of sixteen bytes a chunk: no bytes carry over, so a buffer given back is
        // read into where it is, and distinct addresses count the buffers made.
        let input: String = (1..=2000).map(|n| format!("line {n:05} ....\n")).collect();
        let (seen, buffers) = read_in_background(input.as_bytes(), 256, input.len() as u64, |chunks, recycle| {
            let (mut seen, mut buffers, mut line) = (Vec::new(), std::collections::HashSet::new(), 1);
            for c in chunks {
                let c = c.unwrap();
                if buffers.len() < 4 {
                    // A slow start, for the reader to run ahead if it could.
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                buffers.insert(c.bytes.as_ptr() as usize);
                assert_eq!(c.first_line, 0, "unnumbered: the consumer numbers the lines");
                let (ls, next) = lines_from(&c.bytes, line);
                seen.extend(ls.into_iter().map(|(n, l)| (n, String::from_utf8(l.to_vec()).unwrap())));
                line = next;
                recycle(c.bytes);
            }
            (seen, buffers.len())
        });
        assert_eq!(seen.len(), 2000);
        assert!(seen
            .iter()
            .enumerate()
            .all(|(i, (n, l))| *n == i as u64 + 1 && *l == format!("line {:05} ....", i + 1)));
        assert!(buffers <= READ_BUFFERS, "{buffers} buffers for one consumer that gives each back");
        // A consumer that stops after one chunk, keeping it, returns rather than waiting on the reader.
        let first = read_in_background(input.as_bytes(), 256, input.len() as u64, |chunks, _| {
            chunks.next().map(|c| c.unwrap().bytes.len())
        });
        assert_eq!(first, Some(256));
    }
}
