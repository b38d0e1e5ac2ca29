//! Running a command with its output (stdout and stderr, merged as a terminal shows them) both
//! passed through and read line by line; a deadline for the parts of the test-host pass.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot make a pipe for '{0}'")]
    Pipe(String, #[source] std::io::Error),
    #[error("cannot start '{0}'")]
    Spawn(String, #[source] std::io::Error),
    #[error("cannot read the output of '{0}'")]
    Read(String, #[source] std::io::Error),
}

/// A command's words, for messages and the tally's list of failed commands.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
}

/// The status as a shell reports it: the exit code, or 128 + the signal.
pub fn code(status: ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(255)
}

/// Runs `cmd` (stdin from /dev/null), copies each output line to this process's stdout and hands
/// it to `each`; returns the shell-style status.
pub fn streamed(mut cmd: Command, mut each: impl FnMut(&str)) -> Result<i32, RunError> {
    let what = describe(&cmd);
    let (reader, writer) = std::io::pipe().map_err(|e| RunError::Pipe(what.clone(), e))?;
    let writer2 = writer.try_clone().map_err(|e| RunError::Pipe(what.clone(), e))?;
    cmd.stdin(Stdio::null()).stdout(writer).stderr(writer2);
    let mut child = cmd.spawn().map_err(|e| RunError::Spawn(what.clone(), e))?;
    // The command holds the pipe's write ends until dropped: without this, no end of file.
    drop(cmd);
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    let mut out = std::io::stdout();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| RunError::Read(what.clone(), e))?;
        if n == 0 {
            break;
        }
        let _ = out.write_all(&buf);
        let _ = out.flush();
        each(&String::from_utf8_lossy(&buf));
    }
    let status = child.wait().map_err(|e| RunError::Read(what.clone(), e))?;
    Ok(code(status))
}

/// `cmd` under a deadline of `secs` seconds (coreutils `timeout`, TERM then KILL 10 s later).
pub fn bounded(secs: u64, cmd: &Command) -> Command {
    let mut b = Command::new("timeout");
    b.args(["-k", "10", &secs.to_string()]).arg(cmd.get_program()).args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        b.current_dir(dir);
    }
    b
}

/// True when `status` is `timeout`'s for a command it had to stop.
pub fn timed_out(status: i32) -> bool {
    status == 124 || status == 137
}

/// What the host was doing when a part overran: its processes, where each one stuck in
/// uninterruptible sleep waits in the kernel, and the kernel's last words.
pub fn show_stuck() {
    let _ = Command::new("sh")
        .args(["-c", "ps -eo pid,ppid,stat,wchan:24,etime,args --sort=start_time | tail -40"])
        .status();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let path = entry.path();
            let Ok(stat) = std::fs::read_to_string(path.join("stat")) else { continue };
            // The state follows the command's closing parenthesis.
            let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').next());
            if state == Some("D") {
                let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                println!("D-state {}: {cmdline}", entry.file_name().to_string_lossy());
                println!("{}", std::fs::read_to_string(path.join("stack")).unwrap_or_default());
            }
        }
    }
    let _ = Command::new("sh").args(["-c", "dmesg | tail -30"]).status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_of_both_streams_reaches_the_reader_and_the_status_is_kept() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo two >&2; printf three; exit 3"]);
        let mut lines = Vec::new();
        let status = streamed(cmd, |l| lines.push(l.to_string())).unwrap();
        assert_eq!(status, 3);
        assert_eq!(lines, ["one\n", "two\n", "three"]);
    }

    #[test]
    fn a_signal_is_reported_as_128_plus_it() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "kill -TERM $$"]);
        assert_eq!(streamed(cmd, |_| {}).unwrap(), 128 + 15);
    }

    #[test]
    fn a_bounded_command_that_overruns_is_stopped() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let status = streamed(bounded(1, &cmd), |_| {}).unwrap();
        assert!(timed_out(status), "status {status}");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let err = streamed(Command::new("/nonexistent/cvbench-xtask-test"), |_| {}).unwrap_err();
        assert!(matches!(err, RunError::Spawn(..)));
    }
}
