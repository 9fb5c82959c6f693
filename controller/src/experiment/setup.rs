//! Set-up commands: `sh -c COMMAND` on the controller's machine, with a
//! timeout, its output (stdout and stderr, in order) kept in a file of the
//! experiment directory. A command that starts a server in the background
//! must send that server's output elsewhere: its output is read until every
//! process holding it has closed it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// Why a set-up failed, and the end of what it printed.
#[derive(Debug)]
pub struct SetupFailure {
    /// "exit status 3", "timed out after 5m", "interrupted", "cannot start: …".
    pub how: String,
    /// Its last 40 lines.
    pub output_tail: String,
}

/// Runs `command`; its output goes to `log` (written whatever happens).
pub async fn run(
    command: &str,
    timeout: Duration,
    log: &Path,
    interrupt: &CancellationToken,
) -> Result<(), SetupFailure> {
    let mut child = match tokio::process::Command::new("sh")
        .arg("-c")
        // Stderr joins stdout, so the log keeps their order.
        .arg(format!("exec 2>&1\n{command}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Err(SetupFailure {
                how: format!("cannot start sh: {e}"),
                output_tail: String::new(),
            });
        }
    };
    let mut stdout = child.stdout.take().expect("piped");
    let mut output = Vec::new();
    let pgid = child.id();
    let outcome = tokio::select! {
        r = async {
            // At most 1 MiB is kept; the rest is read and dropped.
            let mut buf = [0u8; 8192];
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if output.len() < 1 << 20 {
                            output.extend_from_slice(&buf[..n]);
                        }
                    }
                }
            }
            child.wait().await
        } => match r {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(match status.code() {
                Some(code) => format!("exit status {code}"),
                None => format!("ended by a signal ({status})"),
            }),
            Err(e) => Err(format!("cannot wait for it: {e}")),
        },
        _ = tokio::time::sleep(timeout) => Err(format!(
            "timed out after {}",
            crate::duration::format_duration(timeout)
        )),
        _ = interrupt.cancelled() => Err("interrupted".into()),
    };
    if outcome.is_err()
        && let Some(pgid) = pgid
    {
        // The whole group: a shell's children too.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
    }
    let text = String::from_utf8_lossy(&output).into_owned();
    let _ = crate::atomic::write(log, &text);
    outcome.map_err(|how| {
        let lines: Vec<&str> = text.lines().collect();
        SetupFailure {
            how,
            output_tail: lines[lines.len().saturating_sub(40)..].join("\n"),
        }
    })
}
