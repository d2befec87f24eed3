//! The operator's side: the command line, `serve` (start, recover, listen,
//! stop), the admin commands that act on a live deployment, backups, and
//! log output.

pub mod admin;
pub mod backup;
pub mod cli;
pub mod cluster;
pub mod doctor;
pub mod lock;
pub mod logging;
pub mod memory;
pub mod migrate_data;
pub mod serve;
pub mod systemd;
