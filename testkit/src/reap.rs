//! A child process owned by a test: killed and waited for when dropped, so a failing
//! assertion leaves no process behind.

use std::ops::{Deref, DerefMut};
use std::process::Child;

/// A test's child, reaped on drop; [`Reap::into_inner`] hands it back for a normal wait.
pub struct Reap(Option<Child>);

impl Reap {
    pub fn new(child: Child) -> Reap {
        Reap(Some(child))
    }

    /// The child, no longer killed on drop (the caller waits for it).
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("a Reap holds its child until into_inner")
    }
}

impl Deref for Reap {
    type Target = Child;

    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a Reap holds its child until into_inner")
    }
}

impl DerefMut for Reap {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a Reap holds its child until into_inner")
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
