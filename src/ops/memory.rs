//! Heap that only startup needed, given back once `serve` listens.
//!
//! Startup (config, migrations, router and OpenAPI building, crash
//! recovery) allocates and frees a few MiB; glibc keeps freed memory in its
//! arenas unless asked to return it, so an idle server would hold it for
//! its whole life.
//!
//! Deliberately not done: unmapping the binary's clean code pages that
//! startup touched (`MADV_DONTNEED`). That lowers VmRSS by ~6 MiB but not
//! the memory the machine uses (the pages stay in the page cache, and
//! cgroups charge them all the same), and the first requests map them
//! again: a smaller number, not a leaner server.

/// Best effort: on other platforms the server just keeps that memory.
pub fn release_startup_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: only returns free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
