//! Runs the host programs this module relies on, each under a deadline, and
//! turns a failure into an error that quotes the command and what it said.

use std::ffi::OsStr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::RuntimeError;

/// A command that ran to its end, successful or not.
pub(crate) struct Finished {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The standard output of a successful run; otherwise an error with what
    /// the program printed.
    pub fn success(self) -> Result<String, RuntimeError> {
        if self.status.success() {
            Ok(self.stdout)
        } else {
            Err(RuntimeError::Command {
                output: self.output_summary(),
                command: self.command,
            })
        }
    }

    /// What the program said, for an error message: its error stream, else
    /// its output, else its exit status.
    pub fn output_summary(&self) -> String {
        let said = if self.stderr.trim().is_empty() {
            self.stdout.trim()
        } else {
            self.stderr.trim()
        };
        if said.is_empty() {
            self.status.to_string()
        } else {
            said.to_string()
        }
    }
}

/// Runs `program args...`, feeding `stdin` when given, and waits at most
/// `limit`. The child is killed when the deadline passes.
pub(crate) async fn run<I, S>(
    program: &str,
    args: I,
    stdin: Option<&[u8]>,
    limit: Duration,
) -> Result<Finished, RuntimeError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let input = stdin.map(|bytes| {
        futures::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::copy_from_slice(
            bytes,
        ))])
    });
    run_fed(program, args, input, limit).await
}

/// [`run`] with its input streamed: each chunk is written as it comes (an
/// image read out of Docker, for instance), never held whole. A chunk that
/// is an error ends the input and is reported, unless the program failed,
/// whose own words then say more.
pub(crate) async fn run_streamed<I, S, B, E>(
    program: &str,
    args: I,
    input: B,
    limit: Duration,
) -> Result<Finished, RuntimeError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
    B: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    run_fed(program, args, Some(input), limit).await
}

async fn run_fed<I, S, B, E>(
    program: &str,
    args: I,
    input: Option<B>,
    limit: Duration,
) -> Result<Finished, RuntimeError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
    B: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let args: Vec<_> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let command = std::iter::once(program.to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new(program);
    cmd.args(&args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
        program: program.to_string(),
        source,
    })?;
    let pipe = child.stdin.take();
    // Input is written while output is read: a program that answers before it
    // has read everything must not block on a full pipe.
    let feed = async move {
        if let (Some(mut pipe), Some(input)) = (pipe, input) {
            let mut input = std::pin::pin!(input);
            while let Some(chunk) = input.next().await {
                let chunk = chunk.map_err(|e| format!("reading the input: {e}"))?;
                pipe.write_all(&chunk).await.map_err(|e| e.to_string())?;
            }
            // Closing the pipe tells the program its input is complete.
            pipe.shutdown().await.map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(())
    };
    let both = async { tokio::join!(feed, child.wait_with_output()) };
    let (fed, output) = match tokio::time::timeout(limit, both).await {
        Ok(results) => results,
        Err(_) => {
            return Err(RuntimeError::CommandTimeout {
                command,
                after: limit,
            });
        }
    };
    let output = output.map_err(|source| RuntimeError::Command {
        command: command.clone(),
        output: source.to_string(),
    })?;
    // A program that exits without reading all its input breaks the pipe;
    // its exit status and error stream then say more than EPIPE would.
    if output.status.success() {
        fed.map_err(|output| RuntimeError::Command {
            command: command.clone(),
            output,
        })?;
    }
    Ok(Finished {
        command,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
