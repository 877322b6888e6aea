//! The operations, one file each: what the engine runs, one at a time (see
//! [`super::operation`]).

pub mod disable;
pub mod enable;
pub mod pause;
pub mod renew_certs;
pub mod reset;
pub mod rotate_ca;

pub use disable::Disable;
pub use enable::Enable;
pub use pause::{Pause, Resume};
pub use renew_certs::RenewCerts;
pub use reset::Reset;
pub use rotate_ca::RotateCa;
