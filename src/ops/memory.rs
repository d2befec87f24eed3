//! Memory that only startup needed, given back once `serve` listens.
//!
//! An idle server's resident memory is mostly not heap: it is the binary's
//! own code and read-only data, mapped from the file page by page as
//! startup runs (config, migrations, router and OpenAPI building, crash
//! recovery …), each fault mapping the 64 KiB block around the page it
//! needs. Those pages stay mapped although the server never runs that code
//! again. Unmapping them (`MADV_DONTNEED`) changes nothing a request can
//! see: they are clean copies of the file, which stays in the page cache,
//! and whatever runs later maps its pages again (a minor fault, no disk
//! read). It is what the kernel does to them anyway under memory pressure.
//! Startup's freed heap goes back to the system the same way (glibc keeps
//! it otherwise).

/// Best effort: on failure the server just keeps those pages.
pub fn release_startup_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: only returns free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = unmap_clean_image() {
        tracing::debug!(error = %e, "could not release the binary's startup pages");
    }
}

#[cfg(target_os = "linux")]
fn unmap_clean_image() -> std::io::Result<()> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    for (start, end) in clean_image_ranges(&smaps, &exe.to_string_lossy()) {
        // SAFETY: the range is a read-only private mapping of the binary
        // holding no page of its own (see clean_image_ranges): dropping its
        // pages only makes the next access read them from the file again.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The mappings of `exe` whose pages are all the file's own: not writable
/// and no anonymous (copied-on-write) page. The RELRO part, relocated at
/// load and made read-only after, holds anonymous pages and is left alone:
/// dropping those would bring back unrelocated pointers.
fn clean_image_ranges(smaps: &str, exe: &str) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(mapping) = parse_header(line) {
            current = mapping
                .filter(|m| m.readable && !m.writable && m.path == exe)
                .map(|m| (m.start, m.end));
        } else if let Some(kib) = line.strip_prefix("Anonymous:") {
            if let Some(range) = current.take() {
                if kib.trim() == "0 kB" {
                    ranges.push(range);
                }
            }
        }
    }
    ranges
}

struct Mapping<'a> {
    start: usize,
    end: usize,
    readable: bool,
    writable: bool,
    path: &'a str,
}

/// `Some(None)`: a mapping's header line that is not parsed further;
/// `None`: not a header (one of the mapping's `Key: value` lines).
fn parse_header(line: &str) -> Option<Option<Mapping<'_>>> {
    let (range, rest) = line.split_once(' ')?;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    // perms offset dev inode [path]; the path may contain spaces
    let mut fields = rest.splitn(5, ' ');
    let perms = fields.next().unwrap_or("");
    let path = fields.nth(3).unwrap_or("").trim_start();
    Some(Some(Mapping {
        start,
        end,
        readable: perms.starts_with('r'),
        writable: perms.as_bytes().get(1) == Some(&b'w'),
        path,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5581e0000000-5581e054c000 r--p 00000000 fe:01 123 /opt/mvp28/bin/mvp28
Size:               5424 kB
Rss:                2752 kB
Anonymous:             0 kB
5581e054c000-5581e16fa000 r-xp 0054b000 fe:01 123 /opt/mvp28/bin/mvp28
Size:              18104 kB
Anonymous:             0 kB
5581e16fa000-5581e179d000 r--p 016f8000 fe:01 123 /opt/mvp28/bin/mvp28
Size:                652 kB
Anonymous:           652 kB
5581e179d000-5581e17a5000 rw-p 0179a000 fe:01 123 /opt/mvp28/bin/mvp28
Anonymous:            32 kB
5581e2000000-5581e2300000 rw-p 00000000 00:00 0 [heap]
Anonymous:          3236 kB
7f0000000000-7f0000100000 r-xp 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000201000 ---p 00000000 fe:01 123 /opt/mvp28/bin/mvp28
Anonymous:             0 kB
";

    #[test]
    fn only_the_binarys_clean_read_only_mappings() {
        assert_eq!(
            clean_image_ranges(SMAPS, "/opt/mvp28/bin/mvp28"),
            vec![
                (0x5581e0000000, 0x5581e054c000),
                (0x5581e054c000, 0x5581e16fa000)
            ]
        );
    }

    #[test]
    fn a_path_with_spaces_is_compared_whole() {
        let smaps = "1000-2000 r-xp 00000000 fe:01 1 /opt/my app/mvp28\nAnonymous: 0 kB\n";
        assert_eq!(
            clean_image_ranges(smaps, "/opt/my app/mvp28"),
            vec![(0x1000, 0x2000)]
        );
        assert!(clean_image_ranges(smaps, "/opt/my").is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn releasing_keeps_the_process_working() {
        release_startup_memory();
        // code and read-only data come back from the file
        let v: Vec<String> = (0..1000).map(|i| format!("{i:x}")).collect();
        assert_eq!(v[255], "ff");
    }
}
