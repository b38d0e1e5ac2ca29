//! `start`: release a created child and follow its progress records until it exec's,
//! turning the child's named marks into phase timings.

use super::{Container, Gate};
use crate::process::channel::{self, now_ns, Record};
use crate::process::{self as proc};
use crate::state::Status;
use crate::Error;
use std::io::Write;

/// When the child reached each of its marks (host monotonic ns), by name.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PhaseMarks {
    /// The child started running `init`.
    start: Option<u64>,
    /// Its rootfs is set up.
    rootfs_done: Option<u64>,
    /// It got the parent's go.
    go: Option<u64>,
    /// It is about to exec.
    exec: Option<u64>,
}

impl PhaseMarks {
    fn record(&mut self, code: u32, t_ns: u64) {
        let slot = match code {
            channel::MARK_START => &mut self.start,
            channel::MARK_ROOTFS_DONE => &mut self.rootfs_done,
            channel::MARK_GO => &mut self.go,
            channel::MARK_EXEC => &mut self.exec,
            _ => return,
        };
        *slot = Some(t_ns);
    }

    /// (phase, ns) between consecutive marks, the last one ending when exec was seen.
    fn phases(&self, exec_seen: u64) -> Vec<(String, u64)> {
        let pairs = [
            ("child_setup", self.start, self.rootfs_done),
            ("wait_parent", self.rootfs_done, self.go),
            ("exec_setup", self.go, self.exec),
            ("exec", self.exec, Some(exec_seen)),
        ];
        pairs.into_iter().filter_map(|(name, a, b)| Some((name.to_string(), b?.saturating_sub(a?)))).collect()
    }
}

impl Container {
    /// Let a container made with [`Gate::Ready`] exec its process; returns once it exec'd.
    /// A container made with [`Gate::Immediate`] is already released: this only waits for
    /// its exec.
    pub fn start(&mut self) -> Result<(), Error> {
        match (self.gate, self.state.status) {
            (Gate::Immediate, Status::Running) => {}
            (Gate::Ready, s) if s.can_start() => {
                self.send(channel::MSG_GO)?;
                self.state.status = Status::Running;
            }
            (_, s) => return Err(Error::BadStatus { id: self.state.id.clone(), verb: "start", status: s }),
        }
        self.read_until(None)
    }

    pub(super) fn send(&mut self, byte: u8) -> Result<(), Error> {
        let pid = self.state.pid;
        if let Some(w) = self.go_wr.as_mut() {
            w.write_all(&[byte]).map_err(|source| proc::Error::Talk { pid, source })?;
        }
        Ok(())
    }

    /// Read child records until `want` arrives (None: until EOF, i.e. exec).
    pub(super) fn read_until(&mut self, want: Option<u32>) -> Result<(), Error> {
        let pid = self.state.pid;
        let Some(rd) = self.status_rd.as_mut() else {
            return Ok(());
        };
        loop {
            let rec = channel::read_record(rd).map_err(|source| proc::Error::Talk { pid, source })?;
            match rec {
                None => {
                    self.status_rd = None;
                    if want.is_some() {
                        return Err(proc::Error::ChildVanished(pid).into());
                    }
                    let phases = self.marks.phases(now_ns());
                    self.phases.extend(phases);
                    return Ok(());
                }
                Some(Record { kind: channel::KIND_ERROR, code, errno, .. }) => {
                    let step = self.plan.as_ref().map_or(format!("step {code}"), |p| p.step_name(code));
                    return Err(
                        proc::Error::ChildStep { step, source: std::io::Error::from_raw_os_error(errno) }.into()
                    );
                }
                Some(r) => {
                    self.marks.record(r.code, r.t_ns);
                    if Some(r.code) == want {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_become_named_phases_in_order() {
        let mut m = PhaseMarks::default();
        m.record(channel::MARK_START, 100);
        m.record(channel::MARK_ROOTFS_DONE, 150);
        m.record(channel::MARK_GO, 170);
        m.record(channel::MARK_EXEC, 200);
        let p = m.phases(260);
        let want: Vec<(String, u64)> = [("child_setup", 50), ("wait_parent", 20), ("exec_setup", 30), ("exec", 60)]
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect();
        assert_eq!(p, want);
    }

    #[test]
    fn a_missing_mark_drops_only_its_phases() {
        let mut m = PhaseMarks::default();
        m.record(channel::MARK_START, 100);
        m.record(channel::MARK_GO, 170);
        m.record(99, 1);
        let names: Vec<String> = m.phases(200).into_iter().map(|(n, _)| n).collect();
        assert!(names.is_empty(), "{names:?}");
    }
}
