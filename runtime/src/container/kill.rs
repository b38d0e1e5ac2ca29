//! `kill`: signal the container's first process through its pidfd (no pid reuse race).

use super::Container;
use crate::process::{self as proc};
use crate::Error;
use std::os::fd::AsFd;

impl Container {
    /// Send a signal to the container's first process. A stopped container is left alone:
    /// there is nothing to signal.
    pub fn kill(&self, sig: i32) -> Result<(), Error> {
        if !self.state.status.can_kill() {
            return Ok(());
        }
        self.signal(sig)
    }

    /// Signal the child whatever the status says (delete uses it on a half-made container).
    pub(super) fn signal(&self, sig: i32) -> Result<(), Error> {
        let Some(ch) = &self.child else {
            return Ok(());
        };
        if self.exit.is_some() {
            return Ok(());
        }
        proc::kill::send(ch.pidfd.as_fd(), self.state.pid, sig)?;
        Ok(())
    }
}
