//! Batch jobs: POST /api/files/batch starts one over some of the user's
//! media, GET /api/jobs/{id} reports it. Jobs live in SQLite, so one
//! interrupted by a stop or crash resumes at the next start (its items
//! still pending or running are run again). At most `CONCURRENCY` items
//! run at once across all jobs, so a big batch cannot starve chat of
//! upstream capacity.

mod fair;
pub mod handlers;
pub mod service;
pub mod views;
