//! The thread pair: [`run_team`] runs one closure on 1 or 2 threads that meet at a barrier
//! where their work depends on each other's; the second thread is the process's kept helper
//! ([`helper`]); [`Shared`] lets the threads write disjoint parts of one buffer.

mod helper;
mod shared;
mod team;

pub use helper::side_by_side;
pub(crate) use shared::Shared;
pub(crate) use team::{run_team, split};
